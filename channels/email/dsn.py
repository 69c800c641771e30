"""Delivery status notifications (RFC 3464): which of our messages bounced, for whom, and why.

A DSN arrives as ordinary mail from MAILER-DAEMON. What links it to the
outbound message it reports on is the Message-ID of the returned original
(in the message/rfc822 or text/rfc822-headers part); the per-recipient
blocks say which addresses failed, with the remote server's own words. The DSN is stored
like any mail, and carries a `DeliveryReport` effect that the ingest applies to the reported
message in the DSN's own transaction (`report_effect`).
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser
from email.policy import compat32
from typing import Any

from channels.email.headers import decode_value, header_text, message_ids
from umsg import model


@dataclass(frozen=True)
class RecipientStatus:
    address: str
    action: str  # failed | delayed | delivered | relayed | expanded
    status: str  # the RFC 3463 code, e.g. 5.1.1
    diagnostic: str


@dataclass(frozen=True)
class DeliveryReport:
    original_message_id: str | None  # with angle brackets
    recipients: tuple[RecipientStatus, ...]

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(r.address for r in self.recipients if r.action == "failed")

    def as_meta(self) -> dict[str, Any]:
        return {
            "original_message_id": self.original_message_id,
            "failed": list(self.failed),
            "recipients": [r.__dict__ for r in self.recipients],
        }


def report_effect(dsn: dict[str, Any]) -> model.DeliveryReport | None:
    """The core's effect for a DSN's meta (`DeliveryReport.as_meta`, plus our id when the
    returned Message-ID was ours): failed recipients, else a confirmed delivery; None when the
    report says neither (delayed, relayed)."""
    recipients = dsn.get("recipients") or []
    failed = tuple(str(a) for a in dsn.get("failed") or [])
    outbound = dsn.get("outbound_message_id")
    ours = int(outbound) if outbound is not None else None
    theirs = dsn.get("original_message_id")
    if failed:
        lowered = {a.lower() for a in failed}
        words = "; ".join(f"{r.get('address')}: {r.get('status')} {r.get('diagnostic') or ''}".strip()
                          for r in recipients if str(r.get("address", "")).lower() in lowered)
        return model.DeliveryReport(status="failed", message_id=ours, provider_id=theirs, failed=failed,
                                    detail=f"bounced: {words}")
    if recipients and all(r.get("action") == "delivered" for r in recipients):
        return model.DeliveryReport(status="delivered", message_id=ours, provider_id=theirs,
                                    detail="delivered (DSN)")
    return None


def _field(block: Message, name: str) -> str:
    value = block.get(name)
    return decode_value(str(value)) if value is not None else ""


def _typed_address(value: str) -> str:
    # "rfc822; user@example.com" -> "user@example.com"
    return value.split(";", 1)[-1].strip().strip("<>")


def _diagnostic(value: str) -> str:
    # "smtp; 550 5.1.1 unknown user" -> "550 5.1.1 unknown user", whitespace flattened
    text = value.split(";", 1)[1] if ";" in value else value
    return " ".join(text.split())


def _status_blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    raw = part.get_payload(decode=True)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
    # Blocks are header sections separated by blank lines.
    blocks = [b for b in text.replace("\r\n", "\n").split("\n\n") if b.strip()]
    return [HeaderParser(policy=compat32).parsestr(b + "\n") for b in blocks]


def _original_id(part: Message) -> str | None:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        inner: Message = payload[0]
    else:
        raw = part.get_payload(decode=True)
        if not isinstance(raw, bytes):
            return None
        inner = BytesHeaderParser(policy=compat32).parsebytes(raw)
    ids = message_ids(header_text(inner, "Message-ID"))
    return f"<{ids[0]}>" if ids else None


def parse_report(msg: Message) -> DeliveryReport | None:
    """The delivery report in `msg`, or None when it is not a delivery-status report."""
    if msg.get_content_type() != "multipart/report":
        return None
    recipients: list[RecipientStatus] = []
    original: str | None = None
    found = False
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("message/delivery-status", "message/global-delivery-status"):
            found = True
            blocks = _status_blocks(part)
            per_message = blocks[0] if blocks else None
            if per_message is not None and original is None:
                ids = message_ids(_field(per_message, "Original-Envelope-Id"))
                original = f"<{ids[0]}>" if ids and "@" in ids[0] else None
            for block in blocks[1:]:
                addr = _typed_address(_field(block, "Final-Recipient") or _field(block, "Original-Recipient"))
                if not addr:
                    continue
                recipients.append(RecipientStatus(
                    address=addr,
                    action=_field(block, "Action").lower() or "failed",
                    status=_field(block, "Status"),
                    diagnostic=_diagnostic(_field(block, "Diagnostic-Code")),
                ))
        elif ctype in ("message/rfc822", "text/rfc822-headers", "message/global", "message/global-headers"):
            original = _original_id(part) or original
    if not found:
        return None
    return DeliveryReport(original, tuple(recipients))

"""One RFC 5322 message (bytes) into `umsg.model.Inbound`.

Parsing is stdlib `email` with `policy.default`; header values and body text
go through our own charset handling (`charset.py`, `headers.py`) because the
stdlib's silently loses characters of mislabelled Chinese and Korean mail.
The raw bytes are always the message's first part; bodies become `text`
and sanitised `html`; every other leaf becomes a part (inline when the HTML
shows it by `cid:`); TNEF containers are unpacked; delivery reports and
automatic mail are described in `meta`. Only a message that can never be
stored (empty, no sender address anywhere, MIME nested deeper than
`MAX_MIME_DEPTH`) raises `PermanentError`.

Work per message is bounded by its structure, not only its size: the stdlib
parser checks every line against every open boundary and recurses per level
(1,000 nested multiparts take seconds, then overflow the stack), so nesting
is measured by a linear scan before parsing; HTML is bounded before it is
sanitised (`sanitize.py`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email import errors, policy
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from typing import Any

from channels.email.autoreply import automatic_reason
from channels.email.charset import decode_text
from channels.email.dsn import parse_report, report_effect
from channels.email.headers import Mailbox, addresses, first_address, header_text, message_ids, sender_warning
from channels.email.sanitize import sanitize
from channels.email.thread_hints import build_hints, parse_own_id
from channels.email.tnef import TnefError, read_tnef
from umsg.errors import PermanentError
from umsg.model import Address, Effect, IdentityKind, Inbound, InboundPart

RAW_MEDIA_TYPE = "message/rfc822"
# Real mail nests a few levels (a forward of a forward of a signed message: under ten).
MAX_MIME_DEPTH = 64
_TNEF_TYPES = ("application/ms-tnef", "application/vnd.ms-tnef")


@dataclass(frozen=True)
class Envelope:
    """What SMTP (or the IMAP mailbox) knew beyond the headers."""

    mail_from: str | None = None
    rcpt_tos: tuple[str, ...] = ()


@dataclass
class _Bodies:
    text: list[str]
    html: list[str]
    parts: list[InboundPart]
    guessed: list[str]


# Headers that relays and mailbox servers add on the way; everything else is the author's.
_TRACE_HEADERS = frozenset({
    "received", "return-path", "delivered-to", "x-original-to", "received-spf", "authentication-results",
    "arc-seal", "arc-message-signature", "arc-authentication-results", "x-received", "status", "x-status",
    "x-uid", "x-keywords", "content-length", "lines",
})


def _dedupe_key(msg_id: str | None, raw: bytes, msg: Message) -> str:
    # The author's headers and the body (line endings normalised) identify one message whichever
    # way it came (SMTP retry, IMAP, import), while a sender reusing a Message-ID for different
    # mail still gets every message stored.
    sep = raw.find(b"\r\n\r\n")
    sep = raw.find(b"\n\n") if sep < 0 else sep
    body = raw[sep:].lstrip(b"\r\n") if sep >= 0 else raw
    digest = hashlib.sha256(body.replace(b"\r\n", b"\n"))
    for name, value in msg.raw_items():
        if name.lower() not in _TRACE_HEADERS:
            line = f"{name.lower()}:{' '.join(str(value).split())}"
            digest.update(b"\0" + line.encode("utf-8", "surrogateescape"))
    if not msg_id:
        return "sha256:" + digest.hexdigest()
    return f"{msg_id[:400]}#{digest.hexdigest()[:16]}"


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:  # noqa: BLE001 - a malformed parameter leaves the part unnamed, not lost
        return None
    return str(name).strip() or None if name else None


def _leaf_bytes(part: Message) -> bytes:
    if part.get_content_maintype() == "message":
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            try:
                return inner[0].as_bytes(policy=policy.compat32.clone(linesep="\r\n"))
            except Exception:  # noqa: BLE001 - fall back to whatever bytes the part holds
                pass
    data = part.get_payload(decode=True)
    if isinstance(data, bytes):
        return data
    payload = part.get_payload()
    return payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""


def _charset(part: Message) -> str | None:
    try:
        return part.get_content_charset()
    except Exception:  # noqa: BLE001
        return None


def _add_tnef(data: bytes, bodies: _Bodies) -> None:
    try:
        tnef = read_tnef(data)
    except TnefError:
        return
    for att in tnef.attachments:
        bodies.parts.append(InboundPart(att.media_type or "application/octet-stream", att.data, att.filename,
                                        att.content_id))
    # Outlook's MIME body, when there is one, is the same message: the container fills only what is missing.
    if tnef.text and not bodies.text:
        bodies.text.append(tnef.text)
    if tnef.html and not bodies.html:
        bodies.html.append(tnef.html)  # sanitised with the others in to_inbound
    bodies.guessed.extend(tnef.guessed)


def _collect(msg: Message) -> _Bodies:
    bodies = _Bodies([], [], [], [])
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        disposition = (part.get_content_disposition() or "").lower()
        filename = _filename(part)
        is_body = disposition != "attachment" and filename is None and ctype in ("text/plain", "text/html")
        if is_body:
            raw = part.get_payload(decode=True)
            data = raw if isinstance(raw, bytes) else b""
            decoded = decode_text(data, _charset(part))
            if decoded.guessed:
                bodies.guessed.append(f"{ctype} declared {_charset(part)!r}, read as {decoded.charset}")
            (bodies.text if ctype == "text/plain" else bodies.html).append(decoded.text)
            continue
        data = _leaf_bytes(part)
        if ctype in _TNEF_TYPES:
            # The container is kept as well: a damaged stream may have been read only in part.
            _add_tnef(data, bodies)
        cid = str(part.get("Content-ID", "") or "").strip().strip("<>") or None
        role = "inline" if disposition == "inline" or (cid and disposition != "attachment") else "attachment"
        bodies.parts.append(InboundPart(ctype, data, filename, cid, role))
    return bodies


def _effects(meta: dict[str, Any]) -> tuple[Effect, ...]:
    report = report_effect(meta["delivery_report"]) if meta.get("delivery_report") else None
    return (report,) if report is not None else ()


def _sent_at(msg: Message) -> datetime | None:
    value = header_text(msg, "Date")
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


_HEADER_LINE = re.compile(rb"^([!-9;-~]+)[ \t]*:")


def _repair_headers(raw: bytes) -> bytes | None:
    """The message with a damaged header block mended, or None when nothing could be mended.

    The stdlib stops reading headers at the first line that is not `Name:` (a
    stray word before a header, `From  :` with spaces) and takes the rest as
    body, losing From and Subject. Junk lines are dropped and spaced names
    closed up; the stored raw message keeps the original.
    """
    lines = raw.splitlines(keepends=True)
    out: list[bytes] = []
    changed = False
    for i, line in enumerate(lines):
        if not line.strip():
            return b"".join(out + lines[i:]) if changed else None
        if line[:1] in (b" ", b"\t") and out:
            out.append(line)
            continue
        m = _HEADER_LINE.match(line)
        if m is None:
            changed = True  # a junk line inside the header block
            continue
        if line[m.end(1) : m.end(1) + 1] != b":":
            line = m.group(1) + b":" + line[m.end() :]
            changed = True
        out.append(line)
    return None


class _ParsedOnce(HeaderRegistry):
    """policy.default's header classes, with each distinct header parsed once per message.

    policy.default parses a header anew on every access, and the parser itself
    and every `get_content_type()`, `get_filename()` or `get_param()` read
    Content-Type and Content-Disposition again: about sixteen full parses of
    the same value per message, most of the parsing time. Header objects are
    immutable, so handing out the first one again changes nothing but the cost.
    One registry per message keeps the memo small and unshared.
    """

    def __init__(self) -> None:
        super().__init__()
        self._memo: dict[tuple[str, str], BaseHeader] = {}

    def __call__(self, name: str, value: str) -> BaseHeader:
        key = (name.lower(), value)
        header = self._memo.get(key)
        if header is None:
            header = self._memo[key] = super().__call__(name, value)
        return header


def _parser() -> BytesParser:
    return BytesParser(policy=policy.default.clone(header_factory=_ParsedOnce()))


_BOUNDARY = re.compile(rb"""boundary[ \t]*=[ \t]*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))""", re.I)
_DELIMITER = re.compile(rb"^--([^\r\n]{1,200}?)(--)?[ \t]*\r?$", re.M)


def mime_depth(raw: bytes) -> int:
    """How deeply the multiparts of `raw` nest, from its boundaries alone (one linear scan).

    Each declared boundary opens a level; a delimiter line of an open boundary
    closes the levels opened inside it (`--b--` closes b too). A boundary named
    only in body text counts as well: the estimate errs high, never low.
    """
    events = sorted([(m.start(), 0, m.group(1) or m.group(2)) for m in _BOUNDARY.finditer(raw)]
                    + [(m.start(), 1, m.group(1) + (m.group(2) or b"")) for m in _DELIMITER.finditer(raw)])
    stack: list[bytes] = []
    where: dict[bytes, int] = {}
    deepest = 0
    for _, kind, value in events:
        if kind == 0:
            if value not in where:
                where[value] = len(stack)
                stack.append(value)
                deepest = max(deepest, len(stack))
            continue
        closing = value.endswith(b"--") and value[:-2] in where
        name = value[:-2] if closing else value
        level = where.get(name)
        if level is None:
            continue
        keep = level if closing else level + 1
        for gone in stack[keep:]:
            del where[gone]
        del stack[keep:]
    return deepest


def parse_bytes(raw: bytes) -> EmailMessage:
    msg = _parser().parsebytes(raw)
    if any(isinstance(d, errors.MissingHeaderBodySeparatorDefect) for d in msg.defects):
        mended = _repair_headers(raw)
        if mended is not None:
            msg = _parser().parsebytes(mended)
    assert isinstance(msg, EmailMessage)
    return msg


def to_inbound(
    raw: bytes,
    *,
    channel: str,
    project: str = "default",
    own_domain: str | None = None,
    envelope: Envelope = Envelope(),
) -> Inbound:
    """Parse `raw` into the normalised message; PermanentError names why it can never be stored."""
    if not raw.strip():
        raise PermanentError("empty message")
    depth = mime_depth(raw)
    if depth > MAX_MIME_DEPTH:
        raise PermanentError(f"MIME parts nested {depth} levels deep; the limit is {MAX_MIME_DEPTH}")
    try:
        return _to_inbound(raw, channel=channel, project=project, own_domain=own_domain, envelope=envelope)
    except RecursionError:
        # Structure the scan above did not see (nested message/rfc822 parts): the same on every retry.
        raise PermanentError("message structure nested too deeply to read") from None


def _to_inbound(raw: bytes, *, channel: str, project: str, own_domain: str | None, envelope: Envelope) -> Inbound:
    msg = parse_bytes(raw)
    sender = first_address(msg, "From") or first_address(msg, "Sender") or first_address(msg, "Reply-To")
    if sender is None and envelope.mail_from and "@" in envelope.mail_from:
        sender = Mailbox("", envelope.mail_from)
    if sender is None:
        raise PermanentError("no sender address (no usable From, Sender or envelope sender)")
    recipients = tuple(envelope.rcpt_tos) or tuple(a for _, a in addresses(msg, "To", "Cc"))
    subject = header_text(msg, "Subject")
    ids = message_ids(header_text(msg, "Message-ID"))
    msg_id = f"<{ids[0]}>" if ids else None
    bodies = _collect(msg)
    meta: dict[str, Any] = {}
    html: str | None = None
    if bodies.html:
        cids = frozenset(p.content_id for p in bodies.parts if p.content_id)
        safe = sanitize("\n".join(bodies.html), cids)
        html = safe.html
        if safe.flattened or safe.truncated:
            # The inbox says the view is partial; the stored raw message has it all.
            meta["html_bounded"] = {"flattened_tags": safe.flattened, "truncated_chars": safe.truncated}
        if safe.remote_images:
            meta["remote_images"] = list(safe.remote_images)
        shown = set(safe.inline_refs)
        bodies.parts = [
            InboundPart(p.media_type, p.data, p.filename, p.content_id,
                        "inline" if p.content_id in shown else p.role)
            for p in bodies.parts
        ]
    if bodies.guessed:
        meta["charset_guessed"] = bodies.guessed
    # Addresses were split before decoding; a display name still showing another address is
    # a forgery attempt (or a confusing client) the agent must see.
    warning = sender_warning(msg, sender)
    if warning is not None:
        meta["sender_warning"] = warning
    reason = automatic_reason(msg, own_domain, sender.address)
    if reason:
        meta["auto_submitted"] = True
        meta["auto_submitted_reason"] = reason
    report = parse_report(msg)
    if report is not None:
        dsn = report.as_meta()
        own = parse_own_id(report.original_message_id, own_domain) if (
            report.original_message_id and own_domain) else None
        if own is not None:
            dsn["outbound_message_id"] = own[0]
        meta["delivery_report"] = dsn
    hints = build_hints(
        message_id=msg_id,
        in_reply_to=message_ids(header_text(msg, "In-Reply-To")),
        references=message_ids(header_text(msg, "References")),
        recipients=recipients,
        subject=subject,
        own_domain=own_domain,
        # A bounce belongs with the message it returns.
        reported=report.original_message_id if report is not None else None,
    )
    return Inbound(
        channel=channel,
        # A name showing another address would name the contact after the one impersonated.
        sender=Address(IdentityKind.EMAIL, sender.address, None if warning or not sender.name else sender.name),
        recipients=recipients,
        dedupe_key=_dedupe_key(msg_id, raw, msg),
        raw=raw,
        raw_media_type=RAW_MEDIA_TYPE,
        subject=subject,
        text="\n".join(bodies.text) if bodies.text else None,
        html=html,
        parts=tuple(bodies.parts),
        provider_id=msg_id[:200] if msg_id else None,
        sent_at=_sent_at(msg),
        thread=hints,
        project=project,
        meta=meta,
        effects=_effects(meta),
    )


def unparsed_inbound(raw: bytes, reason: str, *, channel: str, project: str = "default",
                     own_domain: str | None = None, envelope: Envelope = Envelope()) -> Inbound:
    """A mail whose full parse ran past its limits, stored from its headers alone.

    Only the top-level header block is read (linear in the size), so this costs what a
    header scan costs whatever the body holds. The agent sees who wrote and a note; the raw
    original is kept whole, and `meta["parse_failed"]` says why. A retry of the same mail
    runs into the same limit and lands here again, with the same dedupe key.
    """
    msg = _parser().parsebytes(raw, headersonly=True)
    sender = first_address(msg, "From") or first_address(msg, "Sender")
    if sender is None and envelope.mail_from and "@" in envelope.mail_from:
        sender = Mailbox("", envelope.mail_from)
    if sender is None:
        raise PermanentError(f"{reason}; and no sender address in its headers")
    warning = sender_warning(msg, sender)
    ids = message_ids(header_text(msg, "Message-ID"))
    msg_id = f"<{ids[0]}>" if ids else None
    recipients = tuple(envelope.rcpt_tos) or tuple(a for _, a in addresses(msg, "To", "Cc"))
    subject = header_text(msg, "Subject")
    meta: dict[str, Any] = {"parse_failed": reason}
    if warning is not None:
        meta["sender_warning"] = warning
    hints = build_hints(message_id=msg_id, in_reply_to=message_ids(header_text(msg, "In-Reply-To")),
                        references=message_ids(header_text(msg, "References")), recipients=recipients,
                        subject=subject, own_domain=own_domain, reported=None)
    return Inbound(
        channel=channel,
        sender=Address(IdentityKind.EMAIL, sender.address, None if warning or not sender.name else sender.name),
        recipients=recipients, dedupe_key=_dedupe_key(msg_id, raw, msg), raw=raw, raw_media_type=RAW_MEDIA_TYPE,
        subject=subject,
        text=f"[This message could not be read within the gateway's limits ({reason}). "
             "The original is kept as the raw message.]",
        provider_id=msg_id[:200] if msg_id else None, sent_at=_sent_at(msg), thread=hints, project=project,
        meta=meta)

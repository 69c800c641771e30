"""From a received text to the core: the `Inbound` both SMS transports build, with its opt-out.

An opt-out or opt-in keyword (STOP, 退订, START) travels with the text as an `OptOut`
effect, which the ingest applies in the text's own transaction: the acknowledgement the
SMSC gets after the commit covers the opt-out too.
"""

from __future__ import annotations

from typing import Any

from channels.sms.optout import opt_change
from channels.sms.settings import SmsCommon
from umsg.identity import normalise_phone
from umsg.model import Address, IdentityKind, Inbound, InboundPart, OptOut, ThreadHints


def sender_number(value: str, settings: SmsCommon) -> str:
    """E.164 of an SMS sender (PermanentError when it is not a number or alphanumeric id)."""
    return normalise_phone(value, settings.default_region)


def sms_inbound(*, channel: str, settings: SmsCommon, sender: str, recipient: str, text: str,
                dedupe_key: str, raw: bytes, raw_media_type: str, provider_id: str | None = None,
                meta: dict[str, Any] | None = None, parts: tuple[InboundPart, ...] = (),
                flags: dict[str, Any] | None = None) -> Inbound:
    """The `Inbound` of one text; `meta` goes under `sms` in the flags, `flags` at their top."""
    change = opt_change(text, settings)
    return Inbound(
        channel=channel,
        sender=Address(IdentityKind.PHONE, sender),
        recipients=(recipient,) if recipient else (),
        dedupe_key=dedupe_key,
        raw=raw,
        raw_media_type=raw_media_type,
        text=text,
        parts=parts,
        provider_id=provider_id,
        # Texts have no thread ids: a new text joins the number's open conversation.
        thread=ThreadHints(sticky=True),
        project=settings.project,
        # `incomplete` also at the top, where agents' views and routes look for message facts.
        meta={"sms": meta or {}, **({"incomplete": True} if (meta or {}).get("incomplete") else {}),
              **(flags or {})},
        effects=(OptOut(opted_out=change),) if change is not None else (),
    )

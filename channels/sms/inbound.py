"""From a received text to the core: the `Inbound` both SMS transports build, and opt-out handling."""

from __future__ import annotations

import logging
from typing import Any

from channels.base import InboundSink
from channels.sms.optout import opt_change, record_opt
from channels.sms.settings import SmsCommon
from storage.db import SessionFactory
from umsg.identity import normalise_phone
from umsg.model import Address, IdentityKind, Inbound, InboundPart, IngestResult, ThreadHints

log = logging.getLogger(__name__)


def sender_number(value: str, settings: SmsCommon) -> str:
    """E.164 of an SMS sender (PermanentError when it is not a number or alphanumeric id)."""
    return normalise_phone(value, settings.default_region)


def sms_inbound(*, channel: str, settings: SmsCommon, sender: str, recipient: str, text: str,
                dedupe_key: str, raw: bytes, raw_media_type: str, provider_id: str | None = None,
                meta: dict[str, Any] | None = None, parts: tuple[InboundPart, ...] = (),
                flags: dict[str, Any] | None = None) -> Inbound:
    """The `Inbound` of one text; `meta` goes under `sms` in the flags, `flags` at their top."""
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
    )


async def ingest_sms(sink: InboundSink, sessions: SessionFactory | None, settings: SmsCommon,
                     inbound: Inbound) -> IngestResult:
    """Hand one text to the core and, once it is committed, apply an opt-out/opt-in keyword."""
    result = await sink(inbound)
    change = opt_change(inbound.text, settings)
    if change is not None and sessions is not None and not result.duplicate:
        changed = await record_opt(sessions, contact_id=result.contact_id, number=inbound.sender.value,
                                   opted_out=change)
        log.info("%s %s (contact %s, %d identities)", inbound.sender.value,
                 "opted out" if change else "opted back in", result.contact_id, changed)
    return result

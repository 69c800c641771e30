"""Turning what a visitor sent (a chat line, an uploaded file) into an `Inbound` for the sink."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from channels.webchat.ids import dedupe_key, thread_key
from umsg.model import Address, Effect, IdentityKind, Inbound, InboundPart, ThreadHints


@dataclass(frozen=True)
class Visitor:
    """Who is writing, as far as this socket knows."""

    visitor_id: str
    name: str | None = None
    email: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def to_inbound(visitor: Visitor, *, client_id: str, text: str | None, channel: str, scope: str, project: str,
               part: InboundPart | None = None, meta: dict[str, Any] | None = None,
               effects: tuple[Effect, ...] = ()) -> Inbound:
    """One visitor message. Every message of a visitor carries the same thread key (and is
    sticky), so they continue one conversation until it is closed."""
    key = thread_key(scope, visitor.visitor_id)
    raw: dict[str, Any] = {"visitor_id": visitor.visitor_id, "client_id": client_id, "text": text}
    if part is not None:
        raw["file"] = {"name": part.filename, "type": part.media_type, "size": len(part.data)}
    facts = {**visitor.meta, **(meta or {})}
    if visitor.email:
        facts.setdefault("email", visitor.email)
    return Inbound(
        channel=channel,
        sender=Address(IdentityKind.CHAT, visitor.visitor_id, visitor.name),
        recipients=(scope,),
        dedupe_key=dedupe_key(visitor.visitor_id, client_id),
        raw=json.dumps(raw, ensure_ascii=False).encode(),
        raw_media_type="application/json",
        text=text,
        parts=(part,) if part is not None else (),
        thread=ThreadHints(own=(key,), refs=(key,), sticky=True),
        project=project,
        meta=facts,
        effects=effects,
    )

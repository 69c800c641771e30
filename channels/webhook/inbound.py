"""The JSON body the operator's system posts for a customer message, and its `Inbound` form."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from umsg.errors import PermanentError
from umsg.model import Address, IdentityKind, Inbound, ThreadHints


class InboundPayload(BaseModel):
    """One customer message as the operator's system describes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # The sending system's own id for the message: a redelivery with the same id is a duplicate.
    id: str = Field(min_length=1, max_length=400)
    sender: str = Field(min_length=1, max_length=320)
    sender_kind: IdentityKind = IdentityKind.CHAT
    sender_name: str | None = Field(default=None, max_length=300)
    recipients: list[str] = Field(default_factory=list)
    text: str | None = None
    subject: str | None = None
    html: str | None = None
    conversation_token: str | None = None
    # Ids of earlier messages (in the sending system's id space) this one answers.
    refs: list[str] = Field(default_factory=list)
    sticky: bool = True
    sent_at: datetime | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _has_body(self) -> InboundPayload:
        if not (self.text or self.html):
            raise ValueError("a message needs text or html")
        return self


def parse_payload(body: bytes) -> InboundPayload:
    """Validate a posted body; anything unusable is a PermanentError naming the problem."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PermanentError(f"body is not JSON: {exc}") from exc
    try:
        return InboundPayload.model_validate(data)
    except ValidationError as exc:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise PermanentError(f"invalid message: {detail}") from exc


def to_inbound(payload: InboundPayload, *, channel: str, project: str, raw: bytes) -> Inbound:
    """The normalised message; thread keys are namespaced by channel so ids of two systems never meet."""
    return Inbound(
        channel=channel,
        sender=Address(payload.sender_kind, payload.sender, payload.sender_name),
        recipients=tuple(payload.recipients),
        dedupe_key=payload.id,
        raw=raw,
        raw_media_type="application/json",
        subject=payload.subject,
        text=payload.text,
        html=payload.html,
        provider_id=payload.id,
        sent_at=payload.sent_at,
        thread=ThreadHints(
            own=(f"{channel}:{payload.id}",),
            refs=tuple(f"{channel}:{r}" for r in payload.refs),
            conversation_token=payload.conversation_token,
            sticky=payload.sticky,
        ),
        project=project,
        meta=dict(payload.meta),
    )

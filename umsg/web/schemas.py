"""Pydantic models of every request body and query string the API accepts.

Bounds mirror the store's columns (a string longer than its column, an id
beyond BIGINT, a naive timestamp) so that bad input is a 422 naming the field
instead of a database error. Unknown fields are refused: a typo should not
be silently ignored.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from umsg.model import IdentityKind
from umsg.web.parsing import MAX_ID

Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
ChannelName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
QueueName = Annotated[str, Field(min_length=1, max_length=100)]
Ref = Annotated[str, Field(min_length=1, max_length=500)]
AddressValue = Annotated[str, Field(min_length=1, max_length=320)]

CONVERSATION_STATUSES = ("open", "pending", "snoozed", "resolved", "closed")
ConversationStatus = Literal["open", "pending", "snoozed", "resolved", "closed"]
QueueStatus = Literal["waiting", "leased", "done", "dead"]
AgentState = Literal["available", "busy", "after_work", "break", "meeting", "training", "offline"]


def _b64(value: Any) -> Any:
    if not isinstance(value, str):
        return value  # let the bytes type report the wrong type
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not valid base64 ({exc})") from exc


Base64Data = Annotated[
    bytes,
    BeforeValidator(_b64),
    WithJsonSchema({"type": "string", "contentEncoding": "base64"}),
]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AddressIn(Body):
    kind: IdentityKind
    value: AddressValue
    name: str | None = Field(default=None, max_length=300)


class ThreadIn(Body):
    refs: list[Ref] = Field(default_factory=list, max_length=200)
    own: list[Ref] = Field(default_factory=list, max_length=200)
    conversation_token: str | None = Field(default=None, min_length=1, max_length=32)
    sticky: bool = False


class AttachmentIn(Body):
    media_type: str = Field(pattern=r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+$", max_length=200)
    filename: str | None = Field(default=None, max_length=500)
    data_base64: Base64Data


class MessageIn(Body):
    """A message submitted through the built-in `api` inbound channel."""

    project: Slug | None = None
    channel: ChannelName = "api"
    sender: AddressIn = Field(alias="from")
    to: list[AddressValue] = Field(default_factory=list, max_length=100)
    subject: str | None = Field(default=None, max_length=2000)
    text: str | None = None
    html: str | None = None
    dedupe_key: Ref
    thread: ThreadIn = Field(default_factory=ThreadIn)
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=100)
    meta: dict[str, Any] = Field(default_factory=dict)


class ConversationPatch(Body):
    """Only the fields present change; `assignee_id: null` unassigns."""

    status: ConversationStatus | None = None
    priority: int | None = Field(default=None, ge=-1000, le=1000)
    assignee_id: Id | None = None
    snoozed_until: AwareDatetime | None = None

    @model_validator(mode="after")
    def _meaningful(self) -> ConversationPatch:
        if not self.model_fields_set:
            raise ValueError("nothing to change: give status, priority, assignee_id or snoozed_until")
        for name in ("status", "priority"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class ReplyIn(Body):
    """A reply on a conversation; channel and recipient default to the conversation's."""

    text: str = Field(default="", max_length=1_000_000)
    subject: str | None = Field(default=None, max_length=2000)
    html: str | None = Field(default=None, max_length=2_000_000)
    channel: ChannelName | None = None
    to: AddressValue | None = None
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=20)
    attach_part_ids: list[Id] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _has_content(self) -> ReplyIn:
        if (not self.text.strip() and not (self.html and self.html.strip())
                and not self.attachments and not self.attach_part_ids):
            raise ValueError("a reply needs text (or html, or an attachment)")
        return self


class MergeIn(Body):
    into_id: Id
    reason: str | None = Field(default=None, max_length=2000)


class ClaimIn(Body):
    queue: QueueName | None = None
    lease_seconds: float | None = Field(default=None, gt=0, le=86_400)


class FailIn(Body):
    reason: str = Field(min_length=1, max_length=2000)
    permanent: bool = False


class AgentIn(Body):
    login: str = Field(pattern=r"^[A-Za-z0-9._@+-]{1,200}$")
    display_name: str = Field(min_length=1, max_length=200)
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$", max_length=320)
    capacity: int = Field(default=100, ge=1, le=10_000)
    projects: list[Slug] = Field(default_factory=list, max_length=100)
    skills: dict[Annotated[str, Field(min_length=1, max_length=100)], Annotated[int, Field(ge=1, le=5)]] = (
        Field(default_factory=dict, max_length=200)
    )


class AgentStateIn(Body):
    state: AgentState
    reason: str | None = Field(default=None, max_length=100)


class Page(Body):
    limit: int = Field(default=50, ge=1, le=500)
    after_id: int = Field(default=0, ge=0, le=MAX_ID)


class ConversationQuery(Page):
    status: ConversationStatus | None = None
    channel: ChannelName | None = None
    assignee: Id | Literal["none"] | None = Field(
        default=None, description="an agent id, or 'none' for unassigned conversations"
    )


class ContactQuery(Page):
    identity: AddressValue | None = Field(
        default=None, description="only contacts owning this identity value"
    )
    include_merged: bool = False


class QueueQuery(Page):
    status: QueueStatus | None = None


class EventsQuery(Body):
    after: int | None = Field(
        default=None, ge=0, le=MAX_ID, description="resume after this event id (default: only new events)"
    )
    batch: bool = Field(
        default=False,
        description="send the events that are ready together as one JSON array per frame (fewer frames under load)",
    )

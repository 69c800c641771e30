"""The normalised message model that channel adapters and the core exchange.

A channel adapter turns whatever its wire protocol delivers into an `Inbound`
and hands it to the ingest sink; the core turns an agent's reply into an
`Outbound` and hands it to the adapter that owns the address. Nothing in here
knows about any particular protocol.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class IdentityKind(enum.StrEnum):
    """How a contact can be reached; values are stored normalised."""

    EMAIL = "email"
    PHONE = "phone"  # E.164
    FAX = "fax"  # E.164
    CHAT = "chat"  # web chat visitor id


@dataclass(frozen=True)
class Address:
    """One end of a message: an identity kind plus its (raw) value and a display name."""

    kind: IdentityKind
    value: str
    name: str | None = None


@dataclass(frozen=True)
class InboundPart:
    """A piece of media that arrived with a message (attachment, body alternative, recording)."""

    media_type: str
    data: bytes
    filename: str | None = None
    content_id: str | None = None
    role: str = "attachment"  # attachment | inline | body | recording | document


@dataclass(frozen=True)
class ThreadHints:
    """What the channel knows about which conversation a message belongs to.

    `refs` are keys the channel saw on this message that may name an earlier
    message or conversation (email Message-IDs in In-Reply-To/References, a
    chat session id); `own` are keys of this message that later messages may
    refer to. `conversation_token` is an explicit token (reply+token@, a
    subject tag) that names a conversation directly.
    """

    own: tuple[str, ...] = ()
    refs: tuple[str, ...] = ()
    conversation_token: str | None = None
    # Reuse the contact's latest open conversation on this channel when
    # nothing else matches (chat and SMS threads work like this; email does not).
    sticky: bool = False


@dataclass(frozen=True)
class OptOut:
    """The sender asks to receive nothing more at the address it wrote from (STOP, 退订),
    or, with `opted_out=False`, to receive messages again (START)."""

    opted_out: bool = True


@dataclass(frozen=True)
class DeliveryReport:
    """This message reports on one of our earlier outgoing messages (an email DSN).

    The message is found by our id (`message_id`, read from our own Message-ID) or by the
    id the peer knows it by (`provider_id`). Only addresses in `failed` that the message
    was really sent to are marked failing, so a forged report cannot flag other customers.
    """

    status: str  # a umsg.outbound.status.MessageStatus value: delivered, failed, ...
    message_id: int | None = None
    provider_id: str | None = None
    failed: tuple[str, ...] = ()
    detail: str = ""


@dataclass(frozen=True)
class AddIdentity:
    """The sender can also be reached at this address (a chat visitor's email); it joins their
    contact unless another contact owns it already."""

    kind: IdentityKind
    value: str
    name: str | None = None


@dataclass(frozen=True)
class ContinueOn:
    """Replies in this message's conversation leave on another channel from now on
    (a chat the visitor left for email)."""

    channel: str
    reason: str


# What a message implies beyond itself: applied by the ingest in the message's own transaction,
# so the peer's acknowledgement (which follows the commit) covers them too.
Effect = OptOut | DeliveryReport | AddIdentity | ContinueOn


@dataclass(frozen=True)
class Inbound:
    """A message from a customer, normalised by its channel adapter."""

    channel: str
    sender: Address
    recipients: tuple[str, ...]
    dedupe_key: str
    raw: bytes
    raw_media_type: str = "application/octet-stream"
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    parts: tuple[InboundPart, ...] = ()
    provider_id: str | None = None
    sent_at: datetime | None = None
    thread: ThreadHints = field(default_factory=ThreadHints)
    project: str = "default"
    # Free-form facts the channel learned (DTMF menu choice, detected language,
    # auto-reply flags); routes may filter on them.
    meta: dict[str, Any] = field(default_factory=dict)
    effects: tuple[Effect, ...] = ()


@dataclass(frozen=True)
class OutboundPart:
    """An attachment on an outgoing message."""

    media_type: str
    data: bytes
    filename: str | None = None


@dataclass(frozen=True)
class Outbound:
    """A message the gateway sends, handed to the adapter that owns `channel`."""

    message_id: int
    channel: str
    sender: str
    recipient: str
    text: str
    subject: str | None = None
    html: str | None = None
    parts: tuple[OutboundPart, ...] = ()
    thread: ThreadHints = field(default_factory=ThreadHints)
    automatic: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


class DeliveryStatus(enum.StrEnum):
    ACCEPTED = "accepted"  # the peer took responsibility (SMTP 250, submit_sm_resp)
    DELIVERED = "delivered"
    TRANSIENT_FAILURE = "transient_failure"
    PERMANENT_FAILURE = "permanent_failure"


@dataclass(frozen=True)
class DeliveryResult:
    """What an adapter's `send` reports: the status, the peer's id and its own words."""

    status: DeliveryStatus
    provider_id: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class IngestResult:
    """What the ingest sink returns after its transaction committed."""

    message_id: int
    conversation_id: int
    contact_id: int
    duplicate: bool
    queue_item_id: int | None = None
    route: str | None = None
    conversion_errors: tuple[str, ...] = ()

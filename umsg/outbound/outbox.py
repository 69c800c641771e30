"""The outbound path, first half: turning an agent's (or an automation's) reply into durable work.

`Outbox.reply` writes, in one transaction, the outgoing `Message` (status
`queued`), a `deliver` `Job` naming it and a `message.created` event. Nothing
is sent here: the `Dispatcher` (umsg/outbound/dispatcher.py) picks the job up, so a reply
survives a crash between the agent pressing send and the peer accepting it.

Attachments are stored as blobs before the transaction and become `attachment` parts of
the outgoing message; `attach_part_ids` reuses parts already stored (a voicemail's MP3, a
fax's PDF) without copying them. `notify` is the same path for automatic mail to a
mailbox owner (voicemail-to-email, fax-to-email): the message lives in the conversation it
reports on, flagged `notification`, and is never mistaken for an answer to the customer.

A channel is a configured instance (`[channels.support]`); which identity of the contact a
reply on it goes to (when no `to` is given) is the kind its adapter declares, handed over as
`ChannelInstances` (umsg/instances.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, String, Table, bindparam, exists, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from storage.blobs import BlobStore
from storage.db import SessionFactory
from storage.models import Conversation, Event, Identity, Job, Message, Part
from storage.states import MessageStatus
from storage.types import utcnow
from umsg.errors import NotFound, PermanentError
from umsg.events.log import EventLog
from umsg.instances import ChannelInstances
from umsg.model import IdentityKind, OutboundPart
from umsg.outbound.authority import Request, authorise, authorise_channel, purpose_of
from umsg.outbound.dispatcher import Dispatcher, OutboundAdapter

__all__ = ["Dispatcher", "OutboundAdapter", "Outbox", "StoredAttachment", "add_reply"]

_MESSAGE = cast(Table, Message.__table__)
_CONVERSATION = cast(Table, Conversation.__table__)
_PART = cast(Table, Part.__table__)
_JOB = cast(Table, Job.__table__)
_EVENT = cast(Table, Event.__table__)

@dataclass(frozen=True)
class StoredAttachment:
    """An attachment whose bytes are already in the blob store."""

    sha256: str
    media_type: str
    size: int
    filename: str | None = None


class Outbox:
    """Queues outgoing messages for delivery."""

    def __init__(
        self,
        sessions: SessionFactory,
        events: EventLog,
        *,
        blobs: BlobStore | None = None,
        clock: Callable[[], datetime] = utcnow,
        channels: ChannelInstances | None = None,
    ) -> None:
        self._sessions = sessions
        self._events = events
        self._blobs = blobs
        self._clock = clock
        self.channels = channels if channels is not None else ChannelInstances()

    async def _store(self, attachments: Sequence[OutboundPart]) -> list[StoredAttachment]:
        if not attachments:
            return []
        if self._blobs is None:
            raise PermanentError("this outbox has no blob store: attachments cannot be sent")
        digests = await self._blobs.put_many([a.data for a in attachments])
        pairs = zip(digests, attachments, strict=True)
        return [StoredAttachment(d, a.media_type, len(a.data), a.filename) for d, a in pairs]

    async def notify(
        self,
        *,
        project_id: int,
        conversation_id: int,
        channel: str | None,
        to: str,
        text: str,
        subject: str | None = None,
        html: str | None = None,
        attachments: Sequence[OutboundPart] = (),
        attach_part_ids: Sequence[int] = (),
        sender: str | None = None,
    ) -> Message:
        """Queue automatic mail to a person of ours (a mailbox owner) about a conversation.

        `channel` None: the one configured instance that answers on email addresses
        (PermanentError when there are none or several).
        """
        if channel is None:
            channel = self.channels.one_answering(IdentityKind.EMAIL, "the notification's channel")
        return await self.reply(
            project_id=project_id, conversation_id=conversation_id, text=text, channel=channel, to=to,
            subject=subject, html=html, automatic=True, attachments=attachments,
            attach_part_ids=attach_part_ids, sender=sender, flags={"notification": True},
        )

    async def reply(
        self,
        *,
        project_id: int,
        conversation_id: int,
        text: str,
        agent_id: int | None = None,
        channel: str | None = None,
        to: str | None = None,
        subject: str | None = None,
        html: str | None = None,
        automatic: bool = False,
        attachments: Sequence[OutboundPart] = (),
        attach_part_ids: Sequence[int] = (),
        sender: str | None = None,
        flags: dict[str, Any] | None = None,
        may_start: bool = False,
    ) -> Message:
        """Queue a reply on a conversation; returns the stored message after the commit.

        The channel defaults to the conversation's, the recipient to the
        contact's identity for that channel. Raises NotFound for a conversation
        outside the project and PermanentError when no recipient can be found
        or the recipient opted out; `authority.OutboundRefused` when the outbound authority
        refuses it (`may_start`: the caller may write to a new address of the contact on a
        conversation the customer has not written in yet).
        """
        stored = await self._store(attachments)
        now = self._clock()
        # Plain table statements, not the ORM's unit of work: on SQLite every statement is a hop
        # to the driver's thread, and the ORM's bookkeeping was most of a reply's CPU.
        async with self._sessions() as s:
            conv = (await s.execute(
                _CONVERSATION_ROW, {"conversation_id": conversation_id, "channel": channel})).first()
            if conv is None or conv.project_id != project_id:
                raise NotFound(f"conversation {conversation_id} not found")
            stored += await _existing_parts(s, project_id, attach_part_ids)
            last_in = (conv.last_from, conv.last_to) if conv.last_id is not None else None
            values = await _message_values(
                s, project_id=project_id, conversation_id=conv.id, contact_id=conv.contact_id,
                conv_channel=conv.channel, conv_subject=conv.subject, last_in=last_in, text=text, now=now,
                agent_id=agent_id, channel=channel, to=to, subject=subject, html=html, automatic=automatic,
                attachments=stored, sender=sender, flags=flags, channels=self.channels, may_start=may_start)
            msg_id = int((await s.execute(_INSERT_MESSAGE, values)).scalar_one())
            if stored:
                await s.execute(insert(_PART), [_part_values(project_id, msg_id, a, now) for a in stored])
            await s.execute(insert(_JOB), {"project_id": project_id, "kind": "deliver",
                                           "payload": {"message_id": msg_id}, "run_after": now})
            await s.execute(insert(_EVENT), {"project_id": project_id, "kind": "message.created",
                                             "payload": _created(msg_id, conv.id, values)})
            await s.execute(_TOUCH_CONVERSATION, {"conversation_id": conv.id, "at": now})
            await s.commit()
        self._events.notify()
        # Detached, like the ORM's after a commit (expire_on_commit=False): every column is set.
        return Message(id=msg_id, provider_id=None, status_detail=None, sent_at=None, **values)

    async def add_reply(self, session: AsyncSession, *, conversation: Conversation, text: str,
                        **options: Any) -> Message:
        """`reply` inside the caller's transaction (see `add_reply`); the caller commits and notifies."""
        options.setdefault("now", self._clock())
        return await add_reply(session, self._events, conversation=conversation, text=text,
                               channels=self.channels, **options)


async def add_reply(
    session: AsyncSession,
    events: EventLog,
    *,
    conversation: Conversation,
    text: str,
    now: datetime,
    channels: ChannelInstances,
    agent_id: int | None = None,
    channel: str | None = None,
    to: str | None = None,
    subject: str | None = None,
    html: str | None = None,
    automatic: bool = False,
    flags: dict[str, Any] | None = None,
    attachments: Sequence[StoredAttachment] = (),
    sender: str | None = None,
) -> Message:
    """Add an outgoing message, its `deliver` job and its event to the caller's transaction.

    Used by the ingest (route auto-replies and forwards), which must commit the answer
    together with the message that caused it; it goes through the ORM because the caller's
    session may hold rows not flushed yet. Raises PermanentError, before adding anything,
    when there is no text, no recipient, or the recipient opted out.
    """
    s, conv, project_id = session, conversation, conversation.project_id
    last = (await s.execute(_LAST_INBOUND, {"conversation_id": conv.id, "channel": channel or conv.channel})).first()
    values = await _message_values(
        s, project_id=project_id, conversation_id=conv.id, contact_id=conv.contact_id, conv_channel=conv.channel,
        conv_subject=conv.subject, last_in=(last.from_addr, last.to_addrs) if last is not None else None,
        text=text, now=now, agent_id=agent_id, channel=channel, to=to, subject=subject, html=html,
        automatic=automatic, attachments=attachments, sender=sender, flags=flags, channels=channels)
    msg = Message(**values)
    s.add(msg)
    await s.flush()
    for a in attachments:
        s.add(Part(**_part_values(project_id, msg.id, a, now)))
    s.add(Job(project_id=project_id, kind="deliver", payload={"message_id": msg.id}, run_after=now))
    conv.last_message_at = now
    events.add(s, project_id, "message.created", _created(msg.id, conv.id, values))
    return msg


async def _message_values(
    s: AsyncSession,
    *,
    project_id: int,
    conversation_id: int,
    contact_id: int,
    conv_channel: str,
    conv_subject: str | None,
    last_in: tuple[str, list[Any]] | None,
    text: str,
    now: datetime,
    agent_id: int | None,
    channel: str | None,
    to: str | None,
    subject: str | None,
    html: str | None,
    automatic: bool,
    flags: dict[str, Any] | None,
    attachments: Sequence[StoredAttachment],
    sender: str | None,
    channels: ChannelInstances,
    may_start: bool = False,
) -> dict[str, Any]:
    """The outgoing message's columns; refuses (PermanentError) an empty or undeliverable reply,
    and (authority.OutboundRefused) one the outbound authority does not allow.

    `last_in` is the customer's latest message on the channel (from, to): the reply goes
    to whoever wrote it and comes from the address it was sent to, when the channel owns it.
    """
    if not (text and text.strip()) and not html and not attachments:
        raise PermanentError("a reply needs text or an attachment")
    channel = channel or conv_channel
    kind = channels.kind(channel)
    purpose = purpose_of(flags)
    # Before looking for a recipient: another project's channel is refused whoever it would reach.
    await authorise_channel(s, channels, purpose, project_id, channel)
    wrote_from, wrote_to = last_in if last_in is not None else ("", [])
    recipient = to.strip() if to else await _default_recipient(s, project_id, contact_id, channel, kind,
                                                                wrote_from)
    grant = await authorise(s, channels, Request(
        purpose=purpose, project_id=project_id, contact_id=contact_id, conversation_id=conversation_id,
        channel=channel, kind=kind, recipient=recipient, explicit_to=bool(to), wrote_from=wrote_from or "",
        wrote_to=str(wrote_to[0]) if wrote_to else "", sender=sender, may_start=may_start))
    if to or kind is None:
        await _refuse_opted_out(s, project_id, recipient)  # the default choice checked it already
    if subject is None and kind == IdentityKind.EMAIL and conv_subject:
        subject = conv_subject if conv_subject.lower().startswith("re:") else f"Re: {conv_subject}"
    return {
        "project_id": project_id,
        "conversation_id": conversation_id,
        "contact_id": contact_id,
        "direction": "out",
        "channel": channel,
        # Answer from the address the customer wrote to, when it is the channel's own.
        "from_addr": grant.from_addr,
        "to_addrs": [recipient],
        "subject": subject,
        "text": text,
        "html": html,
        "dedupe_key": f"out:{uuid.uuid4().hex}",
        "status": MessageStatus.QUEUED,
        "author_agent_id": agent_id,
        "flags": {**(flags or {}), **({"automatic": True} if automatic else {})},
        "created_at": now,
    }


def _part_values(project_id: int, message_id: int, a: StoredAttachment, now: datetime) -> dict[str, Any]:
    return {"project_id": project_id, "message_id": message_id, "role": "attachment", "sha256": a.sha256,
            "media_type": a.media_type, "size": a.size, "filename": a.filename, "created_at": now}


def _created(message_id: int, conversation_id: int, values: dict[str, Any]) -> dict[str, Any]:
    """The `message.created` payload of an outgoing message."""
    return {"message_id": message_id, "conversation_id": conversation_id, "channel": values["channel"],
            "direction": "out", "automatic": bool(values["flags"].get("automatic"))}


async def _existing_parts(s: AsyncSession, project_id: int, part_ids: Sequence[int]) -> list[StoredAttachment]:
    if not part_ids:
        return []
    rows = (await s.scalars(select(Part).where(Part.id.in_(list(part_ids)), Part.project_id == project_id))).all()
    found = {p.id: p for p in rows}
    missing = [i for i in part_ids if i not in found]
    if missing:
        raise NotFound(f"parts {missing} not found")
    return [StoredAttachment(found[i].sha256, found[i].media_type, found[i].size, found[i].filename) for i in part_ids]


def _conversation_statement() -> Select[Any]:
    """The conversation's columns a reply needs, with its latest inbound message on the channel.

    Built once: constructing (and cache-keying) a statement of this size costs more CPU
    than running it.
    """
    c = _CONVERSATION.c
    m = _MESSAGE.alias("last_in")
    channel = func.coalesce(bindparam("channel", type_=String), c.channel)
    last_id = (
        select(_MESSAGE.c.id)
        .where(_MESSAGE.c.conversation_id == c.id, _MESSAGE.c.direction == "in", _MESSAGE.c.channel == channel)
        .order_by(_MESSAGE.c.created_at.desc(), _MESSAGE.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    return (
        select(c.id, c.project_id, c.contact_id, c.channel, c.subject, m.c.id.label("last_id"),
               m.c.from_addr.label("last_from"), m.c.to_addrs.label("last_to"))
        .select_from(_CONVERSATION.outerjoin(m, m.c.id == last_id))
        .where(c.id == bindparam("conversation_id"))
    )


def _identities_statement() -> Select[int, str, bool, bool, bool]:
    """A contact's identities of one kind, each with whether its value is opted out anywhere in the project."""
    same = aliased(Identity)
    # A number can be a phone and a fax identity: an opt-out under either refuses it.
    blocked = exists().where(same.project_id == bindparam("project_id"), same.value == Identity.value,
                             same.opted_out.is_(True))
    return (select(Identity.id, Identity.value, Identity.failing, Identity.opted_out, blocked.label("blocked"))
            .where(Identity.contact_id == bindparam("contact_id"), Identity.kind == bindparam("kind")))


# The lookups `add_reply` shares with the ingest's session name ORM attributes, not table
# columns, so that they autoflush rows the caller added but has not flushed yet (as before).
_LAST_INBOUND = (
    select(Message.id, Message.from_addr, Message.to_addrs)
    .where(Message.conversation_id == bindparam("conversation_id"), Message.direction == "in",
           Message.channel == bindparam("channel"))
    .order_by(Message.created_at.desc(), Message.id.desc())
    .limit(1)
)
_CONVERSATION_ROW = _conversation_statement()
_IDENTITIES = _identities_statement()
_OPTED_OUT = select(Identity.id).where(Identity.project_id == bindparam("project_id"),
                                       Identity.value == bindparam("value"), Identity.opted_out.is_(True))
_INSERT_MESSAGE = insert(_MESSAGE).returning(_MESSAGE.c.id)
_TOUCH_CONVERSATION = (update(_CONVERSATION).where(_CONVERSATION.c.id == bindparam("conversation_id"))
                       .values(last_message_at=bindparam("at")))


async def _default_recipient(s: AsyncSession, project_id: int, contact_id: int, channel: str,
                             kind: IdentityKind | None, wrote_from: str) -> str:
    """The contact's `kind` address for `channel`; PermanentError when it has none or it opted out."""
    if kind is None:
        # A channel without a fixed identity kind (an API channel): answer whoever wrote last.
        if wrote_from:
            return wrote_from
        raise PermanentError(f"no recipient known for channel {channel!r}; give one explicitly")
    identities = list((await s.execute(
        _IDENTITIES, {"project_id": project_id, "contact_id": contact_id, "kind": kind.value})).all())
    usable = [i for i in identities if not i.opted_out]
    if not usable:
        reason = "has opted out" if identities else "has no"
        raise PermanentError(f"contact {contact_id} {reason} {kind.value} address for {channel!r}")
    wrote = wrote_from.lower()
    # Prefer the address the customer last wrote from, then ones that are not bouncing, then the newest.
    usable.sort(key=lambda i: (i.value.lower() == wrote, not i.failing, i.id), reverse=True)
    if usable[0].blocked:
        raise PermanentError(f"{usable[0].value} has opted out")
    return str(usable[0].value)


async def _refuse_opted_out(s: AsyncSession, project_id: int, recipient: str) -> None:
    opted = await s.scalar(_OPTED_OUT, {"project_id": project_id, "value": recipient})
    if opted is not None:
        raise PermanentError(f"{recipient} has opted out")

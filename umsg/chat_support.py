"""What a live chat channel reads and writes in the store besides ingest, reached as
`ChannelServices.chat`.

A chat channel (the web chat widget) shows a returning visitor their history, says whether
someone can answer now, keeps the email a visitor gives, lets them download the files of
their own chats, rate a conversation and say they are typing, and mails a transcript. The
queries behind that live here, in the core, so the channel imports no models: it gets typed,
frozen rows (`ChatVisitor`, `ChatLine`, `ChatFile`, `ChatHistory`, `ChatRating`) and turns
them into its own protocol's frames.

Reads use `readers` (no write lock on SQLite); writes are small transactions that add their
event in the same commit (`conversation.updated` with `changes.rating`, `conversation.typing`
with `who = "customer"`) and wake the event log's readers after it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import SessionFactory
from storage.models import (
    Agent,
    AgentProject,
    ChannelState,
    Contact,
    Conversation,
    Identity,
    Message,
    Part,
    Project,
    RouterOffer,
)
from umsg.events.log import EventLog
from umsg.model import IdentityKind

# Only what a visitor and an agent said: notes stay in the inbox.
_CHAT_DIRECTIONS = ("in", "out")


@dataclass(frozen=True)
class ChatVisitor:
    """The contact a chat visitor id belongs to, with their newest email address."""

    contact_id: int
    name: str | None
    email: str | None


@dataclass(frozen=True)
class ChatFile:
    """An attachment of a chat message (`sha256` reads it from `ChannelServices.blobs`)."""

    id: int
    filename: str | None
    media_type: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ChatLine:
    """A stored message as a chat shows it."""

    id: int
    conversation_id: int
    direction: str  # in | out
    text: str | None
    author: str | None  # the agent's display name, for a message an agent wrote
    created_at: datetime
    dedupe_key: str  # what the channel keyed the inbound message by
    files: tuple[ChatFile, ...]


@dataclass(frozen=True)
class ChatHistory:
    """The newest lines of a contact on a channel (oldest first) and all their conversations."""

    lines: tuple[ChatLine, ...]
    conversation_ids: tuple[int, ...]  # ascending


@dataclass(frozen=True)
class ChatRating:
    conversation_id: int
    score: int
    comment: str | None
    at: str  # ISO 8601, as given to `rate`

    @classmethod
    def from_stored(cls, value: Mapping[str, Any]) -> ChatRating:
        return cls(int(value["conversation_id"]), int(value["score"]), value.get("comment"), str(value["at"]))


def rating_key(conversation_id: int) -> str:
    """The ChannelState key (under the channel instance) a conversation's rating is kept at."""
    return f"rating:{conversation_id}"


class ChatSupport:
    def __init__(self, sessions: SessionFactory, readers: SessionFactory, events: EventLog) -> None:
        self._sessions = sessions
        self._readers = readers
        self._events = events

    # -- reading ---------------------------------------------------------------------------

    async def project_id(self, slug: str) -> int | None:
        async with self._readers() as s:
            pid = await s.scalar(select(Project.id).where(Project.slug == slug))
        return int(pid) if pid is not None else None

    async def visitor(self, project_id: int, visitor_id: str) -> ChatVisitor | None:
        """The contact owning chat identity `visitor_id` in the project, if any."""
        async with self._readers() as s:
            contact = await s.scalar(select(Contact).join(Identity, Identity.contact_id == Contact.id).where(
                Identity.project_id == project_id, Identity.kind == IdentityKind.CHAT.value,
                Identity.value == visitor_id))
            if contact is None:
                return None
            email = await s.scalar(select(Identity.value).where(
                Identity.contact_id == contact.id, Identity.kind == IdentityKind.EMAIL.value)
                .order_by(Identity.id.desc()).limit(1))
            return ChatVisitor(contact.id, contact.display_name, email)

    async def history(self, contact_id: int, channel: str, limit: int) -> ChatHistory:
        """The contact's newest `limit` lines on `channel`, oldest first, and the ids of every
        conversation they have a message of on it."""
        async with self._readers() as s:
            conv_ids = tuple(sorted(set((await s.scalars(select(Message.conversation_id).where(
                Message.contact_id == contact_id, Message.channel == channel).distinct())).all())))
            if not conv_ids or limit <= 0:
                return ChatHistory((), conv_ids)
            rows = list((await s.scalars(select(Message).where(
                Message.conversation_id.in_(conv_ids), Message.channel == channel,
                Message.direction.in_(_CHAT_DIRECTIONS)).order_by(Message.created_at.desc(), Message.id.desc())
                .limit(limit))).all())
            rows.reverse()
            return ChatHistory(await _lines(s, rows), conv_ids)

    async def line(self, message_id: int) -> ChatLine | None:
        """One stored message (of any channel) as a chat line."""
        async with self._readers() as s:
            m = await s.get(Message, message_id)
            return (await _lines(s, [m]))[0] if m is not None else None

    async def conversation_lines(self, conversation_id: int, channel: str) -> tuple[ChatLine, ...]:
        """Every line of the conversation on `channel`, oldest first (a transcript)."""
        async with self._readers() as s:
            rows = list((await s.scalars(select(Message).where(
                Message.conversation_id == conversation_id, Message.channel == channel,
                Message.direction.in_(_CHAT_DIRECTIONS)).order_by(Message.created_at, Message.id))).all())
            return await _lines(s, rows)

    async def agents_available(self, project_id: int) -> bool:
        """Is an agent of the project in state "available"?"""
        async with self._readers() as s:
            found = await s.scalar(select(Agent.id).join(AgentProject, and_(
                AgentProject.agent_id == Agent.id, AgentProject.project_id == project_id))
                .where(Agent.state == "available").limit(1))
        return found is not None

    async def agent_name(self, agent_id: int) -> str | None:
        async with self._readers() as s:
            name = await s.scalar(select(Agent.display_name).where(Agent.id == agent_id))
        return str(name) if name is not None else None

    async def offer_conversation(self, offer_id: int) -> int | None:
        """The conversation a router offer was about."""
        async with self._readers() as s:
            conv = await s.scalar(select(RouterOffer.conversation_id).where(RouterOffer.id == offer_id))
        return int(conv) if conv is not None else None

    async def visitor_file(self, part_id: int, contact_id: int, channel: str) -> ChatFile | None:
        """A stored attachment, only if it belongs to a message on `channel` in one of the
        contact's conversations."""
        async with self._readers() as s:
            row = await s.execute(select(Part, Message).join(Message, Message.id == Part.message_id)
                                  .where(Part.id == part_id, Part.role == "attachment"))
            found = row.first()
            if found is None:
                return None
            part, msg = found
            conv = await s.get(Conversation, msg.conversation_id)
            if conv is None or conv.contact_id != contact_id or msg.channel != channel:
                return None
            return _file(part)

    async def rating(self, channel: str, conversation_id: int) -> ChatRating | None:
        async with self._readers() as s:
            row = await s.scalar(select(ChannelState).where(ChannelState.channel == channel,
                                                            ChannelState.key == rating_key(conversation_id)))
        return ChatRating.from_stored(row.value) if row is not None else None

    # -- writing ---------------------------------------------------------------------------

    async def remember_email(self, project_id: int, contact_id: int, email: str, name: str | None) -> bool:
        """Add the email identity to the contact (and the name, if it has none); False when
        another contact already owns the address."""
        value = email.strip().lower()
        async with self._sessions() as s:
            owner = await s.scalar(select(Identity.contact_id).where(
                Identity.project_id == project_id, Identity.kind == IdentityKind.EMAIL.value,
                Identity.value == value))
            contact = await s.get(Contact, contact_id)
            if contact is not None and name and not contact.display_name:
                contact.display_name = name
            if owner is None:
                s.add(Identity(project_id=project_id, contact_id=contact_id, kind=IdentityKind.EMAIL.value,
                               value=value))
            try:
                await s.commit()
            except IntegrityError:
                return False  # created by someone else meanwhile
        return owner is None or owner == contact_id

    async def rate(self, channel: str, conversation_id: int, score: int, comment: str | None,
                   at: datetime) -> None:
        """Keep the rating beside the conversation (ChannelState of `channel`) and tell the
        inbox (`conversation.updated` with `changes.rating`), in one commit. A conversation
        that does not exist is ignored."""
        key = rating_key(conversation_id)
        value = {"conversation_id": conversation_id, "score": score, "comment": comment, "at": at.isoformat()}
        async with self._sessions() as s:
            conv = await s.get(Conversation, conversation_id)
            if conv is None:
                return
            row = await s.scalar(select(ChannelState).where(ChannelState.channel == channel,
                                                            ChannelState.key == key))
            old = dict(row.value) if row is not None else None
            if row is None:
                s.add(ChannelState(channel=channel, key=key, value=value))
            else:
                row.value = value
            self._events.add(s, conv.project_id, "conversation.updated", {
                "conversation_id": conversation_id, "by": "visitor",
                "changes": {"rating": {"from": old and old.get("score"), "to": score}},
                "rating": {"score": score, "comment": comment}})
            await s.commit()
        self._events.notify()

    async def typing(self, conversation_id: int, on: bool) -> None:
        """The customer started (`on`) or stopped typing: a `conversation.typing` event."""
        async with self._sessions() as s:
            conv = await s.get(Conversation, conversation_id)
            if conv is None:
                return
            self._events.add(s, conv.project_id, "conversation.typing",
                             {"conversation_id": conversation_id, "who": "customer", "on": on})
            await s.commit()
        self._events.notify()


def _file(p: Part) -> ChatFile:
    return ChatFile(p.id, p.filename, p.media_type, p.size, p.sha256)


async def _lines(s: AsyncSession, rows: Sequence[Message]) -> tuple[ChatLine, ...]:
    agent_ids = {m.author_agent_id for m in rows if m.author_agent_id is not None}
    names: dict[int, str] = {}
    if agent_ids:
        names = {int(i): n for i, n in (await s.execute(select(Agent.id, Agent.display_name)
                                                        .where(Agent.id.in_(sorted(agent_ids))))).all()}
    files: dict[int, list[ChatFile]] = {}
    if rows:
        for p in await s.scalars(select(Part).where(Part.message_id.in_([m.id for m in rows]),
                                                    Part.role == "attachment").order_by(Part.id)):
            files.setdefault(p.message_id, []).append(_file(p))
    return tuple(
        ChatLine(m.id, m.conversation_id, m.direction, m.text,
                 names.get(m.author_agent_id) if m.author_agent_id else None,
                 m.created_at, m.dedupe_key, tuple(files.get(m.id, ())))
        for m in rows)

"""Conversations as the web API reads and changes them: the queries and writes behind the handlers.

The caller (umsg.web.api.conversations) parses, authorises and serialises; this module
runs the SQL. Visibility of one conversation stays the caller's decision: each method
that loads one by id calls the caller's `guard` with its project id before anything else,
inside the same transaction. A change and its `conversation.updated` event commit together.
The messages of a conversation (one by id, its parts, the typing signal) are read here too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import SessionFactory, read_sessions_for
from storage.models import AgentProject, Conversation, Message, Part, Project
from storage.states import ConversationStatus
from umsg.errors import NotFound, PermanentError
from umsg.events.log import EventLog

# Raises (NotFound, usually) when the caller may not see an object of this project.
Guard = Callable[[int | None], None]

# What `update` may change; the other columns belong to ingest and the router.
CHANGEABLE = frozenset({"status", "priority", "assignee_id", "snoozed_until"})


class AssigneeNotInProject(PermanentError):
    """The new assignee does not work in the conversation's project."""

    def __init__(self, agent_id: int) -> None:
        self.agent_id = agent_id
        super().__init__(f"agent {agent_id} does not work in this conversation's project")


class SnoozeNeedsUntil(PermanentError):
    """A snoozed conversation needs a time to wake up."""

    def __init__(self) -> None:
        super().__init__("required when status is snoozed")


@dataclass(frozen=True)
class ConversationFilter:
    """Which conversations a listing returns: a page after `after_id`, in the given projects."""

    after_id: int
    limit: int
    project_ids: Collection[int] | None = None  # None: every project
    status: str | None = None
    channel: str | None = None
    assignee: int | Literal["none"] | None = None  # "none": unassigned only


class Conversations:
    """Reads and changes of conversations for the web API."""

    def __init__(self, sessions: SessionFactory, events: EventLog, readers: SessionFactory | None = None) -> None:
        self.sessions = sessions
        # Reads go through read-only sessions: on SQLite a write session queues for the write lock.
        self.readers = readers or read_sessions_for(sessions)
        self.events = events

    async def page(self, f: ConversationFilter) -> list[Conversation]:
        """A page of conversations ordered by id."""
        stmt = select(Conversation).where(Conversation.id > f.after_id).order_by(Conversation.id).limit(f.limit)
        if f.project_ids is not None:
            stmt = stmt.where(Conversation.project_id.in_(sorted(f.project_ids)))
        if f.status is not None:
            stmt = stmt.where(Conversation.status == f.status)
        if f.channel is not None:
            stmt = stmt.where(Conversation.channel == f.channel)
        if f.assignee == "none":
            stmt = stmt.where(Conversation.assignee_id.is_(None))
        elif f.assignee is not None:
            stmt = stmt.where(Conversation.assignee_id == f.assignee)
        async with self.readers() as s:
            return list((await s.scalars(stmt)).all())

    async def get(self, conversation_id: int, guard: Guard) -> Conversation:
        """One conversation; NotFound when it does not exist, whatever `guard` raises when hidden."""
        async with self.readers() as s:
            return await load_conversation(s, conversation_id, guard)

    async def messages(
        self, conversation_id: int, guard: Guard, *, after_id: int, limit: int
    ) -> list[tuple[Message, list[Part]]]:
        """A page of the conversation's messages ordered by id, each with its parts."""
        async with self.readers() as s:
            conv = await load_conversation(s, conversation_id, guard)
            msgs = (
                await s.scalars(
                    select(Message)
                    .where(Message.conversation_id == conv.id, Message.id > after_id)
                    .order_by(Message.id)
                    .limit(limit)
                )
            ).all()
            parts: dict[int, list[Part]] = defaultdict(list)
            if msgs:
                rows = await s.scalars(
                    select(Part).where(Part.message_id.in_([m.id for m in msgs])).order_by(Part.id)
                )
                for p in rows:
                    parts[p.message_id].append(p)
        return [(m, parts[m.id]) for m in msgs]

    async def update(
        self, conversation_id: int, guard: Guard, given: Mapping[str, Any], *, by: str
    ) -> Conversation:
        """Set the `given` fields (names in CHANGEABLE); report what changed, `by` whom.

        Raises AssigneeNotInProject or SnoozeNeedsUntil for a change that cannot be made.
        Setting a status other than snoozed without `snoozed_until` ends the snooze.
        Nothing is written (and no event sent) when no value differs.
        """
        unknown = set(given) - CHANGEABLE
        if unknown:
            raise ValueError(f"conversation fields not changeable here: {sorted(unknown)}")
        async with self.sessions() as s:
            conv = await load_conversation(s, conversation_id, guard)
            assignee = given.get("assignee_id")
            if assignee is not None and await s.get(AgentProject, (assignee, conv.project_id)) is None:
                raise AssigneeNotInProject(assignee)
            new = dict(given)
            status = new.get("status", conv.status)
            if status == ConversationStatus.SNOOZED and new.get("snoozed_until", conv.snoozed_until) is None:
                raise SnoozeNeedsUntil()
            if "status" in new and status != ConversationStatus.SNOOZED and "snoozed_until" not in new:
                new["snoozed_until"] = None  # waking up (or closing) ends the snooze
            changes: dict[str, dict[str, Any]] = {}
            for name, value in new.items():
                old = getattr(conv, name)
                if old != value:
                    changes[name] = {"from": _plain(old), "to": _plain(value)}
                    setattr(conv, name, value)
            if changes:
                self.events.add(
                    s,
                    conv.project_id,
                    "conversation.updated",
                    {"conversation_id": conv.id, "changes": changes, "by": by},
                )
                await s.commit()
                self.events.notify()
                await s.refresh(conv)
        return conv


    async def typing(self, conversation_id: int, guard: Guard, *, agent_id: int | None, on: bool) -> None:
        """Report that an agent started (`on`) or stopped typing; only the event is stored."""
        async with self.sessions() as s:
            conv = await load_conversation(s, conversation_id, guard)
            self.events.add(s, conv.project_id, "conversation.typing",
                            {"conversation_id": conversation_id, "who": "agent", "agent_id": agent_id, "on": on})
            await s.commit()
        self.events.notify()

    async def message(self, message_id: int, guard: Guard) -> tuple[Message, list[Part]]:
        """One message with its parts; `guard` sees the message's project."""
        async with self.readers() as s:
            msg = await s.get(Message, message_id)
            if msg is None:
                raise NotFound(f"message {message_id} not found")
            guard(msg.project_id)
            parts = (await s.scalars(select(Part).where(Part.message_id == message_id).order_by(Part.id))).all()
        return msg, list(parts)

    async def part(self, part_id: int, guard: Guard) -> Part:
        """One part (its row; the content is in the blob store); `guard` sees the part's project."""
        async with self.readers() as s:
            part = await s.get(Part, part_id)
        if part is None:
            raise NotFound(f"part {part_id} not found")
        guard(part.project_id)
        return part

    async def project_id(self, slug: str) -> int | None:
        """The id of project `slug`, None when there is none: where a submitted message may go."""
        async with self.readers() as s:
            return await s.scalar(select(Project.id).where(Project.slug == slug))


async def load_conversation(s: AsyncSession, conversation_id: int, guard: Guard) -> Conversation:
    """Conversation `conversation_id` in session `s`, shown to `guard`; NotFound when there is none."""
    conv = await s.get(Conversation, conversation_id)
    if conv is None:
        raise NotFound(f"conversation {conversation_id} not found")
    guard(conv.project_id)
    return conv


def _plain(value: Any) -> Any:
    """A value as an event payload carries it: datetimes as ISO 8601 text."""
    return value.isoformat() if hasattr(value, "isoformat") else value

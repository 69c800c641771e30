"""An agent's inbox work: what the agent holds, private notes, and closing with a wrap-up code.

The work list is what the agent holds: conversations whose queue item is leased to
`agent:<id>` (accepted offers) plus open conversations assigned to the agent. A private
note is a `Message` with direction `note` (readers of outgoing or incoming messages filter
on direction, so a note is never delivered nor taken for customer input).

The caller (umsg.web.api.inbox) parses, authorises and serialises; this module runs the
SQL. As in umsg.conversations, a conversation loaded by id goes through the caller's `guard`
first, and a write commits together with its events.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select

from storage.db import SessionFactory, read_sessions_for
from storage.models import Contact, Conversation, Message, QueueItem, WrapupCode
from storage.states import OPEN_CONVERSATION, ConversationStatus, QueueItemStatus
from storage.types import utcnow
from umsg.conversations import Guard, load_conversation
from umsg.errors import Conflict, PermanentError
from umsg.events.log import EventLog
from umsg.queue import Queue
from umsg.router.store import agent_owner

# The statuses `close` may set: both end the work, `resolved` reopens on the customer's next message.
CLOSING = frozenset({ConversationStatus.CLOSED, ConversationStatus.RESOLVED})

# The work list is a screenful for one agent, not a listing to page through.
WORK_LIMIT = 500


class WrapupCodeRequired(PermanentError):
    """The project defines wrap-up codes and the close names none of them."""

    def __init__(self, codes: Collection[str]) -> None:
        self.codes = sorted(codes)
        super().__init__(f"choose one of: {', '.join(self.codes)}")


class NoWrapupCodes(PermanentError):
    """The close names a wrap-up code but the project defines none."""

    def __init__(self) -> None:
        super().__init__("this project defines no wrap-up codes")


@dataclass(frozen=True)
class WorkItem:
    """A conversation an agent holds, with what the work list shows beside it."""

    conversation: Conversation
    contact: Contact | None
    item: QueueItem | None  # its leased or waiting queue item, if any
    waiting_since: datetime | None  # the customer's last message that no answer followed
    sla_due_at: datetime | None  # the queue item's deadline, else the conversation's


class InboxWork:
    """The work list, notes and closing, for the web API's inbox."""

    def __init__(self, sessions: SessionFactory, events: EventLog, queue: Queue, *,
                 readers: SessionFactory | None = None) -> None:
        self.sessions = sessions
        self.events = events
        self.queue = queue
        # On SQLite a read-only session takes no write lock, so reads here block no writer.
        self.readers = readers or read_sessions_for(sessions)

    async def work(self, agent_id: int, project_ids: Collection[int] | None) -> list[WorkItem]:
        """What agent `agent_id` holds in the given projects (None: all), ordered by conversation id."""
        held = select(QueueItem.conversation_id).where(QueueItem.status == QueueItemStatus.LEASED,
                                                       QueueItem.lease_owner == agent_owner(agent_id))
        stmt = (select(Conversation)
                .where(or_(Conversation.id.in_(held),
                           (Conversation.assignee_id == agent_id) & Conversation.status.in_(OPEN_CONVERSATION)))
                .order_by(Conversation.id).limit(WORK_LIMIT))
        if project_ids is not None:
            stmt = stmt.where(Conversation.project_id.in_(sorted(project_ids)))
        async with self.readers() as s:
            convs = list((await s.scalars(stmt)).all())
            if not convs:
                return []
            ids = [c.id for c in convs]
            contacts = {c.id: c for c in (await s.scalars(
                select(Contact).where(Contact.id.in_({c.contact_id for c in convs})))).all()}
            items = {i.conversation_id: i for i in (await s.scalars(
                select(QueueItem).where(QueueItem.conversation_id.in_(ids),
                                        QueueItem.status.in_((QueueItemStatus.LEASED, QueueItemStatus.WAITING)))
                .order_by(QueueItem.id))).all()}
            rows = await s.execute(
                select(Message.conversation_id, Message.direction, func.max(Message.created_at))
                .where(Message.conversation_id.in_(ids), Message.direction.in_(("in", "out")))
                .group_by(Message.conversation_id, Message.direction))
            last: dict[tuple[int, str], datetime] = {(cid, d): t for cid, d, t in rows.all()}
        out = []
        for c in convs:
            item = items.get(c.id)
            out.append(WorkItem(
                conversation=c,
                contact=contacts.get(c.contact_id),
                item=item,
                waiting_since=_waiting_since(last.get((c.id, "in")), last.get((c.id, "out"))),
                sla_due_at=item.sla_due_at if item and item.sla_due_at else c.sla_due_at,
            ))
        return out

    async def add_note(self, conversation_id: int, guard: Guard, text: str, *,
                       agent_id: int | None, by: str) -> Message:
        """Add a private note to the conversation, written by agent `agent_id` (`by` names the caller)."""
        async with self.sessions() as s:
            conv = await load_conversation(s, conversation_id, guard)
            note = _note(conv, text, agent_id, by)
            s.add(note)
            await s.flush()
            self.events.add(s, conv.project_id, "message.created",
                            {"message_id": note.id, "conversation_id": conv.id, "channel": conv.channel,
                             "direction": "note", "automatic": False})
            await s.commit()
        self.events.notify()
        return note

    async def close(self, conversation_id: int, guard: Guard, *, status: str, wrapup_code: str | None,
                    note: str | None, agent_id: int | None, by: str, holder: str | None) -> Conversation:
        """Finish the conversation's held queue work, set `status` and record the wrap-up as a note.

        `wrapup_code` must be one of the project's codes when it defines any (WrapupCodeRequired),
        and None when it defines none (NoWrapupCodes). With `holder` given, a queue item leased
        to anyone else is a Conflict (an agent closes only its own work).
        """
        if status not in CLOSING:
            raise ValueError(f"not a closing status: {status!r}")
        async with self.readers() as s:
            conv = await load_conversation(s, conversation_id, guard)
            codes = {w.code: w.label for w in (await s.scalars(
                select(WrapupCode).where(WrapupCode.project_id == conv.project_id))).all()}
            held = (await s.scalars(select(QueueItem).where(
                QueueItem.conversation_id == conversation_id, QueueItem.status == QueueItemStatus.LEASED))).all()
        if codes and wrapup_code not in codes:
            raise WrapupCodeRequired(codes)
        if wrapup_code is not None and not codes:
            raise NoWrapupCodes()
        # Finish the work first: the router frees the agent's capacity from the queue.completed event.
        for item in held:
            owner = item.lease_owner or ""
            if holder is not None and owner != holder:
                raise Conflict(f"queue item {item.id} is held by {owner}, not by the caller")
            if owner.startswith("agent:"):
                await self.queue.complete(item.id, owner)
        async with self.sessions() as s:
            conv = await load_conversation(s, conversation_id, guard)
            previous = conv.status
            conv.status = status
            conv.snoozed_until = None
            text = f"Closed with wrap-up {wrapup_code}" if wrapup_code else "Closed"
            if note:
                text += f": {note}"
            flags = {"wrapup": wrapup_code, "wrapup_label": codes.get(wrapup_code or "")}
            s.add(_note(conv, text, agent_id, by, flags))
            await s.flush()
            self.events.add(s, conv.project_id, "conversation.updated", {
                "conversation_id": conv.id, "by": by, "wrapup": wrapup_code,
                "changes": {"status": {"from": previous, "to": status}}})
            await s.commit()
            await s.refresh(conv)
        self.events.notify()
        return conv


def _waiting_since(last_in: datetime | None, last_out: datetime | None) -> datetime | None:
    """The customer waits from their last message that no answer followed."""
    if last_in is None or (last_out is not None and last_out >= last_in):
        return None
    return last_in


def _note(conv: Conversation, text: str, agent_id: int | None, by: str,
          flags: dict[str, Any] | None = None) -> Message:
    return Message(project_id=conv.project_id, conversation_id=conv.id, contact_id=conv.contact_id,
                   direction="note", channel=conv.channel, from_addr=by, to_addrs=[], text=text,
                   dedupe_key=f"note:{uuid.uuid4().hex}", status="stored", author_agent_id=agent_id,
                   flags=dict(flags or {}), created_at=utcnow())

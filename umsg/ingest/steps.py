"""The decisions of ingest for one message, in order, made in memory.

Each step is a small named object with one `process(work, ctx)`. The writer
first reads everything a batch needs in bulk (`batch.BatchState`), runs the
steps for each message (dedupe → contact → thread → store → route), then
writes all the batch's rows at once (`persist`). The steps do no I/O: that
is what lets a batch cost a few statements instead of several per message.
Rows an earlier message of the batch created are in the state too, so two
messages from one new customer in one batch still share a contact.
Control flow uses exceptions, never sentinels.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import ClassVar, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Message
from storage.states import OPEN_CONVERSATION, ConversationStatus
from umsg.errors import UmsgError
from umsg.ingest.batch import BatchState
from umsg.ingest.rows import ContactRow, ConvRow, StoredMessage, Work
from umsg.routes.filters import Sample
from umsg.routes.table import RouteTable

REOPENABLE = (*OPEN_CONVERSATION, ConversationStatus.RESOLVED)


class DuplicateMessage(UmsgError):
    """The message was stored before (same project, channel and dedupe key)."""

    def __init__(self, message: StoredMessage | Work) -> None:
        # A Work: the first copy came earlier in this batch and has no id until the batch is written.
        super().__init__(f"duplicate of message {message.message_id if isinstance(message, Work) else message.id}")
        self.message = message


@dataclass
class Ctx:
    project_id: int
    batch: BatchState
    table: RouteTable


class Step(Protocol):
    name: ClassVar[str]

    def process(self, work: Work, ctx: Ctx) -> None: ...


async def find_duplicate(session: AsyncSession, project_id: int, channel: str, key: str) -> Message | None:
    return await session.scalar(select(Message).where(
        Message.project_id == project_id, Message.channel == channel, Message.dedupe_key == key))


class Dedupe:
    name: ClassVar[str] = "dedupe"

    def process(self, work: Work, ctx: Ctx) -> None:
        inbound = work.prepared.inbound
        existing = ctx.batch.messages.get((ctx.project_id, inbound.channel, inbound.dedupe_key))
        if existing is not None:
            raise DuplicateMessage(existing)


class ResolveContact:
    """Find the contact that owns the sender's identity, or create both."""

    name: ClassVar[str] = "contact"

    def process(self, work: Work, ctx: Ctx) -> None:
        sender = work.prepared.inbound.sender
        key = (ctx.project_id, sender.kind.value, work.prepared.sender_value)
        contact = ctx.batch.contacts.get(key)
        if contact is None:
            contact = ContactRow(None, ctx.project_id, sender.name, {}, new=True,
                                 identity=(sender.kind.value, work.prepared.sender_value))
            ctx.batch.contacts[key] = contact
        # Identities move on merge, so this is normally the surviving contact already.
        contact = ctx.batch.survivor(contact)
        if sender.name and not contact.display_name:
            contact.set(display_name=sender.name)
        work.contact = contact


class Thread:
    """Find the conversation this message continues, or start one.

    Strongest first: a stored key this message refers to (our own Message-ID,
    a chat session); then an explicit conversation token, accepted only from
    the same contact so a copied tag cannot pull a stranger into a thread;
    then, for channels that ask for it, the contact's open conversation.
    """

    name: ClassVar[str] = "thread"

    def _by_ref(self, work: Work, ctx: Ctx) -> ConvRow | None:
        for ref in reversed(work.prepared.inbound.thread.refs):  # the nearest reference last
            found = ctx.batch.thread_keys.get((ctx.project_id, ref))
            if isinstance(found, ConvRow):
                return found
            if found is not None:
                return ctx.batch.conv_by_id.get(found)
        return None

    def _sticky(self, contact: ContactRow, channel: str, ctx: Ctx) -> ConvRow | None:
        key = (id(contact), channel)
        if key in ctx.batch.sticky:
            return ctx.batch.sticky[key]
        if contact.id is None:
            return None  # created in this batch: it has no earlier conversation
        return ctx.batch.open_conv.get((ctx.project_id, contact.id, channel))

    def process(self, work: Work, ctx: Ctx) -> None:
        contact = work.contact
        assert contact is not None
        inbound = work.prepared.inbound
        hints = inbound.thread
        conv = self._by_ref(work, ctx) if hints.refs else None
        if conv is None and hints.conversation_token and contact.id is not None:
            found = ctx.batch.conv_by_token.get(hints.conversation_token)
            if found is not None and found.project_id == ctx.project_id and found.contact_id == contact.id:
                conv = found
        if conv is None and hints.sticky:
            conv = self._sticky(contact, inbound.channel, ctx)
        if conv is not None and conv.status not in REOPENABLE:
            conv = None  # a closed conversation stays closed; the customer starts a new one
        if conv is None:
            conv = ConvRow(None, ctx.project_id, contact, None, inbound.channel, inbound.subject,
                           ConversationStatus.OPEN, 0, None, None, None, None, secrets.token_hex(6), new=True)
            work.new_conversation = True
        elif conv.status != ConversationStatus.OPEN:
            conv.set(status=ConversationStatus.OPEN, snoozed_until=None)  # the customer wrote again: back to work
        conv.set(last_message_at=ctx.batch.now)
        if hints.sticky:
            ctx.batch.sticky[(id(contact), inbound.channel)] = conv
        for key in dict.fromkeys(hints.own):
            # The first message of the batch to name a new key records it.
            if (ctx.project_id, key) not in ctx.batch.thread_keys:
                ctx.batch.thread_keys[(ctx.project_id, key)] = conv
                work.new_refs.append(key)
        work.conversation = conv


class Store:
    """The message's flags: the channel's meta plus what went wrong converting its parts."""

    name: ClassVar[str] = "store"

    def process(self, work: Work, ctx: Ctx) -> None:
        p = work.prepared
        work.flags = dict(p.inbound.meta)
        if p.conversion_errors:
            work.flags["conversion_errors"] = list(p.conversion_errors)
        # A second copy later in the same batch is a duplicate of this one.
        ctx.batch.messages[(ctx.project_id, p.inbound.channel, p.inbound.dedupe_key)] = work


class Route:
    """Apply the project's channel routes (read per batch, so a saved table applies at once).

    The decision may drop the message (stored, flagged, recorded), answer it
    automatically or forward a copy (both done through the ORM after the
    rows are written: `followup`), and put the conversation in the universal
    queue unless it already waits there or has an agent (who then simply sees
    the new message).
    """

    name: ClassVar[str] = "route"

    def process(self, work: Work, ctx: Ctx) -> None:
        conv, contact, p = work.conversation, work.contact, work.prepared
        assert conv is not None and contact is not None
        now = ctx.batch.now
        sample = Sample(channel=p.inbound.channel, sender=p.sender_value, recipients=tuple(p.inbound.recipients),
                        at=now, subject=p.inbound.subject, text=p.text, meta=dict(p.inbound.meta),
                        attributes=dict(contact.attributes or {}))
        decision = ctx.table.match(sample)
        work.decision = decision
        if decision.action == "drop":
            work.flags["dropped_by_route"] = decision.route
            if work.new_conversation:
                # Nobody should find a conversation that consists only of dropped messages in their work.
                conv.status = ConversationStatus.CLOSED
            return
        if decision.queue is None:
            return  # answered or handed on; the conversation stays open for anyone who looks
        if conv.queue is None or work.new_conversation:
            conv.set(queue=decision.queue, priority=decision.priority, sla_due_at=decision.sla_due(now))
        if conv.assignee_id is not None or conv.queued:
            return
        conv.queued = True
        work.enqueue = True


# Run in this order for each message of a batch.
STEPS: tuple[Step, ...] = (Dedupe(), ResolveContact(), Thread(), Store(), Route())

"""The steps of ingest that run inside the transaction, in order.

Each step is a small named object with one async `process(work, ctx)`. The
writer runs them for a whole batch in two phases: the first phase builds the
rows (contact, conversation, message, parts) as linked objects, one flush
then inserts them table by table in a few multi-row statements, and the
second phase adds what needs their ids (thread keys, queue item, events).
`BatchState` holds what the batch looked up in bulk and what earlier messages
of the same batch created, so two messages from one new customer in one
batch still share a contact. Control flow uses exceptions, never sentinels.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Contact, Conversation, Identity, Message, Part, QueueItem, ThreadRef
from umsg.errors import UmsgError
from umsg.events import EventLog
from umsg.ingest.prepare import Prepared
from umsg.queue import Queue
from umsg.routing import actions
from umsg.routing.book import RouteBook
from umsg.routing.targets import RouteDecision

OPEN_STATES = ("open", "pending", "snoozed")
REOPENABLE = ("open", "pending", "snoozed", "resolved")


class DuplicateMessage(UmsgError):
    """The message was stored before (same project, channel and dedupe key)."""

    def __init__(self, message: Message) -> None:
        super().__init__(f"duplicate of message {message.id}")
        self.message = message


@dataclass
class BatchState:
    """Bulk look-ups for a batch plus the rows its earlier messages created."""

    messages: dict[tuple[int, str, str], Message] = field(default_factory=dict)
    contacts: dict[tuple[int, str, str], Contact] = field(default_factory=dict)
    thread_keys: dict[tuple[int, str], Conversation | int] = field(default_factory=dict)
    sticky: dict[tuple[int, str], Conversation] = field(default_factory=dict)
    queued: set[int] = field(default_factory=set)  # id() of conversations with a waiting item

    async def prefetch(self, session: AsyncSession, batch: Iterable[tuple[int, Prepared]]) -> None:
        """Three queries for the whole batch instead of three per message."""
        items = list(batch)
        if not items:
            return
        projects = {pid for pid, _ in items}
        keys = {p.inbound.dedupe_key for _, p in items}
        for m in await session.scalars(select(Message).where(
                Message.project_id.in_(projects), Message.dedupe_key.in_(keys))):
            self.messages[(m.project_id, m.channel, m.dedupe_key)] = m
        values = {p.sender_value for _, p in items}
        rows = await session.execute(select(Identity.project_id, Identity.kind, Identity.value, Contact)
                                     .join(Contact, Contact.id == Identity.contact_id)
                                     .where(Identity.project_id.in_(projects), Identity.value.in_(values)))
        for pid, kind, value, contact in rows:
            self.contacts[(pid, kind, value)] = contact
        refs = {k for _, p in items for k in (*p.inbound.thread.refs, *p.inbound.thread.own)}
        if refs:
            for pid, value, conv_id in await session.execute(
                    select(ThreadRef.project_id, ThreadRef.value, ThreadRef.conversation_id)
                    .where(ThreadRef.project_id.in_(projects), ThreadRef.value.in_(refs))
                    .order_by(ThreadRef.id)):
                self.thread_keys[(pid, value)] = conv_id


@dataclass
class Ctx:
    session: AsyncSession
    project_id: int
    now: datetime
    events: EventLog
    queue: Queue
    routes: RouteBook
    batch: BatchState


@dataclass
class Work:
    """What the steps build up for one message."""

    prepared: Prepared
    contact: Contact | None = None
    conversation: Conversation | None = None
    new_conversation: bool = False
    message: Message | None = None
    decision: RouteDecision | None = None
    queue_item: QueueItem | None = None


class Step(Protocol):
    name: ClassVar[str]

    async def process(self, work: Work, ctx: Ctx) -> None: ...


async def find_duplicate(session: AsyncSession, project_id: int, channel: str, key: str) -> Message | None:
    return await session.scalar(select(Message).where(
        Message.project_id == project_id, Message.channel == channel, Message.dedupe_key == key))


class Dedupe:
    name: ClassVar[str] = "dedupe"

    async def process(self, work: Work, ctx: Ctx) -> None:
        inbound = work.prepared.inbound
        existing = ctx.batch.messages.get((ctx.project_id, inbound.channel, inbound.dedupe_key))
        if existing is not None:
            raise DuplicateMessage(existing)


class ResolveContact:
    """Find the contact that owns the sender's identity, or create both."""

    name: ClassVar[str] = "contact"

    async def process(self, work: Work, ctx: Ctx) -> None:
        sender = work.prepared.inbound.sender
        key = (ctx.project_id, sender.kind.value, work.prepared.sender_value)
        contact = ctx.batch.contacts.get(key)
        if contact is None:
            contact = Contact(project_id=ctx.project_id, display_name=sender.name, attributes={},
                              created_at=ctx.now, updated_at=ctx.now)
            ctx.session.add(contact)
            ctx.session.add(Identity(project_id=ctx.project_id, contact=contact, kind=sender.kind.value,
                                     value=work.prepared.sender_value, created_at=ctx.now))
            ctx.batch.contacts[key] = contact
        # Identities move on merge, so this is normally the surviving contact already.
        while contact.merged_into_id is not None:
            survivor = await ctx.session.get(Contact, contact.merged_into_id)
            if survivor is None:
                break
            contact = survivor
        if sender.name and not contact.display_name:
            contact.display_name = sender.name
        work.contact = contact


class Thread:
    """Find the conversation this message continues, or start one.

    Strongest first: a stored key this message refers to (our own Message-ID,
    a chat session); then an explicit conversation token, accepted only from
    the same contact so a copied tag cannot pull a stranger into a thread;
    then, for channels that ask for it, the contact's open conversation.
    """

    name: ClassVar[str] = "thread"

    async def _by_ref(self, work: Work, ctx: Ctx) -> Conversation | None:
        for ref in reversed(work.prepared.inbound.thread.refs):  # the nearest reference last
            found = ctx.batch.thread_keys.get((ctx.project_id, ref))
            if isinstance(found, Conversation):
                return found
            if found is not None:
                return await ctx.session.get(Conversation, found)
        return None

    async def _sticky(self, work: Work, ctx: Ctx) -> Conversation | None:
        assert work.contact is not None
        key = (id(work.contact), work.prepared.inbound.channel)
        if key in ctx.batch.sticky:
            return ctx.batch.sticky[key]
        if work.contact.id is None:
            return None  # created in this batch: it has no earlier conversation
        return await ctx.session.scalar(select(Conversation).where(
            Conversation.project_id == ctx.project_id, Conversation.contact_id == work.contact.id,
            Conversation.channel == work.prepared.inbound.channel,
            Conversation.status.in_(OPEN_STATES)).order_by(Conversation.id.desc()).limit(1))

    async def process(self, work: Work, ctx: Ctx) -> None:
        assert work.contact is not None
        hints = work.prepared.inbound.thread
        conv = await self._by_ref(work, ctx) if hints.refs else None
        if conv is None and hints.conversation_token and work.contact.id is not None:
            conv = await ctx.session.scalar(select(Conversation).where(
                Conversation.project_id == ctx.project_id, Conversation.token == hints.conversation_token,
                Conversation.contact_id == work.contact.id))
        if conv is None and hints.sticky:
            conv = await self._sticky(work, ctx)
        if conv is not None and conv.status not in REOPENABLE:
            conv = None  # a closed conversation stays closed; the customer starts a new one
        if conv is None:
            inbound = work.prepared.inbound
            conv = Conversation(project_id=ctx.project_id, contact=work.contact, channel=inbound.channel,
                                subject=inbound.subject, status="open", token=secrets.token_hex(6),
                                priority=0, created_at=ctx.now, updated_at=ctx.now, last_message_at=ctx.now)
            ctx.session.add(conv)
            work.new_conversation = True
        elif conv.status != "open":
            conv.status = "open"  # the customer wrote again: back to work
            conv.snoozed_until = None
        conv.last_message_at = ctx.now
        if hints.sticky:
            ctx.batch.sticky[(id(work.contact), work.prepared.inbound.channel)] = conv
        for key in hints.own:
            ctx.batch.thread_keys.setdefault((ctx.project_id, key), conv)
        work.conversation = conv


class Store:
    """The message row and its parts, raw original first, derived parts linked to their source."""

    name: ClassVar[str] = "store"

    async def process(self, work: Work, ctx: Ctx) -> None:
        assert work.contact is not None and work.conversation is not None
        p = work.prepared
        inbound = p.inbound
        flags: dict[str, object] = dict(inbound.meta)
        if p.conversion_errors:
            flags["conversion_errors"] = list(p.conversion_errors)
        msg = Message(project_id=ctx.project_id, conversation=work.conversation, contact=work.contact,
                      direction="in", channel=inbound.channel, from_addr=p.sender_value,
                      to_addrs=list(inbound.recipients), subject=inbound.subject, text=p.text, html=p.html,
                      provider_id=inbound.provider_id, dedupe_key=inbound.dedupe_key, status="received",
                      flags=flags, sent_at=inbound.sent_at, created_at=ctx.now)
        ctx.session.add(msg)
        parts: list[Part] = []
        for blob in p.blobs:
            parts.append(Part(project_id=ctx.project_id, message=msg, role=blob.role, sha256=blob.sha256,
                              media_type=blob.media_type, size=blob.size, filename=blob.filename,
                              content_id=blob.content_id, converter=blob.converter, meta=dict(blob.meta),
                              created_at=ctx.now,
                              derived_from=parts[blob.derived_from] if blob.derived_from is not None else None))
        ctx.session.add_all(parts)
        ctx.batch.messages[(ctx.project_id, inbound.channel, inbound.dedupe_key)] = msg
        work.message = msg


class RecordThreadKeys:
    """Remember this message's own keys (e.g. its Message-ID) so later replies find the thread."""

    name: ClassVar[str] = "thread-keys"

    async def process(self, work: Work, ctx: Ctx) -> None:
        assert work.conversation is not None and work.message is not None
        for key in dict.fromkeys(work.prepared.inbound.thread.own):
            if ctx.batch.thread_keys.get((ctx.project_id, key)) is not work.conversation:
                continue  # already stored for an earlier message (or another conversation)
            ctx.session.add(ThreadRef(project_id=ctx.project_id, conversation_id=work.conversation.id,
                                      message_id=work.message.id, value=key))
            ctx.batch.thread_keys[(ctx.project_id, key)] = work.conversation.id


class RouteAndEnqueue:
    """Apply the project's channel routes (read per batch, so a saved table applies at once).

    The decision may drop the message (stored, flagged, recorded), answer it
    automatically, forward a copy, and put the conversation in the universal
    queue unless it already waits there or has an agent (who then simply sees
    the new message). Outbound messages join this transaction (umsg.routing.actions).
    """

    name: ClassVar[str] = "route"

    async def process(self, work: Work, ctx: Ctx) -> None:
        assert work.conversation is not None and work.message is not None
        p, conv, msg = work.prepared, work.conversation, work.message
        table = await ctx.routes.table_for(ctx.session, ctx.project_id)
        sample = actions.ingest_sample(channel=p.inbound.channel, sender=p.sender_value,
                                       recipients=tuple(p.inbound.recipients), subject=p.inbound.subject,
                                       text=p.text, meta=p.inbound.meta, contact=work.contact, now=ctx.now)
        decision = table.match(sample)
        work.decision = decision
        if decision.action == "drop":
            actions.record_drop(ctx.events, ctx.session, decision=decision, project_id=ctx.project_id,
                                conversation=conv, message=msg, new_conversation=work.new_conversation)
            return
        if decision.reply is not None:
            await actions.send_auto_reply(ctx.session, ctx.events, decision=decision, conversation=conv,
                                          contact=work.contact, message=msg, meta=p.inbound.meta, now=ctx.now)
        if decision.forward is not None:
            await actions.send_forward(ctx.session, ctx.events, decision=decision, conversation=conv,
                                       message=msg, now=ctx.now)
        if decision.queue is None:
            return  # answered or handed on; the conversation stays open for anyone who looks
        if conv.queue is None or work.new_conversation:
            conv.queue = decision.queue
            conv.priority = decision.priority
            conv.sla_due_at = decision.sla_due(ctx.now)
        if conv.assignee_id is not None or id(conv) in ctx.batch.queued:
            return
        if not work.new_conversation:
            pending = await ctx.session.scalar(select(QueueItem.id).where(
                QueueItem.conversation_id == conv.id, QueueItem.status.in_(("waiting", "leased"))).limit(1))
            if pending is not None:
                return
        ctx.batch.queued.add(id(conv))
        work.queue_item = item = ctx.queue.enqueue(
            ctx.session, project_id=ctx.project_id, conversation_id=conv.id, message_id=msg.id,
            queue=decision.queue, channel=msg.channel, priority=decision.priority,
            skills=decision.skills, sla_due_at=conv.sla_due_at, route=decision.route, now=ctx.now)
        if decision.preferred is not None:
            contact_id = work.contact.id if work.contact is not None else None
            agent_id, until = await actions.resolve_preferred(
                ctx.session, project_id=ctx.project_id, contact_id=contact_id, preferred=decision.preferred,
                now=ctx.now)
            await actions.pin_preferred(ctx.session, item, agent_id, until, decision.preferred)
            msg.flags = {**msg.flags, "preferred_agent": {"agent_id": agent_id, "until": until.isoformat(),
                                                          "rule": decision.preferred.rule}}


class Announce:
    """Outbox events, in the same transaction, for the live inbox and integrations."""

    name: ClassVar[str] = "announce"

    async def process(self, work: Work, ctx: Ctx) -> None:
        assert work.conversation is not None and work.message is not None
        conv, msg = work.conversation, work.message
        if work.new_conversation:
            ctx.events.add(ctx.session, ctx.project_id, "conversation.created",
                           {"conversation_id": conv.id, "contact_id": conv.contact_id, "channel": conv.channel})
        ctx.events.add(ctx.session, ctx.project_id, "message.created",
                       {"message_id": msg.id, "conversation_id": conv.id, "channel": msg.channel,
                        "direction": "in", "route": work.decision.route if work.decision else None})


# Phase one builds rows; the writer flushes; phase two needs their ids.
BUILD_STEPS: tuple[Step, ...] = (Dedupe(), ResolveContact(), Thread(), Store())
LINK_STEPS: tuple[Step, ...] = (RecordThreadKeys(), RouteAndEnqueue(), Announce())

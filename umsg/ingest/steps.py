"""The steps of ingest that run inside the transaction, in order.

Each step is a small named object with one async `process(work, ctx)`; the
writer runs them for every message of a batch inside its own savepoint.
Control flow uses exceptions (`DuplicateMessage`), never sentinel values.
"""

from __future__ import annotations

import secrets
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
from umsg.routes import RouteDecision, RouteTable

OPEN_STATES = ("open", "pending", "snoozed")
REOPENABLE = ("open", "pending", "snoozed", "resolved")


class DuplicateMessage(UmsgError):
    """The message was stored before (same project, channel and dedupe key)."""

    def __init__(self, message: Message) -> None:
        super().__init__(f"duplicate of message {message.id}")
        self.message = message


@dataclass
class Ctx:
    session: AsyncSession
    project_id: int
    now: datetime
    events: EventLog
    queue: Queue
    routes: RouteTable


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
    part_ids: list[int] = field(default_factory=list)


class Step(Protocol):
    name: ClassVar[str]

    async def process(self, work: Work, ctx: Ctx) -> None: ...


async def find_duplicate(session: AsyncSession, project_id: int, channel: str, key: str) -> Message | None:
    return await session.scalar(
        select(Message).where(Message.project_id == project_id, Message.channel == channel,
                              Message.dedupe_key == key)
    )


class Dedupe:
    name: ClassVar[str] = "dedupe"

    async def process(self, work: Work, ctx: Ctx) -> None:
        inbound = work.prepared.inbound
        existing = await find_duplicate(ctx.session, ctx.project_id, inbound.channel, inbound.dedupe_key)
        if existing is not None:
            raise DuplicateMessage(existing)


class ResolveContact:
    """Find the contact that owns the sender's identity, or create both."""

    name: ClassVar[str] = "contact"

    async def process(self, work: Work, ctx: Ctx) -> None:
        sender = work.prepared.inbound.sender
        row = (await ctx.session.execute(
            select(Identity, Contact).join(Contact, Contact.id == Identity.contact_id).where(
                Identity.project_id == ctx.project_id, Identity.kind == sender.kind.value,
                Identity.value == work.prepared.sender_value)
        )).first()
        if row is not None:
            contact = row[1]
            # Identities move on merge, so this is normally the surviving contact already.
            while contact.merged_into_id is not None:
                nxt = await ctx.session.get(Contact, contact.merged_into_id)
                if nxt is None:
                    break
                contact = nxt
            if sender.name and not contact.display_name:
                contact.display_name = sender.name
            work.contact = contact
            return
        contact = Contact(project_id=ctx.project_id, display_name=sender.name, attributes={})
        ctx.session.add(contact)
        await ctx.session.flush()
        ctx.session.add(Identity(project_id=ctx.project_id, contact_id=contact.id, kind=sender.kind.value,
                                 value=work.prepared.sender_value))
        work.contact = contact


class Thread:
    """Find the conversation this message continues, or start one.

    Strongest first: a stored key this message refers to (our own Message-ID,
    a chat session); then an explicit conversation token, accepted only from
    the same contact so a copied tag cannot pull a stranger into a thread;
    then, for channels that ask for it, the contact's open conversation.
    """

    name: ClassVar[str] = "thread"

    async def process(self, work: Work, ctx: Ctx) -> None:
        assert work.contact is not None
        hints = work.prepared.inbound.thread
        conv: Conversation | None = None
        if hints.refs:
            conv = await ctx.session.scalar(
                select(Conversation).join(ThreadRef, ThreadRef.conversation_id == Conversation.id).where(
                    ThreadRef.project_id == ctx.project_id, ThreadRef.value.in_(list(hints.refs))
                ).order_by(ThreadRef.id.desc()).limit(1)
            )
        if conv is None and hints.conversation_token:
            conv = await ctx.session.scalar(select(Conversation).where(
                Conversation.project_id == ctx.project_id, Conversation.token == hints.conversation_token,
                Conversation.contact_id == work.contact.id))
        if conv is None and hints.sticky:
            conv = await ctx.session.scalar(select(Conversation).where(
                Conversation.project_id == ctx.project_id, Conversation.contact_id == work.contact.id,
                Conversation.channel == work.prepared.inbound.channel,
                Conversation.status.in_(OPEN_STATES)).order_by(Conversation.id.desc()).limit(1))
        if conv is not None and conv.status not in REOPENABLE:
            conv = None  # a closed conversation stays closed; the customer starts a new one
        if conv is None:
            inbound = work.prepared.inbound
            conv = Conversation(project_id=ctx.project_id, contact_id=work.contact.id, channel=inbound.channel,
                                subject=inbound.subject, status="open", token=secrets.token_hex(6),
                                created_at=ctx.now, last_message_at=ctx.now)
            ctx.session.add(conv)
            await ctx.session.flush()
            work.new_conversation = True
        else:
            if conv.status != "open":
                conv.status = "open"  # the customer wrote again: back to work
                conv.snoozed_until = None
            conv.last_message_at = ctx.now
        work.conversation = conv


class Store:
    """The message row, its parts (raw original first) and its thread keys."""

    name: ClassVar[str] = "store"

    async def process(self, work: Work, ctx: Ctx) -> None:
        assert work.contact is not None and work.conversation is not None
        p = work.prepared
        inbound = p.inbound
        flags: dict[str, object] = dict(inbound.meta)
        if p.conversion_errors:
            flags["conversion_errors"] = list(p.conversion_errors)
        msg = Message(project_id=ctx.project_id, conversation_id=work.conversation.id, contact_id=work.contact.id,
                      direction="in", channel=inbound.channel, from_addr=p.sender_value,
                      to_addrs=list(inbound.recipients), subject=inbound.subject, text=p.text, html=p.html,
                      provider_id=inbound.provider_id, dedupe_key=inbound.dedupe_key, status="received",
                      flags=flags, sent_at=inbound.sent_at, created_at=ctx.now)
        ctx.session.add(msg)
        await ctx.session.flush()
        rows: list[Part] = []
        for blob in p.blobs:
            part = Part(project_id=ctx.project_id, message_id=msg.id, role=blob.role, sha256=blob.sha256,
                        media_type=blob.media_type, size=blob.size, filename=blob.filename,
                        content_id=blob.content_id, converter=blob.converter, meta=dict(blob.meta),
                        derived_from_id=rows[blob.derived_from].id if blob.derived_from is not None else None)
            ctx.session.add(part)
            if any(b.derived_from == len(rows) for b in p.blobs):
                await ctx.session.flush()  # derived parts need their source's id
            rows.append(part)
        for key in dict.fromkeys(inbound.thread.own):
            seen = await ctx.session.scalar(select(ThreadRef.id).where(
                ThreadRef.project_id == ctx.project_id, ThreadRef.value == key))
            if seen is None:
                ctx.session.add(ThreadRef(project_id=ctx.project_id, conversation_id=work.conversation.id,
                                          message_id=msg.id, value=key))
        work.message = msg


class RouteAndEnqueue:
    """Apply the channel routes; put the conversation in the universal queue unless it
    already waits there or has an agent (who then simply sees the new message)."""

    name: ClassVar[str] = "route"

    async def process(self, work: Work, ctx: Ctx) -> None:
        assert work.conversation is not None and work.message is not None
        decision = ctx.routes.match(work.prepared.inbound)
        work.decision = decision
        conv = work.conversation
        if decision.action == "drop":
            work.message.flags = {**work.message.flags, "dropped_by_route": decision.route}
            return
        if conv.queue is None or work.new_conversation:
            conv.queue = decision.queue
            conv.priority = decision.priority
            conv.sla_due_at = decision.sla_due(ctx.now)
        if conv.assignee_id is not None:
            return
        pending = await ctx.session.scalar(select(QueueItem.id).where(
            QueueItem.conversation_id == conv.id, QueueItem.status.in_(("waiting", "leased"))).limit(1))
        if pending is not None:
            return
        work.queue_item = ctx.queue.enqueue(
            ctx.session, project_id=ctx.project_id, conversation_id=conv.id, message_id=work.message.id,
            queue=decision.queue, channel=work.message.channel, priority=decision.priority,
            skills=decision.skills, sla_due_at=conv.sla_due_at, route=decision.route)


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


DEFAULT_STEPS: tuple[Step, ...] = (Dedupe(), ResolveContact(), Thread(), Store(), RouteAndEnqueue(), Announce())

"""The agent's inbox over HTTP: the work list, a contact's whole timeline, notes, closing.

The work list is what the agent holds: conversations whose queue item is leased
to `agent:<id>` (accepted offers) plus open conversations assigned to the agent.
The timeline is every message of every conversation of one contact, across
channels, in id order and paged like the other lists. A private note is a
`Message` with direction `note` (readers of outgoing or incoming messages filter
on direction, so a note is never delivered nor taken for customer input).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import Field
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Agent, Contact, Conversation, Identity, Message, Part, QueueItem, WrapupCode
from storage.states import OPEN_CONVERSATION, QueueItemStatus
from storage.types import utcnow
from umsg.errors import Conflict, NotFound
from umsg.router.store import agent_owner
from umsg.tokens import Principal
from umsg.web import serialize
from umsg.web.auth import actor, ensure_visible
from umsg.web.endpoints import Ctx, json_ok
from umsg.web.errors import bad_request, invalid
from umsg.web.schemas import Body, Id, Page


class NoteIn(Body):
    text: str = Field(min_length=1, max_length=100_000)


class CloseIn(Body):
    """Close a conversation; `wrapup_code` is required when its project defines any."""

    wrapup_code: str | None = Field(default=None, min_length=1, max_length=100)
    note: str | None = Field(default=None, max_length=10_000)
    status: str = Field(default="closed", pattern="^(closed|resolved)$")


class WorkQuery(Body):
    agent_id: Id | None = Field(default=None, description="staff only: whose work (default: the caller)")


def _me_agent(ctx: Ctx, wanted: int | None = None) -> int:
    me = ctx.me
    if me.role == "agent" or wanted is None:
        if me.agent_id is None:
            raise bad_request("this token acts for no agent; give agent_id")
        return me.agent_id
    return wanted


async def _conversation(s: AsyncSession, principal: Principal, conversation_id: int) -> Conversation:
    conv = await s.get(Conversation, conversation_id)
    if conv is None:
        raise NotFound(f"conversation {conversation_id} not found")
    ensure_visible(principal, conv.project_id, "conversation", conversation_id)
    return conv


def _waiting_since(last_in: datetime | None, last_out: datetime | None) -> datetime | None:
    """The customer waits from their last message that no answer followed."""
    if last_in is None or (last_out is not None and last_out >= last_in):
        return None
    return last_in


async def my_work(ctx: Ctx) -> web.StreamResponse:
    q = ctx.query_as(WorkQuery)
    agent_id = _me_agent(ctx, q.agent_id)
    owner = agent_owner(agent_id)
    async with ctx.core.readers() as s:
        held = select(QueueItem.conversation_id).where(QueueItem.status == QueueItemStatus.LEASED,
                                                       QueueItem.lease_owner == owner)
        stmt = (select(Conversation)
                .where(or_(Conversation.id.in_(held),
                           (Conversation.assignee_id == agent_id) & Conversation.status.in_(OPEN_CONVERSATION)))
                .order_by(Conversation.id).limit(500))
        if ctx.me.project_ids is not None:
            stmt = stmt.where(Conversation.project_id.in_(sorted(ctx.me.project_ids)))
        convs = list((await s.scalars(stmt)).all())
        ids = [c.id for c in convs]
        contacts = {c.id: c for c in (await s.scalars(
            select(Contact).where(Contact.id.in_({c.contact_id for c in convs})))).all()} if convs else {}
        items = {i.conversation_id: i for i in (await s.scalars(
            select(QueueItem).where(QueueItem.conversation_id.in_(ids),
                                    QueueItem.status.in_((QueueItemStatus.LEASED, QueueItemStatus.WAITING)))
            .order_by(QueueItem.id))).all()} if ids else {}
        last: dict[tuple[int, str], datetime] = {}
        if ids:
            rows = await s.execute(
                select(Message.conversation_id, Message.direction, func.max(Message.created_at))
                .where(Message.conversation_id.in_(ids), Message.direction.in_(("in", "out")))
                .group_by(Message.conversation_id, Message.direction))
            last = {(cid, d): t for cid, d, t in rows.all()}
    out = []
    for c in convs:
        data = serialize.conversation(c)
        contact = contacts.get(c.contact_id)
        item = items.get(c.id)
        data["contact"] = {"id": c.contact_id, "display_name": contact.display_name if contact else None}
        data["item"] = None if item is None else serialize.queue_item(item)
        data["waiting_since"] = serialize.ts(_waiting_since(last.get((c.id, "in")), last.get((c.id, "out"))))
        data["sla_due_at"] = serialize.ts(item.sla_due_at if item and item.sla_due_at else c.sla_due_at)
        out.append(data)
    return json_ok({"agent_id": agent_id, "items": out})


async def contact_timeline(ctx: Ctx) -> web.StreamResponse:
    q = ctx.query_as(Page)
    contact_id = ctx.path_id("contact")
    async with ctx.core.readers() as s:
        contact = await s.get(Contact, contact_id)
        if contact is None:
            raise NotFound(f"contact {contact_id} not found")
        ensure_visible(ctx.me, contact.project_id, "contact", contact_id)
        msgs = list((await s.scalars(
            select(Message).where(Message.contact_id == contact_id, Message.id > q.after_id)
            .order_by(Message.id).limit(q.limit))).all())
        parts: dict[int, list[Part]] = defaultdict(list)
        if msgs:
            for p in await s.scalars(select(Part).where(Part.message_id.in_([m.id for m in msgs])).order_by(Part.id)):
                parts[p.message_id].append(p)
        identities = (await s.scalars(
            select(Identity).where(Identity.contact_id == contact_id).order_by(Identity.id))).all()
        authors = {m.author_agent_id for m in msgs if m.author_agent_id is not None}
        names = {a.id: a.display_name for a in (await s.scalars(
            select(Agent).where(Agent.id.in_(authors)))).all()} if authors else {}
    page = serialize.page([_timeline_entry(m, parts[m.id], names) for m in msgs], q.limit)
    page["contact"] = serialize.contact(contact, identities)
    return json_ok(page)


def _timeline_entry(m: Message, parts: list[Part], names: dict[int, str]) -> dict[str, Any]:
    data = serialize.message(m, [p for p in parts if p.role != "raw"])
    data["author_name"] = names.get(m.author_agent_id) if m.author_agent_id is not None else None
    return data


async def add_note(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(NoteIn)
    async with ctx.core.sessions() as s:
        conv = await _conversation(s, ctx.me, ctx.path_id("conversation"))
        note = _note(conv, body.text, ctx.me.agent_id, actor(ctx.me))
        s.add(note)
        await s.flush()
        ctx.core.events.add(s, conv.project_id, "message.created",
                            {"message_id": note.id, "conversation_id": conv.id, "channel": conv.channel,
                             "direction": "note", "automatic": False})
        await s.commit()
    ctx.core.events.notify()
    return json_ok(serialize.message(note), status=201)


def _note(conv: Conversation, text: str, agent_id: int | None, by: str,
          flags: dict[str, Any] | None = None) -> Message:
    return Message(project_id=conv.project_id, conversation_id=conv.id, contact_id=conv.contact_id,
                   direction="note", channel=conv.channel, from_addr=by, to_addrs=[], text=text,
                   dedupe_key=f"note:{uuid.uuid4().hex}", status="stored", author_agent_id=agent_id,
                   flags=dict(flags or {}), created_at=utcnow())


async def close_conversation(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(CloseIn)
    me = ctx.me
    conversation_id = ctx.path_id("conversation")
    async with ctx.core.readers() as s:
        conv = await _conversation(s, me, conversation_id)
        codes = {w.code: w.label for w in (await s.scalars(
            select(WrapupCode).where(WrapupCode.project_id == conv.project_id))).all()}
        held = (await s.scalars(select(QueueItem).where(
            QueueItem.conversation_id == conversation_id, QueueItem.status == QueueItemStatus.LEASED))).all()
    if codes and body.wrapup_code not in codes:
        raise invalid([{"field": "body.wrapup_code", "message": f"choose one of: {', '.join(sorted(codes))}"}])
    if body.wrapup_code is not None and not codes:
        raise invalid([{"field": "body.wrapup_code", "message": "this project defines no wrap-up codes"}])
    # Finish the work first: the router frees the agent's capacity from the queue.completed event.
    for item in held:
        owner = item.lease_owner or ""
        if me.role == "agent" and owner != agent_owner(me.agent_id or 0):
            raise Conflict(f"queue item {item.id} is held by {owner}, not by the caller")
        if owner.startswith("agent:"):
            await ctx.core.queue.complete(item.id, owner)
    async with ctx.core.sessions() as s:
        conv = await _conversation(s, me, conversation_id)
        previous = conv.status
        conv.status = body.status
        conv.snoozed_until = None
        text = f"Closed with wrap-up {body.wrapup_code}" if body.wrapup_code else "Closed"
        if body.note:
            text += f": {body.note}"
        note = _note(conv, text, me.agent_id, actor(me),
                     {"wrapup": body.wrapup_code, "wrapup_label": codes.get(body.wrapup_code or "")})
        s.add(note)
        await s.flush()
        ctx.core.events.add(s, conv.project_id, "conversation.updated", {
            "conversation_id": conv.id, "by": actor(me), "wrapup": body.wrapup_code,
            "changes": {"status": {"from": previous, "to": body.status}}})
        await s.commit()
        await s.refresh(conv)
    ctx.core.events.notify()
    data = serialize.conversation(conv)
    data["wrapup"] = body.wrapup_code
    return json_ok(data)

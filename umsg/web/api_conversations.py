"""Conversations: listing, reading, updating (status, priority, assignee, snooze) and replying."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import AgentProject, Conversation, Message, Part
from storage.states import ConversationStatus
from umsg.errors import NotFound
from umsg.model import OutboundPart
from umsg.tokens import Principal
from umsg.web import serialize
from umsg.web.auth import actor, ensure_visible, scoped
from umsg.web.endpoints import Ctx, json_ok
from umsg.web.errors import invalid
from umsg.web.schemas import ConversationPatch, ConversationQuery, Page, ReplyIn


async def _load(s: AsyncSession, principal: Principal, conversation_id: int) -> Conversation:
    conv = await s.get(Conversation, conversation_id)
    if conv is None:
        raise NotFound(f"conversation {conversation_id} not found")
    ensure_visible(principal, conv.project_id, "conversation", conversation_id)
    return conv


async def list_conversations(ctx: Ctx) -> web.StreamResponse:
    q = ctx.query_as(ConversationQuery)
    stmt = select(Conversation).where(Conversation.id > q.after_id).order_by(Conversation.id).limit(q.limit)
    stmt = scoped(stmt, Conversation.project_id, ctx.me)
    if q.status is not None:
        stmt = stmt.where(Conversation.status == q.status)
    if q.channel is not None:
        stmt = stmt.where(Conversation.channel == q.channel)
    if q.assignee == "none":
        stmt = stmt.where(Conversation.assignee_id.is_(None))
    elif q.assignee is not None:
        stmt = stmt.where(Conversation.assignee_id == q.assignee)
    async with ctx.core.sessions() as s:
        rows = (await s.scalars(stmt)).all()
    return json_ok(serialize.page([serialize.conversation(c) for c in rows], q.limit))


async def get_conversation(ctx: Ctx) -> web.StreamResponse:
    async with ctx.core.sessions() as s:
        conv = await _load(s, ctx.me, ctx.path_id("conversation"))
    return json_ok(serialize.conversation(conv))


async def patch_conversation(ctx: Ctx) -> web.StreamResponse:
    patch = ctx.body_as(ConversationPatch)
    given = patch.model_fields_set
    async with ctx.core.sessions() as s:
        conv = await _load(s, ctx.me, ctx.path_id("conversation"))
        if "assignee_id" in given and patch.assignee_id is not None:
            member = await s.get(AgentProject, (patch.assignee_id, conv.project_id))
            if member is None:
                raise invalid([{
                    "field": "body.assignee_id",
                    "message": f"agent {patch.assignee_id} does not work in this conversation's project",
                }])
        new: dict[str, Any] = {name: getattr(patch, name) for name in given}
        status = new.get("status", conv.status)
        if status == ConversationStatus.SNOOZED and new.get("snoozed_until", conv.snoozed_until) is None:
            raise invalid([{"field": "body.snoozed_until", "message": "required when status is snoozed"}])
        if "status" in new and status != ConversationStatus.SNOOZED and "snoozed_until" not in new:
            new["snoozed_until"] = None  # waking up (or closing) ends the snooze
        changes: dict[str, dict[str, Any]] = {}
        for name, value in new.items():
            old = getattr(conv, name)
            if old != value:
                changes[name] = {"from": _plain(old), "to": _plain(value)}
                setattr(conv, name, value)
        if changes:
            ctx.core.events.add(
                s,
                conv.project_id,
                "conversation.updated",
                {"conversation_id": conv.id, "changes": changes, "by": actor(ctx.me)},
            )
            await s.commit()
            ctx.core.events.notify()
            await s.refresh(conv)
    return json_ok(serialize.conversation(conv))


def _plain(value: Any) -> Any:
    return serialize.ts(value) if hasattr(value, "isoformat") else value


async def list_conversation_messages(ctx: Ctx) -> web.StreamResponse:
    q = ctx.query_as(Page)
    async with ctx.core.sessions() as s:
        conv = await _load(s, ctx.me, ctx.path_id("conversation"))
        msgs = (
            await s.scalars(
                select(Message)
                .where(Message.conversation_id == conv.id, Message.id > q.after_id)
                .order_by(Message.id)
                .limit(q.limit)
            )
        ).all()
        parts: dict[int, list[Part]] = defaultdict(list)
        if msgs:
            rows = await s.scalars(
                select(Part).where(Part.message_id.in_([m.id for m in msgs])).order_by(Part.id)
            )
            for p in rows:
                parts[p.message_id].append(p)
    return json_ok(serialize.page([serialize.message(m, parts[m.id]) for m in msgs], q.limit))


async def reply(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(ReplyIn)
    me = ctx.me
    async with ctx.core.sessions() as s:
        conv = await _load(s, me, ctx.path_id("conversation"))
    outbox = ctx.core.outbox
    msg = await outbox.reply(
        project_id=conv.project_id,
        conversation_id=conv.id,
        text=body.text,
        subject=body.subject,
        html=body.html,
        channel=body.channel,
        to=body.to,
        agent_id=me.agent_id,
        attachments=[OutboundPart(media_type=a.media_type, data=a.data_base64, filename=a.filename)
                     for a in body.attachments],
        attach_part_ids=body.attach_part_ids,
    )
    return json_ok(serialize.message(msg), status=202)

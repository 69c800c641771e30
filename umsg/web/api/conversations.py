"""Conversations: listing, reading, updating (status, priority, assignee, snooze) and replying.

The queries and writes are `umsg.conversations.Conversations`; this module parses,
authorises (`ensure_visible`) and serialises. A reply is queued by `core.outbox`, whose
outbound authority (umsg/outbound/authority.py) refuses another project's channel, an
address that is not the contact's and a sender that is not the channel's: a 403.
"""

from __future__ import annotations

from aiohttp import web

from umsg.conversations import AssigneeNotInProject, ConversationFilter, Conversations, Guard, SnoozeNeedsUntil
from umsg.model import OutboundPart
from umsg.tokens import Principal
from umsg.web import serialize
from umsg.web.auth import actor, ensure_visible
from umsg.web.endpoints import Ctx, json_ok
from umsg.web.errors import invalid
from umsg.web.schemas import ConversationPatch, ConversationQuery, Page, ReplyIn


def _conversations(ctx: Ctx) -> Conversations:
    return Conversations(ctx.core.sessions, ctx.core.events, ctx.core.readers)


def _visible_to(principal: Principal, conversation_id: int) -> Guard:
    def guard(project_id: int | None) -> None:
        ensure_visible(principal, project_id, "conversation", conversation_id)
    return guard


async def list_conversations(ctx: Ctx) -> web.StreamResponse:
    q = ctx.query_as(ConversationQuery)
    rows = await _conversations(ctx).page(ConversationFilter(
        after_id=q.after_id, limit=q.limit, project_ids=ctx.me.project_ids,
        status=q.status, channel=q.channel, assignee=q.assignee,
    ))
    return json_ok(serialize.page([serialize.conversation(c) for c in rows], q.limit))


async def get_conversation(ctx: Ctx) -> web.StreamResponse:
    conversation_id = ctx.path_id("conversation")
    conv = await _conversations(ctx).get(conversation_id, _visible_to(ctx.me, conversation_id))
    return json_ok(serialize.conversation(conv))


async def patch_conversation(ctx: Ctx) -> web.StreamResponse:
    patch = ctx.body_as(ConversationPatch)
    conversation_id = ctx.path_id("conversation")
    given = {name: getattr(patch, name) for name in patch.model_fields_set}
    try:
        conv = await _conversations(ctx).update(
            conversation_id, _visible_to(ctx.me, conversation_id), given, by=actor(ctx.me)
        )
    except AssigneeNotInProject as exc:
        raise invalid([{"field": "body.assignee_id", "message": str(exc)}]) from exc
    except SnoozeNeedsUntil as exc:
        raise invalid([{"field": "body.snoozed_until", "message": str(exc)}]) from exc
    return json_ok(serialize.conversation(conv))


async def list_conversation_messages(ctx: Ctx) -> web.StreamResponse:
    q = ctx.query_as(Page)
    conversation_id = ctx.path_id("conversation")
    rows = await _conversations(ctx).messages(
        conversation_id, _visible_to(ctx.me, conversation_id), after_id=q.after_id, limit=q.limit
    )
    return json_ok(serialize.page([serialize.message(m, parts) for m, parts in rows], q.limit))


async def reply(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(ReplyIn)
    me = ctx.me
    conversation_id = ctx.path_id("conversation")
    conv = await _conversations(ctx).get(conversation_id, _visible_to(me, conversation_id))
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
        # Staff may start a new outbound conversation to a new address of the contact; nobody
        # may send to an address that is not the contact's once the customer wrote (403).
        may_start=me.role in ("admin", "supervisor"),
    )
    return json_ok(serialize.message(msg), status=202)

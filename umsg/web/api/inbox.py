"""The agent's inbox over HTTP: the work list, a contact's whole timeline, notes, closing.

The work list, notes and closing are `umsg.inbox_work.InboxWork`; the timeline (every
message of every conversation of one contact, across channels, in id order and paged like
the other lists) is `umsg.contacts.Contacts.timeline`. This module parses, authorises
(`ensure_visible`, the caller's role) and serialises.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from aiohttp import web
from pydantic import Field

from umsg.contacts import Contacts, TimelineEntry
from umsg.inbox_work import InboxWork, NoWrapupCodes, WrapupCodeRequired
from umsg.router.store import agent_owner
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


def _inbox(ctx: Ctx) -> InboxWork:
    return InboxWork(ctx.core.sessions, ctx.core.events, ctx.core.queue, readers=ctx.core.readers)


async def my_work(ctx: Ctx) -> web.StreamResponse:
    q = ctx.query_as(WorkQuery)
    agent_id = _me_agent(ctx, q.agent_id)
    out = []
    for w in await _inbox(ctx).work(agent_id, ctx.me.project_ids):
        c = w.conversation
        data = serialize.conversation(c)
        data["contact"] = {"id": c.contact_id, "display_name": w.contact.display_name if w.contact else None}
        data["item"] = None if w.item is None else serialize.queue_item(w.item)
        data["waiting_since"] = serialize.ts(w.waiting_since)
        data["sla_due_at"] = serialize.ts(w.sla_due_at)
        out.append(data)
    return json_ok({"agent_id": agent_id, "items": out})


async def contact_timeline(ctx: Ctx) -> web.StreamResponse:
    q = ctx.query_as(Page)
    contact_id = ctx.path_id("contact")
    guard = partial(ensure_visible, ctx.me, kind="contact", ident=contact_id)
    timeline = await Contacts(ctx.core.sessions, ctx.core.events, readers=ctx.core.readers).timeline(
        contact_id, guard, after_id=q.after_id, limit=q.limit)
    page = serialize.page([_timeline_entry(e) for e in timeline.entries], q.limit)
    page["contact"] = serialize.contact(timeline.contact, timeline.identities)
    return json_ok(page)


def _timeline_entry(e: TimelineEntry) -> dict[str, Any]:
    data = serialize.message(e.message, [p for p in e.parts if p.role != "raw"])
    data["author_name"] = e.author_name
    return data


async def add_note(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(NoteIn)
    conversation_id = ctx.path_id("conversation")
    guard = partial(ensure_visible, ctx.me, kind="conversation", ident=conversation_id)
    note = await _inbox(ctx).add_note(conversation_id, guard, body.text, agent_id=ctx.me.agent_id, by=actor(ctx.me))
    return json_ok(serialize.message(note), status=201)


async def close_conversation(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(CloseIn)
    me = ctx.me
    conversation_id = ctx.path_id("conversation")
    guard = partial(ensure_visible, me, kind="conversation", ident=conversation_id)
    try:
        conv = await _inbox(ctx).close(
            conversation_id, guard, status=body.status, wrapup_code=body.wrapup_code, note=body.note,
            agent_id=me.agent_id, by=actor(me),
            # An agent closes only work leased to itself; staff may close anyone's.
            holder=agent_owner(me.agent_id or 0) if me.role == "agent" else None,
        )
    except (WrapupCodeRequired, NoWrapupCodes) as exc:
        raise invalid([{"field": "body.wrapup_code", "message": str(exc)}]) from exc
    data = serialize.conversation(conv)
    data["wrapup"] = body.wrapup_code
    return json_ok(data)

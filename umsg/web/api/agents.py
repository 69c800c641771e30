"""Agents: listing, creating (admin), reading, and changing presence state.

The queries and writes are `umsg.agents.Agents` (which also applies who sees which agent);
this module parses, checks roles and serialises.
"""

from __future__ import annotations

from aiohttp import web

from umsg.agents import Agents, AgentView, NewAgent, UnknownProject
from umsg.web import serialize
from umsg.web.auth import actor
from umsg.web.endpoints import Ctx, json_ok
from umsg.web.errors import forbidden, invalid
from umsg.web.schemas import AgentIn, AgentStateIn, Page


def _agents(ctx: Ctx) -> Agents:
    return Agents(ctx.core.sessions, ctx.core.events)


def _json(view: AgentView) -> serialize.Json:
    return serialize.agent(view.agent, view.projects, view.skills)


async def list_agents(ctx: Ctx) -> web.StreamResponse:
    q = ctx.query_as(Page)
    rows = await _agents(ctx).page(ctx.me, after_id=q.after_id, limit=q.limit)
    return json_ok(serialize.page([serialize.agent(a, projects) for a, projects in rows], q.limit))


async def create_agent(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(AgentIn)
    me = ctx.me
    if body.skills and not body.projects:
        raise invalid([{"field": "body.skills", "message": "skills belong to projects; give projects too"}])
    new = NewAgent(login=body.login, display_name=body.display_name, email=body.email,
                   capacity=body.capacity, projects=body.projects, skills=body.skills)
    try:
        view = await _agents(ctx).create(new, me.sees)
    except UnknownProject as exc:
        raise invalid([{"field": f"body.projects[{exc.index}]", "message": str(exc)}]) from exc
    return json_ok(_json(view), status=201)


async def get_agent(ctx: Ctx) -> web.StreamResponse:
    return json_ok(_json(await _agents(ctx).get(ctx.path_id("agent"), ctx.me)))


async def put_agent_state(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(AgentStateIn)
    me = ctx.me
    agent_id = ctx.path_id("agent")
    if me.role == "agent" and me.agent_id != agent_id:
        raise forbidden("an agent token may only change its own state")
    if (problem := ctx.core.settings.router.check_reason(body.state, body.reason)) is not None:
        raise invalid([{"field": "body.reason", "message": problem}])
    view = await _agents(ctx).set_state(agent_id, me, body.state, body.reason, by=actor(me))
    return json_ok(_json(view))

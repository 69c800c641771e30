"""Browser sign-in: a login and password become an agent-bound bearer token.

`POST /api/v1/session` is the only way the inbox gets a token; the token is an
ordinary API token bound to the agent (so it sees only the agent's projects) with
role `supervisor` when the agent supervises any of its projects, else `agent`.
`GET /api/v1/session` tells the page who it is and what it may pick (states,
reason codes, wrap-up codes); `DELETE` signs out by revoking the token.
"""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import Field
from sqlalchemy import select, update

from storage.models import Agent, AgentProject, ApiToken, Project, WrapupCode
from storage.types import utcnow
from umsg.errors import NotFound
from umsg.router.settings import STATES
from umsg.tokens import create_token, revoke
from umsg.web import serialize
from umsg.web.endpoints import Ctx, json_ok
from umsg.web.errors import forbidden, unauthorized
from umsg.web.passwords import hash_password, verify_password
from umsg.web.schemas import Body

# States an agent may pick by hand; `missed` is the router's, after an ignored offer.
PICKABLE_STATES = tuple(s for s in STATES if s != "missed")


class SessionIn(Body):
    login: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1000)


class PasswordIn(Body):
    """A new password; `role` (admin only) sets what the agent's sessions may do."""

    password: str = Field(min_length=8, max_length=1000)
    role: Literal["agent", "supervisor"] | None = None


async def create_session(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(SessionIn)
    async with ctx.core.readers() as s:
        agent = await s.scalar(select(Agent).where(Agent.login == body.login))
        roles = set() if agent is None else set(
            (await s.scalars(select(AgentProject.role).where(AgentProject.agent_id == agent.id))).all())
    ok = await verify_password(body.password, agent.password_hash if agent is not None else None)
    if agent is None or not ok:
        raise unauthorized("the login or the password is wrong")
    role = "supervisor" if "supervisor" in roles else "agent"
    token = await create_token(ctx.core.sessions, role, agent_id=agent.id, label="inbox session")
    return json_ok({"token": token, "role": role, "agent": serialize.agent(agent)}, status=201)


async def get_session(ctx: Ctx) -> web.StreamResponse:
    me = ctx.me
    settings = ctx.core.settings.router
    async with ctx.core.readers() as s:
        agent = None if me.agent_id is None else await s.get(Agent, me.agent_id)
        stmt = select(Project.id, Project.slug, Project.name).order_by(Project.slug)
        if me.project_ids is not None:
            stmt = stmt.where(Project.id.in_(sorted(me.project_ids)))
        projects = [{"id": i, "slug": slug, "name": name} for i, slug, name in (await s.execute(stmt)).all()]
        codes = select(WrapupCode).order_by(WrapupCode.project_id, WrapupCode.code)
        if me.project_ids is not None:
            codes = codes.where(WrapupCode.project_id.in_(sorted(me.project_ids)))
        wrapups = [{"id": w.id, "project_id": w.project_id, "code": w.code, "label": w.label}
                   for w in (await s.scalars(codes)).all()]
    return json_ok({
        "role": me.role,
        "agent": None if agent is None else serialize.agent(agent),
        "projects": projects,
        "states": list(PICKABLE_STATES),
        "reason_codes": {k: list(v) for k, v in settings.reason_codes.items()},
        "offer_timeout_seconds": settings.offer_timeout_seconds,
        "wrapup_codes": wrapups,
        # The channel instances replies can leave on, and the identity kind each sends to; empty
        # when the gateway runs without configured instances (the inbox then uses type names).
        "channels": [{"name": i.name, "type": i.type,
                      "identity_kind": i.identity_kind.value if i.identity_kind is not None else None}
                     for i in ctx.core.channels.all() if i.enabled],
    })


async def delete_session(ctx: Ctx) -> web.StreamResponse:
    await revoke(ctx.core.sessions, ctx.me.token_id)
    return web.Response(status=204)


async def put_password(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(PasswordIn)
    me = ctx.me
    agent_id = ctx.path_id("agent")
    if me.role != "admin" and me.agent_id != agent_id:
        raise forbidden("only an admin may set another agent's password")
    if body.role is not None and me.role != "admin":
        raise forbidden("only an admin may change an agent's role")
    hashed = await hash_password(body.password)
    async with ctx.core.sessions() as s:
        agent = await s.get(Agent, agent_id)
        if agent is None or (me.project_ids is not None and me.agent_id != agent_id):
            raise NotFound(f"agent {agent_id} not found")
        agent.password_hash = hashed
        if body.role is not None:
            await s.execute(update(AgentProject).where(AgentProject.agent_id == agent_id).values(role=body.role))
        # A new password ends the agent's other browser sessions (a leaked one stops working).
        await s.execute(
            update(ApiToken)
            .where(ApiToken.agent_id == agent_id, ApiToken.label == "inbox session",
                   ApiToken.id != me.token_id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        await s.commit()
    return json_ok({"agent_id": agent_id, "password_set": True, "role": body.role})

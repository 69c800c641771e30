"""Browser sign-in: a login and password become an agent-bound bearer token.

`POST /api/v1/session` is the only way the inbox gets a token; the token is an
ordinary API token bound to the agent (so it sees only the agent's projects) with
role `supervisor` when the agent supervises any of its projects, else `agent`.
`GET /api/v1/session` tells the page who it is and what it may pick (states,
reason codes, wrap-up codes); `DELETE` signs out by revoking the token.

The queries and writes are `umsg.signin.SignIn`; this module parses, checks roles, checks
and hashes passwords (off the event loop) and serialises.
"""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import Field

from umsg.router.settings import STATES
from umsg.signin import SignIn
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


def _signin(ctx: Ctx) -> SignIn:
    return SignIn(ctx.core.sessions, ctx.core.readers)


async def create_session(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(SessionIn)
    svc = _signin(ctx)
    found = await svc.candidate(body.login)
    # Checked even for an unknown login, so a wrong login costs as long as a wrong password.
    ok = await verify_password(body.password, found.agent.password_hash if found is not None else None)
    if found is None or not ok:
        raise unauthorized("the login or the password is wrong")
    token = await svc.open(found)
    return json_ok({"token": token, "role": found.role, "agent": serialize.agent(found.agent)}, status=201)


async def get_session(ctx: Ctx) -> web.StreamResponse:
    me = ctx.me
    settings = ctx.core.settings.router
    who = await _signin(ctx).who(me)
    return json_ok({
        "role": me.role,
        "agent": None if who.agent is None else serialize.agent(who.agent),
        "projects": [{"id": p.id, "slug": p.slug, "name": p.name} for p in who.projects],
        "states": list(PICKABLE_STATES),
        "reason_codes": {k: list(v) for k, v in settings.reason_codes.items()},
        "offer_timeout_seconds": settings.offer_timeout_seconds,
        "wrapup_codes": [{"id": w.id, "project_id": w.project_id, "code": w.code, "label": w.label}
                         for w in who.wrapup_codes],
        # The channel instances replies can leave on, and the identity kind each sends to; empty
        # when the gateway runs without configured instances (the inbox then uses type names).
        "channels": [{"name": i.name, "type": i.type,
                      "identity_kind": i.identity_kind.value if i.identity_kind is not None else None}
                     for i in ctx.core.channels.all() if i.enabled],
    })


async def delete_session(ctx: Ctx) -> web.StreamResponse:
    await _signin(ctx).close(ctx.me.token_id)
    return web.Response(status=204)


async def put_password(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(PasswordIn)
    me = ctx.me
    agent_id = ctx.path_id("agent")
    if me.role != "admin" and me.agent_id != agent_id:
        raise forbidden("only an admin may set another agent's password")
    if body.role is not None and me.role != "admin":
        raise forbidden("only an admin may change an agent's role")
    hashed = await hash_password(body.password)  # in a thread: scrypt would stall the loop
    await _signin(ctx).set_password(agent_id, me, hashed, body.role)
    return json_ok({"agent_id": agent_id, "password_set": True, "role": body.role})

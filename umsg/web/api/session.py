"""Browser sign-in: a login and password become an agent-bound bearer token.

`POST /api/v1/session` is the only way the inbox gets a token; the token is an
ordinary API token bound to the agent (so it sees only the agent's projects) with
role `supervisor` when the agent supervises any of its projects, else `agent`.
`GET /api/v1/session` tells the page who it is and what it may pick (states,
reason codes, wrap-up codes); `DELETE` signs out by revoking the token.

A session token expires after `accounts.session_idle_seconds` unless the page calls
`POST /api/v1/session/refresh`, which answers a new token and revokes the old one; refreshes
end `accounts.session_absolute_seconds` after sign-in. Failed sign-ins are counted per login
and per client address: past the limit, attempts are refused with 429 and Retry-After for the
lock-out period, even with the right password. A password stored with older hash parameters is
re-hashed at the current ones on a successful sign-in. Changing one's own password needs the
current one (an admin setting another agent's does not).

The queries and writes are `umsg.signin.SignIn`; this module parses, checks roles, checks
and hashes passwords (off the event loop) and serialises.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Literal

from aiohttp import web
from pydantic import Field

from umsg.config import AccountSettings
from umsg.errors import NotFound
from umsg.router.settings import STATES
from umsg.signin import Lifetime, SignIn, Throttle
from umsg.tokens import Rotated
from umsg.web import serialize
from umsg.web.endpoints import Ctx, json_ok
from umsg.web.errors import HttpProblem, forbidden, unauthorized
from umsg.web.passwords import HASHER, needs_rehash
from umsg.web.schemas import Body

# States an agent may pick by hand; `missed` is the router's, after an ignored offer.
PICKABLE_STATES = tuple(s for s in STATES if s != "missed")


class SessionIn(Body):
    login: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1000)


class PasswordIn(Body):
    """A new password; `current_password` is required to change one's own; `role` (admin only)
    sets what the agent's sessions may do."""

    password: str = Field(min_length=8, max_length=1000)
    current_password: str | None = Field(default=None, min_length=1, max_length=1000)
    role: Literal["agent", "supervisor"] | None = None


def _signin(ctx: Ctx) -> SignIn:
    return SignIn(ctx.core.sessions, ctx.core.readers)


def _throttle(accounts: AccountSettings) -> Throttle:
    return Throttle(accounts.max_failures_per_login, accounts.max_failures_per_address,
                    timedelta(seconds=accounts.failure_window_seconds), timedelta(seconds=accounts.lockout_seconds))


def _lifetime(accounts: AccountSettings) -> Lifetime:
    return Lifetime(timedelta(seconds=accounts.session_idle_seconds),
                    timedelta(seconds=accounts.session_absolute_seconds))


def too_many_attempts(wait_seconds: float) -> HttpProblem:
    """429: the login or the client address is locked out for `wait_seconds`."""
    wait = max(1, math.ceil(wait_seconds))
    return HttpProblem(429, "too_many_attempts",
                       f"too many failed sign-ins; try again in {wait} seconds",
                       headers={"Retry-After": str(wait)})


def _session(rotated: Rotated) -> dict[str, object]:
    return {"token": rotated.token, "expires_at": rotated.expires_at.isoformat()}


async def _check_password(ctx: Ctx, login: str, password: str, stored: str | None) -> bool:
    """Check `password` under the login's and the client address's throttle; 429 while locked."""
    svc = _signin(ctx)
    limits = _throttle(ctx.core.settings.accounts)
    address = ctx.request.remote
    wait = await svc.admit(login, address, limits)
    if wait is not None:
        raise too_many_attempts(wait)
    # Checked even for an unknown login (stored None), so a wrong login costs as long as a wrong password.
    ok = await ctx.request.app[HASHER].verify(password, stored)
    if ok:
        await svc.succeeded(login, address)
    else:
        await svc.failed(login, address, limits)
    return ok


async def create_session(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(SessionIn)
    svc = _signin(ctx)
    found = await svc.candidate(body.login)
    stored = found.agent.password_hash if found is not None else None
    ok = await _check_password(ctx, body.login, body.password, stored)
    if found is None or not ok:
        raise unauthorized("the login or the password is wrong")
    if stored is not None and needs_rehash(stored):
        # Transparent upgrade: the password is known right now, and only now.
        await svc.rehash(found.agent.id, stored, await ctx.request.app[HASHER].hash(body.password))
    opened = await svc.start(found, _lifetime(ctx.core.settings.accounts))
    return json_ok({**_session(opened), "role": found.role, "agent": serialize.agent(found.agent)}, status=201)


async def refresh_session(ctx: Ctx) -> web.StreamResponse:
    rotated = await _signin(ctx).refresh(ctx.me.token_id, _lifetime(ctx.core.settings.accounts))
    if rotated is None:
        raise unauthorized("only a live browser session can be refreshed; sign in again", invalid_token=True)
    return json_ok(_session(rotated))


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
    if me.agent_id == agent_id:
        # One's own password: a stolen session token alone must not be able to take the account.
        current = await _signin(ctx).password_of(agent_id)
        if current is None:
            raise NotFound(f"agent {agent_id} not found")
        if body.current_password is None:
            raise forbidden("changing your own password needs current_password")
        if not await _check_password(ctx, current[0], body.current_password, current[1]):
            raise forbidden("the current password is wrong")
    hashed = await ctx.request.app[HASHER].hash(body.password)  # in a thread: scrypt would stall the loop
    await _signin(ctx).set_password(agent_id, me, hashed, body.role)
    return json_ok({"agent_id": agent_id, "password_set": True, "role": body.role})

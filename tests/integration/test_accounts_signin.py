"""Accounts attacked as a hostile client would, on a real loopback socket: password guessing
(per login and per address, with the lock-out's end), expiring and rotating sessions, revoked and
expired tokens, changing a password without the current one, the transparent re-hash of an old
hash, and scraping /metrics without a token. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import select, update

from storage.models import Agent, AgentProject, ApiToken, SigninThrottle
from storage.types import utcnow
from umsg.core import Core
from umsg.tokens import create_token, hash_token
from umsg.web import create_app
from umsg.web.passwords import ScryptParams, hash_password_sync, verify_password_sync

PASSWORD = "correct horse battery"
PER_LOGIN = 5
PER_ADDRESS = 12
# Long enough that 300 refused attempts fit inside it on a slow, shared machine; the end of a
# lock-out is shown with SHORT_LOCKOUT, on a site of its own.
LOCKOUT = 120.0
SHORT_LOCKOUT = 3.0
METRICS_TOKEN = "scrape-me-please"


@dataclass
class Site:
    core: Core
    url: str
    http: aiohttp.ClientSession
    alice: int
    admin: str

    async def call(self, method: str, path: str, token: str | None = None,
                   body: Any = None) -> tuple[int, Any, dict[str, str]]:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        async with self.http.request(method, self.url + path, headers=headers,
                                     data=None if body is None else json.dumps(body)) as resp:
            raw = await resp.read()
            data = json.loads(raw) if raw and resp.content_type == "application/json" else raw
            return resp.status, data, dict(resp.headers)

    async def sign_in(self, login: str, password: str) -> tuple[int, Any, dict[str, str]]:
        return await self.call("POST", "/api/v1/session", body={"login": login, "password": password})


@contextlib.asynccontextmanager
async def _serve(make_settings: Any, lockout: float) -> AsyncIterator[Site]:
    core = await Core.open(make_settings(accounts={
        "max_failures_per_login": PER_LOGIN, "max_failures_per_address": PER_ADDRESS,
        "failure_window_seconds": 600, "lockout_seconds": lockout, "metrics_token": METRICS_TOKEN}))
    await core.start()
    try:
        pid = await core.ensure_project(core.settings.project)
        stored = await asyncio.to_thread(hash_password_sync, PASSWORD)
        async with core.sessions() as s:
            agent = Agent(login="alice", display_name="Alice", password_hash=stored)
            s.add(agent)
            await s.flush()
            s.add(AgentProject(agent_id=agent.id, project_id=pid))
            await s.commit()
            alice = agent.id
        admin = await create_token(core.sessions, "admin", label="test admin")
        # A connection per request: refused guesses arrive as separate clients would send them.
        connector = aiohttp.TCPConnector(limit=20, force_close=True)
        async with TestServer(create_app(core), host="127.0.0.1") as server, \
                aiohttp.ClientSession(connector=connector) as http:
            yield Site(core, str(server.make_url("")).rstrip("/"), http, alice, admin)
    finally:
        await core.aclose()


@pytest.fixture
async def site(make_settings: Any) -> AsyncIterator[Site]:
    async with _serve(make_settings, LOCKOUT) as served:
        yield served


async def _throttle_rows(core: Core) -> dict[str, SigninThrottle]:
    async with core.readers() as s:
        return {r.key: r for r in await s.scalars(select(SigninThrottle))}


async def test_300_wrong_passwords_lock_the_login_even_for_the_right_one(site: Site) -> None:
    statuses = await asyncio.gather(*(site.sign_in("alice", f"guess-{i}") for i in range(300)))
    codes = [status for status, _body, _headers in statuses]
    # Exactly the limit was checked (counted before each hash, so parallel guesses cannot overshoot).
    assert codes.count(401) == PER_LOGIN, [(i, c) for i, c in enumerate(codes) if c == 401]
    assert codes.count(429) == 300 - PER_LOGIN
    status, body, headers = await site.sign_in("alice", PASSWORD)
    assert status == 429, body  # the right password while locked out is refused too
    assert body["error"]["code"] == "too_many_attempts"
    assert 1 <= int(headers["Retry-After"]) <= LOCKOUT
    # Durable: the lock is a row in the store, seen by every process on it.
    rows = await _throttle_rows(site.core)
    assert rows["login:alice"].locked_until is not None


async def test_the_lockout_ends_after_its_period_and_success_resets_the_count(make_settings: Any) -> None:
    async with _serve(make_settings, SHORT_LOCKOUT) as site:
        for i in range(PER_LOGIN):
            assert (await site.sign_in("alice", f"guess-{i}"))[0] == 401
        status, _body, headers = await site.sign_in("alice", PASSWORD)
        assert status == 429
        wait = int(headers["Retry-After"])
        assert 1 <= wait <= SHORT_LOCKOUT
        # Refused attempts do not extend the lock-out.
        assert (await site.sign_in("alice", "still guessing"))[0] == 429
        await asyncio.sleep(wait + 0.5)
        status, body, _headers = await site.sign_in("alice", PASSWORD)
        assert status == 201, body
        assert "login:alice" not in await _throttle_rows(site.core)  # success resets the login's count
        for i in range(PER_LOGIN):  # a full allowance again
            assert (await site.sign_in("alice", f"again-{i}"))[0] == 401
        assert (await site.sign_in("alice", PASSWORD))[0] == 429


async def test_guessing_many_logins_from_one_address_locks_the_address(site: Site) -> None:
    codes = [(await site.sign_in(f"nobody{i}", "x"))[0] for i in range(PER_ADDRESS + 3)]
    assert codes[:PER_ADDRESS] == [401] * PER_ADDRESS and codes[PER_ADDRESS:] == [429] * 3
    status, _body, headers = await site.sign_in("alice", PASSWORD)
    assert status == 429 and int(headers["Retry-After"]) >= 1
    # A second web app on the same store (as a second process would be) sees the same lock.
    async with TestServer(create_app(site.core), host="127.0.0.1") as other:
        other_url = str(other.make_url("")).rstrip("/")
        async with site.http.post(f"{other_url}/api/v1/session",
                                  json={"login": "alice", "password": PASSWORD}) as resp:
            assert resp.status == 429


async def test_sessions_expire_rotate_on_refresh_and_the_old_token_is_refused(site: Site) -> None:
    status, body, _headers = await site.sign_in("alice", PASSWORD)
    assert status == 201
    first = body["token"]
    assert body["expires_at"]
    assert (await site.call("GET", "/api/v1/session", first))[0] == 200
    status, refreshed, _headers = await site.call("POST", "/api/v1/session/refresh", first)
    assert status == 200 and refreshed["token"] != first
    second = refreshed["token"]
    assert (await site.call("GET", "/api/v1/session", first))[0] == 401  # rotated away
    assert (await site.call("POST", "/api/v1/session/refresh", first))[0] == 401  # no replay
    assert (await site.call("GET", "/api/v1/session", second))[0] == 200
    # An API token is not a browser session: it cannot be refreshed into one.
    assert (await site.call("POST", "/api/v1/session/refresh", site.admin))[0] == 401

    # Idle too long: the session's expiry passed.
    async with site.core.sessions() as s:
        await s.execute(update(ApiToken).where(ApiToken.token_hash == hash_token(second))
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
        await s.commit()
    status, body, headers = await site.call("GET", "/api/v1/session", second)
    assert status == 401 and "invalid_token" in headers["WWW-Authenticate"]
    assert (await site.call("POST", "/api/v1/session/refresh", second))[0] == 401

    # The absolute lifetime: a refresh never goes past it, and past it there is none.
    _status, body, _headers = await site.sign_in("alice", PASSWORD)
    third = body["token"]
    async with site.core.sessions() as s:
        await s.execute(update(ApiToken).where(ApiToken.token_hash == hash_token(third))
                        .values(renewable_until=utcnow() - timedelta(seconds=1)))
        await s.commit()
    assert (await site.call("POST", "/api/v1/session/refresh", third))[0] == 401


async def test_expired_and_revoked_api_tokens_answer_401_and_old_tokens_keep_working(site: Site) -> None:
    soon = await create_token(site.core.sessions, "admin", expires_at=utcnow() + timedelta(hours=1))
    assert (await site.call("GET", "/api/v1/agents", soon))[0] == 200
    async with site.core.sessions() as s:
        await s.execute(update(ApiToken).where(ApiToken.token_hash == hash_token(soon))
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
        await s.commit()
    assert (await site.call("GET", "/api/v1/agents", soon))[0] == 401
    # A token without expiry (every token made before migration 0012) keeps working.
    assert (await site.call("GET", "/api/v1/agents", site.admin))[0] == 200
    status, _body, _headers = await site.sign_in("alice", PASSWORD)
    assert status == 201
    _status, body, _headers = await site.sign_in("alice", PASSWORD)
    assert (await site.call("DELETE", "/api/v1/session", body["token"]))[0] == 204
    assert (await site.call("GET", "/api/v1/session", body["token"]))[0] == 401


async def test_changing_ones_own_password_needs_the_current_one(site: Site) -> None:
    _status, body, _headers = await site.sign_in("alice", PASSWORD)
    mine = body["token"]
    path = f"/api/v1/agents/{site.alice}/password"
    status, body, _headers = await site.call("PUT", path, mine, {"password": "stolen session pw"})
    assert status == 403, body
    status, body, _headers = await site.call("PUT", path, mine, {"password": "stolen session pw",
                                                                 "current_password": "wrong"})
    assert status == 403 and "current password" in body["error"]["message"]
    assert (await site.sign_in("alice", "stolen session pw"))[0] == 401  # nothing changed
    status, body, _headers = await site.call("PUT", path, mine, {"password": "a new password",
                                                                 "current_password": PASSWORD})
    assert status == 200, body
    assert (await site.sign_in("alice", "a new password"))[0] == 201
    # An admin setting another agent's password is a separate rule: no current password.
    status, body, _headers = await site.call("PUT", path, site.admin, {"password": "reset by admin"})
    assert status == 200, body
    assert (await site.sign_in("alice", "reset by admin"))[0] == 201


async def test_an_old_parameter_hash_is_rehashed_on_sign_in(site: Site) -> None:
    old = await asyncio.to_thread(hash_password_sync, PASSWORD, ScryptParams(2**14, 8, 1))
    async with site.core.sessions() as s:
        await s.execute(update(Agent).where(Agent.id == site.alice).values(password_hash=old))
        await s.commit()
    assert (await site.sign_in("alice", "not it"))[0] == 401
    async with site.core.readers() as s:
        assert await s.scalar(select(Agent.password_hash).where(Agent.id == site.alice)) == old
    assert (await site.sign_in("alice", PASSWORD))[0] == 201
    async with site.core.readers() as s:
        stored = await s.scalar(select(Agent.password_hash).where(Agent.id == site.alice))
    assert stored is not None and stored != old and stored.startswith("scrypt$131072$8$1$")
    assert await asyncio.to_thread(verify_password_sync, PASSWORD, stored)
    assert (await site.sign_in("alice", PASSWORD))[0] == 201


async def test_metrics_are_refused_without_the_token(site: Site) -> None:
    _status, body, _headers = await site.sign_in("alice", PASSWORD)
    for token in (None, "wrong", body["token"]):  # an agent's session is not enough
        status, _body, headers = await site.call("GET", "/metrics", token)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    for token in (METRICS_TOKEN, site.admin):
        status, text, _headers = await site.call("GET", "/metrics", token)
        assert status == 200 and b"umsg_http_requests_total" in text

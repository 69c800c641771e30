"""Every write route of the API, called by a principal of project beta on project alpha's objects,
is refused and leaves the store unchanged; generated from the route table (umsg.web.table).

The store holds two projects with agents, a supervisor each, conversations, contacts, a
contact merge, queue items, an offer, canned responses and wrap-up codes. For every route whose
method writes (POST, PUT, PATCH, DELETE) `CASES` names at least one attack: beta's agent, beta's
supervisor and an admin token bound to a beta agent each call it with alpha's ids (or alpha's
slug in the body) over a real socket; the answer must be a refusal (403/404, 422 for a body
naming a project the caller does not see, or what the route answers when there is nothing of
the caller's to do: 204 for a claim, 401 for a sign-in) and every row of every table must be
as before (sign-in bookkeeping tables aside, checked separately). A write route added to the
table without a case here fails `test_every_write_route_has_a_case`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from storage.models import Agent, AgentProject, AgentQueue, ApiToken, Base, QueueItem, RouterOffer
from storage.types import utcnow
from umsg.core import Core
from umsg.tokens import create_token
from umsg.web import create_app
from umsg.web.table import ENDPOINTS

WRITES = ("POST", "PUT", "PATCH", "DELETE")
REFUSED = frozenset({403, 404})
# Tables a refused sign-in or token check may touch (throttling, last use); compared apart.
BOOKKEEPING = re.compile(r"token|sign|attempt|throttl|lock")
BETA = ("ben", "bert_supervisor", "bea_admin")


@dataclass(frozen=True)
class Attack:
    """One call; `{name}` in the path or body is one of alpha's (or beta's) objects."""

    path: str
    body: Any = None
    allowed: frozenset[int] = REFUSED
    who: tuple[str, ...] = BETA


# (method, route path as in the table) -> the attacks on it.
CASES: dict[tuple[str, str], list[Attack]] = {
    ("POST", "/api/v1/messages"): [Attack("/api/v1/messages", {
        "project": "alpha", "from": {"kind": "email", "value": "x@evil.test"}, "text": "hi", "dedupe_key": "atk"},
        allowed=REFUSED | {422})],  # an agent token: 403; a beta supervisor: alpha is not found
    ("PATCH", "/api/v1/conversations/{id}"): [Attack("/api/v1/conversations/{conv}", {"priority": 9})],
    ("POST", "/api/v1/conversations/{id}/reply"): [
        Attack("/api/v1/conversations/{conv}/reply", {"text": "hi"}),
        Attack("/api/v1/conversations/{conv}/reply", {"text": "hi", "to": "victim@evil.test"})],
    ("POST", "/api/v1/contacts/{id}/merge"): [
        Attack("/api/v1/contacts/{contact}/merge", {"into_id": "{beta_contact}"}),
        Attack("/api/v1/contacts/{beta_contact}/merge", {"into_id": "{contact}"})],
    ("POST", "/api/v1/contact-merges/{id}/unmerge"): [Attack("/api/v1/contact-merges/{merge}/unmerge", {})],
    ("POST", "/api/v1/queue/claim"): [Attack("/api/v1/queue/claim", {}, allowed=frozenset({204}))],
    ("POST", "/api/v1/queue/{id}/complete"): [Attack("/api/v1/queue/{leased}/complete")],
    ("POST", "/api/v1/queue/{id}/release"): [Attack("/api/v1/queue/{leased}/release")],
    ("POST", "/api/v1/queue/{id}/fail"): [Attack("/api/v1/queue/{leased}/fail", {"reason": "x", "permanent": True})],
    ("POST", "/api/v1/agents"): [Attack("/api/v1/agents", {"login": "mole", "display_name": "Mole",
                                                           "projects": ["alpha"]}, allowed=REFUSED | {422})],
    ("PUT", "/api/v1/agents/{id}/state"): [Attack("/api/v1/agents/{ann}/state", {"state": "busy"})],
    ("PUT", "/api/v1/routes"): [Attack("/api/v1/routes", {"project": "alpha", "version": 0, "routes": []})],
    ("POST", "/api/v1/routes/test"): [Attack("/api/v1/routes/test", {"project": "alpha", "channel": "email",
                                                                     "from": "x@evil.test"})],
    ("POST", "/api/v1/offers/{id}/accept"): [Attack("/api/v1/offers/{offer}/accept")],
    ("POST", "/api/v1/offers/{id}/decline"): [Attack("/api/v1/offers/{offer}/decline", {})],
    ("POST", "/api/v1/queue/{id}/transfer"): [
        Attack("/api/v1/queue/{leased}/transfer", {"queue": "elsewhere"}),
        Attack("/api/v1/queue/{beta_item}/transfer", {"agent_id": "{ann}"}, allowed=REFUSED | {422})],
    ("POST", "/api/v1/agents/{id}/heartbeat"): [Attack("/api/v1/agents/{ann}/heartbeat")],
    ("PUT", "/api/v1/agents/{id}/queues"): [
        Attack("/api/v1/agents/{ann}/queues", {"queues": []}),
        Attack("/api/v1/agents/{ann}/queues", {"queues": [{"project": "beta", "queue": "x"}]}),
        Attack("/api/v1/agents/{ben}/queues", {"queues": [{"project": "alpha", "queue": "x"}]},
               allowed=REFUSED | {422}, who=("bert_supervisor", "bea_admin"))],
    ("POST", "/api/v1/session"): [Attack("/api/v1/session", {"login": "ann", "password": "not-anns-password"},
                                         allowed=frozenset({401, 429}))],
    ("DELETE", "/api/v1/session"): [Attack("/api/v1/session", allowed=frozenset({204}), who=("ben_spare",))],
    ("POST", "/api/v1/session/refresh"): [Attack("/api/v1/session/refresh", allowed=frozenset({401, 403}))],
    ("PUT", "/api/v1/agents/{id}/password"): [
        Attack("/api/v1/agents/{ann}/password", {"password": "new-password-123"}),
        Attack("/api/v1/agents/{ann}/password", {"password": "new-password-123", "role": "supervisor"})],
    ("POST", "/api/v1/conversations/{id}/notes"): [Attack("/api/v1/conversations/{conv}/notes", {"text": "x"})],
    ("POST", "/api/v1/conversations/{id}/typing"): [Attack("/api/v1/conversations/{conv}/typing", {"on": True})],
    ("POST", "/api/v1/conversations/{id}/close"): [Attack("/api/v1/conversations/{conv}/close", {})],
    ("POST", "/api/v1/canned-responses"): [Attack("/api/v1/canned-responses", {
        "project": "alpha", "title": "mine", "body": "x"}, allowed=REFUSED | {422})],
    ("PATCH", "/api/v1/canned-responses/{id}"): [Attack("/api/v1/canned-responses/{canned}", {"body": "defaced"})],
    ("DELETE", "/api/v1/canned-responses/{id}"): [Attack("/api/v1/canned-responses/{canned}")],
    ("POST", "/api/v1/wrapup-codes"): [Attack("/api/v1/wrapup-codes", {
        "project": "alpha", "code": "mine", "label": "x"}, allowed=REFUSED | {422})],
    ("DELETE", "/api/v1/wrapup-codes/{id}"): [Attack("/api/v1/wrapup-codes/{wrapup}")],
}


def _write_routes() -> list[tuple[str, str]]:
    return sorted({(ep.method, ep.path) for ep in ENDPOINTS if ep.method in WRITES})


def test_every_write_route_has_a_case() -> None:
    missing = [route for route in _write_routes() if not CASES.get(route)]
    assert missing == [], f"write routes without a cross-tenant case in CASES: {missing}"


@dataclass
class World:
    client: TestClient[Any, Any]
    core: Core
    tokens: dict[str, str]
    ids: dict[str, str]

    async def call(self, method: str, path: str, who: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        async with self.client.request(method, path, json=body, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None) if resp.content_length != 0 else None


async def _agent(core: Core, login: str, project_id: int) -> int:
    async with core.sessions() as s:
        agent = Agent(login=login, display_name=login.title(), state="offline")
        s.add(agent)
        await s.flush()
        s.add(AgentProject(agent_id=agent.id, project_id=project_id))
        await s.commit()
        return int(agent.id)


async def _seed(w: World) -> None:
    async def message(project: str, sender: str, key: str) -> dict[str, Any]:
        status, body = await w.call("POST", "/api/v1/messages", "admin", {
            "project": project, "from": {"kind": "email", "value": sender}, "to": ["help@acme.test"],
            "subject": "Help", "text": "hello", "dedupe_key": key})
        assert status == 201, body
        return dict(body)

    first, second, third = [await message("alpha", f"c{n}@customer.test", f"a{n}") for n in range(3)]
    held = await message("alpha", "held@customer.test", "a-held")
    beta = await message("beta", "bcarol@customer.test", "b1")
    status, merge = await w.call("POST", f"/api/v1/contacts/{third['contact_id']}/merge", "admin",
                                 {"into_id": second["contact_id"]})
    assert status == 200, merge
    status, canned = await w.call("POST", "/api/v1/canned-responses", "admin",
                                  {"project": "alpha", "title": "Hello", "body": "Hi there"})
    assert status == 201, canned
    status, wrapup = await w.call("POST", "/api/v1/wrapup-codes", "admin",
                                  {"project": "alpha", "code": "done", "label": "Done"})
    assert status == 201, wrapup
    ann = int(w.ids["ann"])
    now = utcnow()
    async with w.core.sessions() as s:
        leased = await s.get(QueueItem, held["queue_item_id"])
        assert leased is not None
        leased.status, leased.lease_owner, leased.agent_id = "leased", f"agent:{ann}", ann
        leased.lease_until = now + timedelta(hours=1)
        # Beta's only item is its agent's already, so a beta claim can only find alpha's (and must not).
        mine = await s.get(QueueItem, beta["queue_item_id"])
        assert mine is not None
        ben = int(w.ids["ben"])
        mine.status, mine.lease_owner, mine.agent_id = "leased", f"agent:{ben}", ben
        mine.lease_until = now + timedelta(hours=1)
        offer = RouterOffer(project_id=leased.project_id, item_id=first["queue_item_id"],
                            conversation_id=first["conversation_id"], agent_id=ann, expires_at=now + timedelta(hours=1))
        s.add(offer)
        s.add(AgentQueue(agent_id=ann, project_id=leased.project_id, queue="default", rank=0))
        await s.commit()
        offer_id = offer.id
    w.ids.update(conv=str(first["conversation_id"]), contact=str(first["contact_id"]), merge=str(merge["id"]),
                 leased=str(held["queue_item_id"]), beta_item=str(beta["queue_item_id"]),
                 beta_contact=str(beta["contact_id"]), offer=str(offer_id), canned=str(canned["id"]),
                 wrapup=str(wrapup["id"]))


@pytest.fixture
async def world(core: Core) -> AsyncIterator[World]:
    alpha = await core.ensure_project("alpha")
    beta = await core.ensure_project("beta")
    agents = {login: await _agent(core, login, pid) for login, pid in
              (("ann", alpha), ("alma", alpha), ("ben", beta), ("bert", beta), ("bea", beta))}
    tokens = {
        "admin": await create_token(core.sessions, "admin", label="unbound admin"),
        "ann": await create_token(core.sessions, "agent", agent_id=agents["ann"]),
        "ben": await create_token(core.sessions, "agent", agent_id=agents["ben"]),
        "ben_spare": await create_token(core.sessions, "agent", agent_id=agents["ben"]),
        "bert_supervisor": await create_token(core.sessions, "supervisor", agent_id=agents["bert"]),
        "bea_admin": await create_token(core.sessions, "admin", agent_id=agents["bea"]),
    }
    server = TestServer(create_app(core), host="127.0.0.1")
    async with server, TestClient(server) as client:
        w = World(client, core, tokens, {k: str(v) for k, v in agents.items()})
        await _seed(w)
        yield w


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        whole = re.fullmatch(r"\{(\w+)\}", value)
        if whole and whole.group(1) in ids:
            return int(ids[whole.group(1)])
        return re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], value)
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    return value


async def _snapshot(core: Core) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table but the sign-in bookkeeping, in primary-key order."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with core.readers() as s:
        for table in Base.metadata.sorted_tables:
            if BOOKKEEPING.search(table.name):
                continue
            rows = (await s.execute(select(table).order_by(*table.primary_key.columns))).all()
            out[table.name] = [tuple(r) for r in rows]
    return out


async def _live_tokens(core: Core) -> list[tuple[int, Any]]:
    async with core.readers() as s:
        return [tuple(r) for r in (await s.execute(  # type: ignore[misc]
            select(ApiToken.id, ApiToken.revoked_at).order_by(ApiToken.id))).all()]


async def test_beta_cannot_write_to_alpha_through_any_route(world: World) -> None:
    tried = 0
    for (method, route), attacks in sorted(CASES.items()):
        if (method, route) not in _write_routes():
            continue  # a case for a route this tree does not serve (yet)
        for attack in attacks:
            for who in attack.who:
                before, tokens_before = await _snapshot(world.core), await _live_tokens(world.core)
                path, body = _fill(attack.path, world.ids), _fill(attack.body, world.ids)
                status, answer = await world.call(method, path, who, body)
                tried += 1
                what = f"{who}: {method} {path} {body}"
                assert status in attack.allowed, (what, status, answer)
                if status == 422:  # only a body naming a project (or agent) the caller may not use
                    assert re.search(r"project|agent", str(answer)), (what, answer)
                assert await _snapshot(world.core) == before, f"{what} changed the store"
                if (method, route) != ("DELETE", "/api/v1/session"):
                    assert await _live_tokens(world.core) == tokens_before, f"{what} changed a token"
    assert tried >= 3 * len(CASES) - 6
    # Alpha's own people still work: their token is live and their objects are as seeded.
    status, conv = await world.call("GET", f"/api/v1/conversations/{world.ids['conv']}", "ann")
    assert status == 200 and conv["priority"] != 9

"""Shared harness for the API tests (fixtures and helpers only; no tests here).

The `api` fixture (import `api_fixture` to use it) serves `create_app(core)`
on a real loopback port through aiohttp's TestServer and seeds two projects
("default" and "other"), one agent in each, and tokens for every kind of
caller the tests need.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from storage.models import Agent, AgentProject, AgentStateHistory
from umsg.core import Core
from umsg.tokens import create_token
from umsg.web import create_app

_keys = itertools.count(1)


@dataclass
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str]
    raw: bytes


@dataclass
class Api:
    client: TestClient
    core: Core
    tokens: dict[str, str]
    default_pid: int
    other_pid: int
    alice_id: int  # agent in "default"
    bob_id: int  # agent in "other"
    sent: list[dict[str, Any]] = field(default_factory=list)

    def auth(self, who: str | None) -> dict[str, str]:
        return {} if who is None else {"Authorization": f"Bearer {self.tokens.get(who, who)}"}

    async def call(
        self,
        method: str,
        path: str,
        *,
        who: str | None = "admin",
        json_body: Any = None,
        data: bytes | str | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        hdrs = {**self.auth(who), **(headers or {})}
        if json_body is not None:
            data = json.dumps(json_body)
            hdrs.setdefault("Content-Type", "application/json")
        resp: ClientResponse
        async with self.client.request(method, path, data=data, params=params, headers=hdrs) as resp:
            raw = await resp.read()
            body: Any = None
            if resp.content_type == "application/json" and raw:
                body = json.loads(raw)
            return Reply(resp.status, body, resp.headers.copy(), raw)

    async def message(
        self,
        *,
        sender: str = "carol@example.com",
        text: str = "hello",
        who: str = "admin",
        project: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Submit a message through the API and return the 201 body."""
        body: dict[str, Any] = {
            "from": {"kind": "email", "value": sender, "name": "Carol"},
            "to": ["support@acme.test"],
            "subject": "Help",
            "text": text,
            "dedupe_key": f"k{next(_keys)}",
            **extra,
        }
        if project is not None:
            body["project"] = project
        r = await self.call("POST", "/api/v1/messages", who=who, json_body=body)
        assert r.status == 201, r.body
        self.sent.append(r.body)
        return dict(r.body)


def attachment(data: bytes, media_type: str = "application/pdf", filename: str = "doc.pdf") -> dict[str, str]:
    return {"media_type": media_type, "filename": filename, "data_base64": base64.b64encode(data).decode()}


async def _agent(core: Core, login: str, project_id: int) -> int:
    async with core.sessions() as s:
        agent = Agent(login=login, display_name=login.title(), state="offline")
        s.add(agent)
        await s.flush()
        s.add(AgentProject(agent_id=agent.id, project_id=project_id))
        s.add(AgentStateHistory(agent_id=agent.id, state="offline"))
        await s.commit()
        return agent.id


@pytest.fixture(name="api")
async def api_fixture(core: Core) -> AsyncIterator[Api]:
    default_pid = await core.ensure_project(core.settings.project)
    other_pid = await core.ensure_project("other")
    alice = await _agent(core, "alice", default_pid)
    bob = await _agent(core, "bob", other_pid)
    tokens = {
        "admin": await create_token(core.sessions, "admin", label="test admin"),
        "supervisor": await create_token(core.sessions, "supervisor"),
        "alice": await create_token(core.sessions, "agent", agent_id=alice),
        "bob": await create_token(core.sessions, "agent", agent_id=bob),
        # A supervisor tied to bob sees only bob's project.
        "bob_supervisor": await create_token(core.sessions, "supervisor", agent_id=bob),
    }
    async with TestServer(create_app(core)) as server, TestClient(server) as client:
        yield Api(client, core, tokens, default_pid, other_pid, alice, bob)

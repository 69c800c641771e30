"""Fixtures shared by the integration tests (the store-backed ones are in tests/conftest.py).

`api` serves `create_app(core)` on a real loopback port through aiohttp's TestServer and
seeds two projects ("default" and "other"), one agent in each, and tokens for every kind of
caller the tests need (helpers: api_harness.py).

`chat` serves `create_app(core, {"webchat": adapter})` on a real loopback port, with the
outbound dispatcher running, one project, and one agent ("alice", available unless a test
changes it) (helpers: webchat_harness.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from api_harness import Api
from webchat_harness import SECRET, Chat

from channels.webchat import WebchatChannel, WebchatSettings
from storage.models import Agent, AgentProject, AgentStateHistory
from umsg.core import Core
from umsg.outbound.outbox import Dispatcher
from umsg.tokens import create_token
from umsg.web import create_app


async def _agent(core: Core, login: str, project_id: int) -> int:
    async with core.sessions() as s:
        agent = Agent(login=login, display_name=login.title(), state="offline")
        s.add(agent)
        await s.flush()
        s.add(AgentProject(agent_id=agent.id, project_id=project_id))
        s.add(AgentStateHistory(agent_id=agent.id, state="offline"))
        await s.commit()
        return agent.id


@pytest.fixture
async def api(core: Core) -> AsyncIterator[Api]:
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


@pytest.fixture
async def chat(core: Core) -> AsyncIterator[Chat]:
    pid = await core.ensure_project(core.settings.project)
    async with core.sessions() as s:
        agent = Agent(login="alice", display_name="Alice", state="available")
        s.add(agent)
        await s.flush()
        s.add(AgentProject(agent_id=agent.id, project_id=pid))
        await s.commit()
        agent_id = agent.id
    settings = WebchatSettings(secret=SECRET, max_upload_bytes=1000, upload_types=["image/*", "text/plain"])
    adapter = WebchatChannel("webchat", settings)
    adapter.bind(core.channel_services())
    await adapter.start(core.ingest.ingest)
    stop = asyncio.Event()
    dispatcher = Dispatcher(core.sessions, core.events, {"webchat": adapter}, core.instance_id, blobs=core.blobs,
                            idle_seconds=0.05)
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        async with TestServer(create_app(core, {"webchat": adapter})) as server, TestClient(server) as client:
            yield Chat(client, core, adapter, pid, agent_id)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await adapter.aclose()

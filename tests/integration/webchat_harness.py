"""Shared harness for the web chat integration tests (fixtures and helpers only; no tests here).

`chat` serves `create_app(core, {"webchat": adapter})` on a real loopback port, with the
outbound dispatcher running, one project, and one agent ("alice", available unless a test
changes it). Import `chat_fixture` to use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from channels.webchat import WebchatChannel, WebchatSettings
from storage.models import Agent, AgentProject
from umsg.core import Core
from umsg.outbound import Dispatcher
from umsg.web import create_app

FRAME_TIMEOUT = 10.0
SECRET = "test-secret-0123456789abcdef"
_ids = itertools.count(1)


@dataclass
class Chat:
    client: TestClient
    core: Core
    adapter: WebchatChannel
    project_id: int
    agent_id: int

    async def connect(self, token: str | None = None) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
        ws = await self.client.ws_connect("/channels/webchat/ws")
        await ws.send_json({"type": "hello", "token": token})
        welcome = await receive(ws)
        assert welcome["type"] == "welcome", welcome
        return ws, welcome

    async def set_agent_state(self, state: str) -> None:
        async with self.core.sessions() as s:
            agent = await s.get(Agent, self.agent_id)
            assert agent is not None
            agent.state = state
            await s.commit()


async def receive(ws: aiohttp.ClientWebSocketResponse, kind: str | None = None) -> dict[str, Any]:
    """The next frame (of `kind`, skipping others when given)."""
    while True:
        msg = await ws.receive_json(timeout=FRAME_TIMEOUT)
        assert isinstance(msg, dict)
        if kind is None or msg.get("type") == kind:
            return msg


def client_id() -> str:
    return f"c{next(_ids)}"


@pytest.fixture(name="chat")
async def chat_fixture(core: Core) -> AsyncIterator[Chat]:
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

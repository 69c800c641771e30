"""Shared harness for the web chat integration tests (helpers only; no fixtures, no tests here).

The `chat` fixture (tests/integration/conftest.py) yields a `Chat`: it
serves `create_app(core, {"webchat": adapter})` on a real loopback port, with the
outbound dispatcher running, one project, and one agent ("alice", available unless a test
changes it). `receive` reads the next frame of a socket; `client_id` makes a fresh client id.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from channels.webchat import WebchatChannel
from storage.models import Agent
from umsg.core import Core

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

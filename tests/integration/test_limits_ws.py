"""The inbox's event websocket against a greedy or hostile client: feeds per user capped
(429 before the upgrade), and an oversized client frame closes the socket."""

from __future__ import annotations

import aiohttp
import pytest
from api_harness import Api


async def test_feeds_per_user_are_capped(api: Api) -> None:
    limit = api.core.settings.http.max_feeds_per_user
    opened: list[aiohttp.ClientWebSocketResponse] = []
    try:
        for _ in range(limit):
            opened.append(await api.client.ws_connect("/api/v1/events", headers=api.auth("alice")))
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await api.client.ws_connect("/api/v1/events", headers=api.auth("alice"))
        assert err.value.status == 429
        # Another user is not affected by alice's tabs.
        bob = await api.client.ws_connect("/api/v1/events", headers=api.auth("bob"))
        opened.append(bob)
        await bob.send_json({"type": "ping"})
        assert (await bob.receive_json(timeout=10))["type"] == "pong"
        # Closing one of alice's feeds frees its place.
        await opened.pop(0).close()
        opened.append(await api.client.ws_connect("/api/v1/events", headers=api.auth("alice")))
    finally:
        for ws in opened:
            await ws.close()


async def test_an_oversized_frame_closes_the_feed(api: Api) -> None:
    async with api.client.ws_connect("/api/v1/events", headers=api.auth("alice")) as ws:
        await ws.send_str('{"type": "ping", "pad": "' + "x" * 100_000 + '"}')
        msg = await ws.receive(timeout=10)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    # The server is fine for the next client.
    async with api.client.ws_connect("/api/v1/events", headers=api.auth("alice")) as ws:
        await ws.send_json({"type": "ping"})
        assert (await ws.receive_json(timeout=10))["type"] == "pong"

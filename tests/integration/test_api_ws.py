"""The events websocket: resume after an id, project filtering, live events, ping."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from api_harness import Api

from storage.models import Event
from umsg.web import serialize

# Upper bound for one frame to arrive; a healthy server answers in milliseconds.
FRAME_TIMEOUT = 10.0


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive_json(timeout=FRAME_TIMEOUT)
    assert isinstance(msg, dict)
    return msg


async def drain_until_pong(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    """Everything the server sends before it answers a ping sent now."""
    await ws.send_json({"type": "ping"})
    got = []
    while True:
        msg = await receive(ws)
        if msg.get("type") == "pong":
            return got
        got.append(msg)


def as_json(events: list[Event]) -> list[dict[str, Any]]:
    return [serialize.event(e) for e in events]


async def test_resume_after_n_gets_exactly_the_later_events_then_live_ones(api: Api) -> None:
    for i in range(3):
        await api.message(sender=f"w{i}@example.com")
    log = await api.core.events.since(0, None, 1000)
    assert len(log) >= 6
    n = log[2].id
    expected = as_json([e for e in log if e.id > n])
    async with api.client.ws_connect("/api/v1/events", params={"after": str(n)},
                                     headers=api.auth("admin")) as ws:
        backlog = [await receive(ws) for _ in expected]
        assert backlog == expected
        # Nothing else is pending: the next frame answers our ping.
        pong = await drain_until_pong(ws)
        assert pong == []

        sent = await api.message(sender="live@example.com")
        live = await receive(ws)
        assert live["id"] > expected[-1]["id"]
        assert live["payload"].get("conversation_id") == sent["conversation_id"]


async def test_feed_is_filtered_to_the_callers_projects(api: Api) -> None:
    await api.message(sender="d@example.com")
    await api.message(sender="o@example.com", project="other")
    mine = as_json(await api.core.events.since(0, [api.other_pid], 1000))
    assert mine
    # Browsers cannot set headers on a websocket: the token may come in the query here.
    async with api.client.ws_connect("/api/v1/events",
                                     params={"after": "0", "access_token": api.tokens["bob"]}) as ws:
        got = [await receive(ws) for _ in mine]
        assert got == mine
        assert await drain_until_pong(ws) == []
    assert {e["project_id"] for e in got} == {api.other_pid}


async def test_events_written_by_another_process_arrive_by_polling(api: Api) -> None:
    async with api.client.ws_connect("/api/v1/events", headers=api.auth("admin")) as ws:
        # Written like another process would: committed, but no in-process notify().
        async with api.core.sessions() as s:
            api.core.events.add(s, api.default_pid, "message.status", {"message_id": 1, "status": "sent"})
            await s.commit()
        msg = await receive(ws)
        assert msg["kind"] == "message.status" and msg["payload"]["status"] == "sent"


async def test_ping_pong_and_unknown_messages(api: Api) -> None:
    async with api.client.ws_connect("/api/v1/events", headers=api.auth("alice")) as ws:
        await ws.send_json({"type": "ping"})
        pong = await receive(ws)
        assert pong["type"] == "pong" and isinstance(pong["last_event_id"], int)
        await ws.send_str("not json")
        err = await receive(ws)
        assert err["type"] == "error" and "JSON" in err["message"]
        await ws.send_json({"type": "subscribe"})
        err = await receive(ws)
        assert err["type"] == "error" and "ping" in err["message"]


@pytest.mark.parametrize("token", [None, "umsg_wrong"])
async def test_handshake_without_a_valid_token_is_401(api: Api, token: str | None) -> None:
    params = {} if token is None else {"access_token": token}
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        async with api.client.ws_connect("/api/v1/events", params=params):
            pass
    assert info.value.status == 401


async def test_plain_get_is_told_to_upgrade(api: Api) -> None:
    r = await api.call("GET", "/api/v1/events")
    assert r.status == 426 and "websocket" in r.body["error"]["message"]


async def test_bad_after_is_422(api: Api) -> None:
    r = await api.call("GET", "/api/v1/events", params={"after": "yesterday"})
    assert r.status == 422 and "query.after" in r.body["error"]["message"]


async def test_server_shutdown_closes_the_feed(api: Api) -> None:
    async with api.client.ws_connect("/api/v1/events", headers=api.auth("admin")) as ws:
        assert await drain_until_pong(ws) == []
        await asyncio.wait_for(api.client.app.shutdown(), FRAME_TIMEOUT)  # type: ignore[union-attr]
        msg = await ws.receive(timeout=FRAME_TIMEOUT)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == aiohttp.WSCloseCode.GOING_AWAY


async def test_batch_mode_sends_the_events_ready_together_as_one_array(api: Api) -> None:
    for i in range(3):
        await api.message(sender=f"b{i}@example.com")
    log = await api.core.events.since(0, None, 1000)
    expected = as_json(log)
    async with api.client.ws_connect("/api/v1/events", params={"after": "0", "batch": "true"},
                                     headers=api.auth("admin")) as ws:
        got: list[dict[str, Any]] = []
        frames = 0
        while len(got) < len(expected):
            frame = await ws.receive_json(timeout=FRAME_TIMEOUT)
            assert isinstance(frame, list) and frame, frame
            got.extend(frame)
            frames += 1
        assert got == expected
        # The backlog was all there at connect: it comes as one array, not one frame per event.
        assert frames < len(expected)
        assert await drain_until_pong(ws) == []

        sent = await api.message(sender="live-batch@example.com")
        live = await ws.receive_json(timeout=FRAME_TIMEOUT)
        assert isinstance(live, list)
        assert all(e["id"] > expected[-1]["id"] for e in live)
        assert sent["conversation_id"] in {e["payload"].get("conversation_id") for e in live}

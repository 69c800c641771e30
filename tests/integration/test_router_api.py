"""The router's HTTP endpoints: offers, accept/decline, transfer, explain, heartbeat, queues."""

from __future__ import annotations

from api_harness import Api
from router_driver import Clock, Driver, add_agent

from storage.types import utcnow


async def test_offer_accept_explain_transfer_over_http(api: Api) -> None:
    clock = Clock()
    clock.now = utcnow()
    d = Driver(api.core, clock)
    await d.start()
    sent = await api.message(text="where is my parcel?")
    item = sent["queue_item_id"]
    waiting = await api.call("GET", f"/api/v1/queue/{item}/explain", who="alice")
    assert waiting.status == 200
    assert waiting.body["reasons"] == ["none of the 1 eligible agents is available (offline 1)"], waiting.body

    r = await api.call("PUT", f"/api/v1/agents/{api.alice_id}/state", who="alice",
                       json_body={"state": "available"})
    assert r.status == 200
    await d.round()  # the leader hears of alice through the outbox and offers her the item
    offers = await api.call("GET", "/api/v1/offers", who="alice")
    assert [o["item_id"] for o in offers.body["items"]] == [item]
    offer = offers.body["items"][0]["id"]
    assert (await api.call("POST", f"/api/v1/offers/{offer}/accept", who="bob")).status == 404
    accepted = await api.call("POST", f"/api/v1/offers/{offer}/accept", who="alice")
    assert accepted.status == 200 and accepted.body["status"] == "accepted"
    again = await api.call("POST", f"/api/v1/offers/{offer}/decline", who="alice", json_body={})
    assert again.status == 409

    beat = await api.call("POST", f"/api/v1/agents/{api.alice_id}/heartbeat", who="alice")
    assert beat.status == 200 and beat.body["renewed"] == 1
    assert (await api.call("POST", f"/api/v1/agents/{api.bob_id}/heartbeat", who="alice")).status == 403

    await d.round()
    why = await api.call("GET", f"/api/v1/queue/{item}/explain", who="alice")
    assert why.body["offers"][0]["status"] == "accepted"
    assert why.body["offers"][0]["why"]["step"] == "strategy"

    bad = await api.call("POST", f"/api/v1/queue/{item}/transfer", json_body={"queue": "x", "agent_id": 1})
    assert bad.status == 422
    moved = await api.call("POST", f"/api/v1/queue/{item}/transfer", who="alice", json_body={"queue": "billing"})
    assert moved.status == 200 and moved.body["queue"] == "billing" and moved.body["status"] == "waiting"

    queues = await api.call("PUT", f"/api/v1/agents/{api.alice_id}/queues",
                            json_body={"queues": [{"project": "default", "queue": "sales", "rank": 1}]})
    assert queues.status == 200
    await d.round()
    why = await api.call("GET", f"/api/v1/queue/{item}/explain", who="alice")
    assert why.body["reasons"] == ["no agent of project 1 is a member of queue 'billing'"], why.body


async def test_reason_codes_are_checked_per_state(make_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from aiohttp.test_utils import TestClient, TestServer

    from umsg.core import Core
    from umsg.tokens import create_token
    from umsg.web import create_app

    core = await Core.open(make_settings(router={"reason_codes": {"break": ["lunch", "coffee"]}}))
    try:
        token = await create_token(core.sessions, "admin")
        pid = await core.ensure_project("default")
        agent = await add_agent(core, pid, "rita", state="offline")
        headers = {"Authorization": f"Bearer {token}"}
        async with TestServer(create_app(core)) as server, TestClient(server) as client:
            bad = await client.put(f"/api/v1/agents/{agent}/state", json={"state": "break", "reason": "nap"},
                                   headers=headers)
            assert bad.status == 422 and "allowed: lunch, coffee" in await bad.text()
            ok = await client.put(f"/api/v1/agents/{agent}/state", json={"state": "break", "reason": "lunch"},
                                  headers=headers)
            assert ok.status == 200
    finally:
        await core.aclose()

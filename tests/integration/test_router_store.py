"""The router against the real store (SQLite and PostgreSQL): offers are leases settled by
compare-and-swap, decline/timeout keep the original age, transfers and logout re-queue."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from router_driver import T0, Clock, Driver, add_agent, add_item
from sqlalchemy import select

from storage.models import Agent, AgentStateHistory, QueueItem, RouterOffer
from umsg.errors import Conflict


async def item_row(core: Any, item_id: int) -> QueueItem:
    async with core.readers() as s:
        row = await s.get(QueueItem, item_id)
        assert row is not None
        return row


async def open_offer(core: Any, item_id: int) -> RouterOffer:
    async with core.readers() as s:
        offer = await s.scalar(select(RouterOffer).where(RouterOffer.item_id == item_id,
                                                         RouterOffer.status == "offered"))
        assert offer is not None
        return offer


@pytest.fixture
async def setup(make_settings: Any) -> Any:
    from umsg.core import Core

    core = await Core.open(make_settings(router={"offer_timeout_seconds": 20, "decline_block_seconds": 60}))
    await core.start()
    clock = Clock()
    try:
        pid = await core.ensure_project("default")
        yield core, clock, pid, Driver(core, clock)
    finally:
        await core.aclose()


async def test_blended_offers_accept_and_complete(setup: Any) -> None:
    core, clock, pid, d = setup
    agent = await add_agent(core, pid, "alice")
    items = [await add_item(core, pid, ch, at=T0 + timedelta(seconds=i))
             for i, ch in enumerate(["chat", "chat", "chat", "email"])]
    await d.start()
    assert await d.round() == 3  # two chats and an email fit in 100; a third chat does not
    rows = [await item_row(core, i) for i in items]
    assert [r.status for r in rows] == ["leased", "leased", "waiting", "leased"]
    assert all(r.agent_id == agent for r in rows if r.status == "leased")
    offer = await open_offer(core, items[0])
    accepted = await d.svc.accept(offer.id, agent)
    assert accepted.status == "accepted"
    with pytest.raises(Conflict):
        await d.svc.accept(offer.id, agent)  # settled exactly once
    row = await item_row(core, items[0])
    assert row.lease_owner == f"agent:{agent}"
    await core.queue.complete(items[0], f"agent:{agent}")  # the queue API completes it as the agent
    await d.round()
    assert (await item_row(core, items[2])).status == "leased"  # the freed room took the waiting chat
    explained = await d.svc.explain(await item_row(core, items[2]))
    assert explained["status"] == "offered" and explained["offers"][0]["why"]["step"] == "strategy"


async def test_decline_and_timeout_keep_age_and_mark_missed(setup: Any) -> None:
    core, clock, pid, d = setup
    a1 = await add_agent(core, pid, "a1")
    item = await add_item(core, pid, at=T0 - timedelta(minutes=5))
    await d.start()
    await d.round()
    offer = await open_offer(core, item)
    assert offer.agent_id == a1
    await d.svc.decline(offer.id, a1, "not mine")
    row = await item_row(core, item)
    assert (row.status, row.enqueued_at, row.agent_id) == ("waiting", T0 - timedelta(minutes=5), None)
    assert await d.round() == 0  # the decliner is skipped for a while
    a2 = await add_agent(core, pid, "a2", state="offline")
    async with core.sessions() as s:  # a2 logs in through the same path the API uses
        (await s.get(Agent, a2)).state = "available"  # type: ignore[union-attr]
        core.events.add(s, pid, "agent.state", {"agent_id": a2, "state": "available"})
        await s.commit()
    await d.round()
    offer2 = await open_offer(core, item)
    assert offer2.agent_id == a2
    clock.advance(21)
    await d.round()
    async with core.readers() as s:
        agent2 = await s.get(Agent, a2)
        settled = await s.get(RouterOffer, offer2.id)
        history = (await s.scalars(select(AgentStateHistory.state).where(AgentStateHistory.agent_id == a2)
                                   .order_by(AgentStateHistory.id))).all()
    assert agent2 is not None and settled is not None
    assert (agent2.state, agent2.state_reason, settled.status) == ("missed", "offer_timeout", "timed_out")
    assert history[-1] == "missed"
    assert (await item_row(core, item)).status == "waiting"
    clock.advance(60)  # a1's decline block is over
    await d.round()
    assert (await open_offer(core, item)).agent_id == a1


async def test_transfer_and_logout_requeue(setup: Any) -> None:
    core, clock, pid, d = setup
    a1 = await add_agent(core, pid, "a1")
    a2 = await add_agent(core, pid, "a2", state="break")
    item = await add_item(core, pid)
    await d.start()
    await d.round()
    offer = await open_offer(core, item)
    await d.svc.accept(offer.id, a1)
    await d.svc.transfer(item, agent_id=a2)  # pinned to a2, who is on a break
    await d.round()
    assert d.engine is not None and d.engine.items[item].status == "pinned"
    explained = await d.svc.explain(await item_row(core, item))
    assert "reserved for agent" in explained["reasons"][0]
    async with core.sessions() as s:
        (await s.get(Agent, a2)).state = "available"  # type: ignore[union-attr]
        core.events.add(s, pid, "agent.state", {"agent_id": a2})
        await s.commit()
    await d.round()
    offer2 = await open_offer(core, item)
    assert (offer2.agent_id, offer2.why["step"]) == (a2, "pinned")
    await d.svc.accept(offer2.id, a2)
    async with core.sessions() as s:  # a2 logs out
        (await s.get(Agent, a2)).state = "offline"  # type: ignore[union-attr]
        core.events.add(s, pid, "agent.state", {"agent_id": a2})
        await s.commit()
    await d.round()
    row = await item_row(core, item)
    assert row.status == "leased" and row.agent_id == a1  # re-queued, then offered to a1 again
    moved = await d.svc.transfer(item, queue="billing")
    assert moved.queue == "billing" and moved.status == "waiting" and moved.enqueued_at == T0


async def test_takeover_rebuilds_from_the_store(setup: Any) -> None:
    core, clock, pid, d = setup
    a1 = await add_agent(core, pid, "a1", skills={"fr": 3})
    await add_agent(core, pid, "a2", skills={"en": 3})
    items = [await add_item(core, pid, skills={"fr": 2}) for _ in range(6)]
    await d.start()
    await d.round()
    accepted = await open_offer(core, items[0])
    await d.svc.accept(accepted.id, a1)
    await d.round()
    # A second leader (another process, after the first died) sees the same offers and loads.
    d2 = Driver(core, clock)
    await d2.start()
    assert d.engine is not None and d2.engine is not None
    for iid in items:
        assert (d2.engine.items[iid].status, d2.engine.items[iid].agent_id) == \
            (d.engine.items[iid].status, d.engine.items[iid].agent_id)
    assert d2.engine.agents[a1].load == d.engine.agents[a1].load == 100
    explained = await d2.svc.explain(await item_row(core, items[5]))
    assert any("full" in r for r in explained["reasons"]), explained

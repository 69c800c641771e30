"""The router model run against the real store: random arrivals, presence changes, accepts,
declines, timeouts, transfers and completions; after every step the store itself is audited."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from router_driver import Clock, Driver, add_agent, add_item
from sqlalchemy import select

from storage.models import Agent, QueueItem, RouterOffer
from umsg.router.audit import violations
from umsg.router.settings import RouterSettings

COSTS = RouterSettings().channel_costs

op = st.one_of(
    st.tuples(st.just("arrive"), st.sampled_from(["chat", "email", "sms"]), st.integers(-1, 2),
              st.sampled_from([None, "fr", "en"])),
    st.tuples(st.just("state"), st.integers(0, 2), st.sampled_from(["available", "break", "offline"])),
    st.tuples(st.just("accept"), st.integers(0, 50)),
    st.tuples(st.just("decline"), st.integers(0, 50)),
    st.tuples(st.just("complete"), st.integers(0, 50)),
    st.tuples(st.just("transfer"), st.integers(0, 50), st.sampled_from(["queue", "agent"])),
    st.tuples(st.just("advance"), st.sampled_from([1, 10, 25])),
)


async def _audit(core: Any, d: Driver, pid: int, created: set[int], agents: list[int]) -> None:
    async with core.readers() as s:
        items = (await s.scalars(select(QueueItem).where(QueueItem.project_id == pid))).all()
        offers = (await s.scalars(select(RouterOffer).where(RouterOffer.project_id == pid,
                                                            RouterOffer.status == "offered"))).all()
        capacity = {a.id: a.capacity for a in (await s.scalars(select(Agent).where(Agent.id.in_(agents)))).all()}
    assert {i.id for i in items} == created  # nothing lost
    open_by_item = Counter(o.item_id for o in offers)
    assert all(n == 1 for n in open_by_item.values())  # never two open offers for one item
    load: Counter[int] = Counter()
    for i in items:
        assert i.status in ("waiting", "leased", "done")
        if i.status == "leased":
            owner = i.lease_owner or ""
            assert owner.startswith(("offer:", "agent:"))
            holder = int(owner.split(":")[1]) if owner.startswith("agent:") else i.agent_id
            if owner.startswith("offer:"):
                assert open_by_item[i.id] == 1
            assert holder is not None
            load[holder] += COSTS[i.channel]
    for agent_id, used in load.items():
        assert used <= capacity[agent_id], f"agent {agent_id} holds {used} > {capacity[agent_id]}"
    assert d.engine is not None
    assert not violations(d.engine, d.clock.now.timestamp(), settled=True)
    # A leader taking over now would see exactly what this one believes.
    fresh = await d.svc.snapshot(lambda p: p == pid)
    mine = {i: (v.status, v.agent_id) for i, v in d.engine.items.items() if v.spec.project_id == pid}
    theirs = {i: (v.status, v.agent_id) for i, v in fresh.items.items()}
    assert mine == theirs


@settings(max_examples=8, stateful_step_count=1, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=5, max_size=25))
async def test_router_against_the_store(make_settings: Any, ops: list[tuple[Any, ...]]) -> None:
    from umsg.core import Core

    slug = uuid.uuid4()
    core = await Core.open(make_settings(router={"offer_timeout_seconds": 20, "decline_block_seconds": 30}))
    try:
        pid = await core.ensure_project(f"p{slug.hex[:12]}")
        clock = Clock()
        d = Driver(core, clock)
        agents = [await add_agent(core, pid, f"{slug.hex[:8]}-{n}", skills=sk, capacity=cap)
                  for n, (sk, cap) in enumerate([({"fr": 3}, 100), ({"en": 2}, 60), ({}, 40)])]
        created: set[int] = set()
        await d.start(pid)
        for step in ops:
            await _apply(core, d, pid, agents, created, step)
            await d.round()
            await _audit(core, d, pid, created, agents)
    finally:
        await core.aclose()


async def _apply(core: Any, d: Driver, pid: int, agents: list[int], created: set[int],
                 step: tuple[Any, ...]) -> None:
    kind = step[0]
    assert d.engine is not None
    held = sorted(i for i, v in d.engine.items.items() if v.spec.project_id == pid)
    if kind == "arrive":
        _, channel, priority, skill = step
        created.add(await add_item(core, pid, channel, at=d.clock.now, priority=priority,
                                   skills={skill: 1} if skill else None))
    elif kind == "state":
        async with core.sessions() as s:
            agent = await s.get(Agent, agents[step[1]])
            assert agent is not None
            agent.state = step[2]
            core.events.add(s, pid, "agent.state", {"agent_id": agent.id, "state": step[2]})
            await s.commit()
    elif kind == "advance":
        d.clock.advance(step[1])
    elif kind in ("accept", "decline") and held:
        item = d.engine.items[held[step[1] % len(held)]]
        async with core.readers() as s:
            offer = await s.scalar(select(RouterOffer).where(RouterOffer.item_id == item.id,
                                                             RouterOffer.status == "offered"))
        if offer is not None and offer.expires_at > d.clock.now:
            if kind == "accept":
                await d.svc.accept(offer.id, offer.agent_id)
            else:
                await d.svc.decline(offer.id, offer.agent_id)
    elif kind == "complete" and held:
        item = d.engine.items[held[step[1] % len(held)]]
        if item.status == "accepted" and item.agent_id is not None:
            await core.queue.complete(item.id, f"agent:{item.agent_id}", now=d.clock.now)
    elif kind == "transfer" and held:
        item = d.engine.items[held[step[1] % len(held)]]
        if step[2] == "queue":
            await d.svc.transfer(item.id, queue="other")
        else:
            await d.svc.transfer(item.id, agent_id=agents[step[1] % len(agents)])
    d.clock.advance(0.01)


def test_offer_costs_are_the_defaults() -> None:
    assert COSTS["chat"] == 34 and COSTS["email"] == 20

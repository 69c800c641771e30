"""Kill the process holding the router role while offers are out: another takes over within
seconds, the outstanding offers survive (they are rows), and every item is accounted for."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from router_driver import add_agent, add_item
from serve_proc import ServeProcess, db_env
from sqlalchemy import select

from storage.models import Agent, QueueItem, RouterOffer

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROLE_TAKEN = "router role taken"
COST = 20  # every item here is an email


async def until(what: str, check: Callable[[], Awaitable[bool]], core: Any, seconds: float = 30) -> None:
    """Wait for a condition, woken by this process's commits or re-checked every 0.2 s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await core.events.wait(0.2)


async def snapshot(core: Any, pid: int) -> tuple[list[QueueItem], list[RouterOffer]]:
    async with core.readers() as s:
        items = list((await s.scalars(select(QueueItem).where(QueueItem.project_id == pid)
                                      .order_by(QueueItem.id))).all())
        offers = list((await s.scalars(select(RouterOffer).where(RouterOffer.project_id == pid)
                                       .order_by(RouterOffer.id))).all())
    return items, offers


def accounted(items: list[QueueItem], offers: list[RouterOffer], capacity: dict[int, int]) -> None:
    """Each item waits, or is held by exactly one agent through one open offer or an accept."""
    open_offers = Counter(o.item_id for o in offers if o.status == "offered")
    load: Counter[int] = Counter()
    for i in items:
        assert i.status in ("waiting", "leased"), (i.id, i.status)
        assert open_offers[i.id] <= 1, f"item {i.id} has {open_offers[i.id]} open offers"
        if i.status == "leased":
            owner = i.lease_owner or ""
            assert owner.startswith("offer:") and open_offers[i.id] == 1 or owner.startswith("agent:"), owner
            load[i.agent_id or int(owner.split(":")[1])] += COST
    for agent_id, used in load.items():
        assert used <= capacity[agent_id], f"agent {agent_id} holds {used} units > {capacity[agent_id]}"


async def test_router_role_moves_when_the_leader_is_killed(db_config: dict[str, object], tmp_path: Path,
                                                           make_settings: Any) -> None:
    from umsg.core import Core

    env = db_env(db_config) | {"UMSG_ROUTER__OFFER_TIMEOUT_SECONDS": "600",
                               "UMSG_ROUTER__LEADER_POLL_SECONDS": "0.5",
                               "UMSG_ROUTER__SYNC_POLL_SECONDS": "0.2"}
    one = ServeProcess(tmp_path / "one", env, name="one")
    two = ServeProcess(tmp_path / "two", env, name="two")
    core = None
    try:
        await one.start()  # the first start migrates the schema and takes the role
        await two.start()
        core = await Core.open(make_settings(), migrate=False)

        async def someone_leads() -> bool:
            return any(ROLE_TAKEN in p.log_tail(200) for p in (one, two))

        await until("a process takes the router role", someone_leads, core)
        leaders = [p for p in (one, two) if ROLE_TAKEN in p.log_tail(200)]
        assert len(leaders) == 1, "exactly one process holds the router role"
        leader, survivor = leaders[0], (two if leaders[0] is one else one)
        pid = await core.ensure_project("default")
        agents = [await add_agent(core, pid, f"agent{n}") for n in range(3)]
        capacity = dict.fromkeys(agents, 100)
        async with core.sessions() as s:  # wake the leader: these agents are new to it
            for a in agents:
                core.events.add(s, pid, "agent.state", {"agent_id": a, "state": "available"})
            await s.commit()
        items = [await add_item(core, pid, "email") for _ in range(12)]

        async def all_offered() -> bool:
            its, _ = await snapshot(core, pid)
            return all(i.status == "leased" for i in its)

        await until("the leader offers every item", all_offered, core)
        _, before = await snapshot(core, pid)
        out = {o.id: o.item_id for o in before if o.status == "offered"}
        assert len(out) == len(items)

        leader.kill_now()
        await leader.wait(30)

        # Work goes on against the store while nobody leads: an accept and a decline.
        first, second = sorted(out)[:2]
        await core.router.accept(first, None)
        await core.router.decline(second, None, "busy")
        new_items = [await add_item(core, pid, "email") for _ in range(2)]

        async def taken_over() -> bool:
            return ROLE_TAKEN in survivor.log_tail(400)

        await until("the survivor takes the router role", taken_over, core, seconds=20)

        async def settled() -> bool:
            its, offs = await snapshot(core, pid)
            by_item = {o.item_id: o for o in offs if o.status == "offered"}
            declined = out[second]
            return (all(i.status == "leased" for i in its if i.id in new_items)
                    and declined in by_item and by_item[declined].id != second)

        await until("the survivor re-offers the declined item and offers the new ones", settled, core)
        after_items, after = await snapshot(core, pid)
        accounted(after_items, after, capacity)
        still = {o.id for o in after if o.status == "offered"}
        # Offers made by the dead leader survive as they were: same rows, still open.
        assert set(out) - {first, second} <= still
        assert {i.id for i in after_items} == set(items) | set(new_items)
        redeclined = next(o for o in after if o.status == "offered" and o.item_id == out[second])
        decliner = next(o.agent_id for o in after if o.id == second)
        assert redeclined.agent_id != decliner  # the decliner is skipped for a while
        async with core.readers() as s:
            states = {a.id: a.state for a in (await s.scalars(select(Agent).where(Agent.id.in_(agents)))).all()}
        assert set(states.values()) == {"available"}
    finally:
        if core is not None:
            await core.aclose()
        await one.aclose()
        await two.aclose()

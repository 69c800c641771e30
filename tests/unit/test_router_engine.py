"""Scenario tests of the router engine: each promise of the issue, one at a time."""

from __future__ import annotations

import pytest

from umsg.errors import Conflict
from umsg.router.engine import Engine
from umsg.router.explain import explain
from umsg.router.settings import QueuePolicy, RelaxStep, RouterSettings
from umsg.router.views import AgentSpec, ItemSpec

T0 = 1_000_000.0


def agent(aid: int, state: str = "available", skills: dict[str, int] | None = None, capacity: int = 100,
          queues: dict[str, int] | None = None) -> AgentSpec:
    return AgentSpec(id=aid, capacity=capacity, state=state, projects=frozenset({1}),
                     skills={(1, k): v for k, v in (skills or {}).items()}, queues={1: queues or {}})


def item(iid: int, channel: str = "email", at: float = T0, priority: int = 0, queue: str = "q",
         skills: dict[str, int] | None = None) -> ItemSpec:
    return ItemSpec(iid, 1, queue, channel, priority, skills or {}, at, conversation_id=iid)


def test_two_chats_and_an_email_fit_three_chats_do_not() -> None:
    e = Engine(RouterSettings())
    e.upsert_agent(agent(1), T0)
    for i, ch in enumerate(["chat", "chat", "chat", "email"], start=1):
        e.add_item(item(i, ch, at=T0 + i), T0 + 5)
    offers = e.decide(T0 + 5)
    assert sorted(o.item_id for o in offers) == [1, 2, 4]  # 34 + 34 + 20 = 88; a third chat is 102
    assert e.agents[1].load == 88
    assert e.items[3].status == "waiting"
    assert "full for 'chat'" in " ".join(explain(e, 3, T0 + 5)["reasons"])


def test_channel_cap() -> None:
    e = Engine(RouterSettings(channel_caps={"chat": 1}))
    e.upsert_agent(agent(1), T0)
    e.add_item(item(1, "chat"), T0)
    e.add_item(item(2, "chat", at=T0 + 1), T0 + 1)
    assert [o.item_id for o in e.decide(T0 + 2)] == [1]


def test_priority_is_a_head_start_not_starvation() -> None:
    e = Engine(RouterSettings(default_policy=QueuePolicy(priority_head_start_seconds=60)))
    e.add_item(item(1, at=T0, priority=0), T0)  # waited 100 s by decision time
    e.add_item(item(2, at=T0 + 90, priority=1), T0 + 90)  # effective time T0 + 30: behind item 1
    e.add_item(item(3, at=T0 + 95, priority=2), T0 + 95)  # effective time T0 - 25: first
    e.upsert_agent(agent(1, capacity=20), T0 + 100)
    got = []
    for _ in range(3):
        [o] = e.decide(T0 + 100)
        got.append(o.item_id)
        e.remove_item(o.item_id, T0 + 100)
    assert got == [3, 1, 2]


def test_relaxation_widens_skills_after_a_wait() -> None:
    policy = QueuePolicy(relax=[RelaxStep(after_seconds=30, lower_proficiency=2)])
    e = Engine(RouterSettings(queues={"q": policy}))
    e.upsert_agent(agent(1, skills={"fr": 2}), T0)
    e.add_item(item(1, skills={"fr": 4}), T0)
    assert e.decide(T0 + 1) == []
    assert "no agent of queue 'q' has skill 'fr' at proficiency >= 4" in explain(e, 1, T0 + 1)["reasons"]
    e.tick(T0 + 30)
    [o] = e.decide(T0 + 30)
    assert o.agent_id == 1 and o.why["relax_level"] == 1


def test_longest_idle_least_busy_fixed_order_round_robin() -> None:
    for strategy, expect in [("longest_idle", 2), ("least_busy", 3), ("fixed_order", 1), ("round_robin", 3)]:
        e = Engine(RouterSettings(default_policy=QueuePolicy(strategy=strategy)))  # type: ignore[arg-type]
        e.upsert_agent(agent(1, queues={"q": 0}), T0 + 3)
        e.upsert_agent(agent(2, queues={"q": 1}), T0 + 1)
        e.upsert_agent(agent(3, queues={"q": 2}), T0 + 2)
        e.add_item(item(100, channel="chat", queue="other"), T0 + 3)  # queue 'other' is nobody's
        e.agents[1].load = 0
        # Agents 1 and 2 had turns (round robin) and carry load (least busy); 3 had none.
        e.add_item(item(101, at=T0, queue="q"), T0 + 4)
        e.set_offered(101, 1, None)
        e.add_item(item(102, at=T0, queue="q"), T0 + 4)
        e.set_offered(102, 2, None)
        e.agents[1].idle_since = e.agents[2].idle_since = T0 - 10 if strategy == "longest_idle" else T0 + 5
        e.agents[1].idle_since = T0 + 9 if strategy == "longest_idle" else e.agents[1].idle_since
        for a in e.agents.values():
            e._touch(a)
        e.add_item(item(1, queue="q"), T0 + 10)
        [o] = e.decide(T0 + 10)
        assert o.agent_id == expect, strategy


def test_timeout_marks_the_agent_missed_and_requeues_with_original_age() -> None:
    e = Engine(RouterSettings(offer_timeout_seconds=20, decline_block_seconds=60))
    e.upsert_agent(agent(1), T0)
    e.add_item(item(1, at=T0 - 50), T0)
    [o] = e.decide(T0)
    released = e.tick(T0 + 20)
    assert [(r.item_id, r.agent_id, r.reason) for r in released] == [(1, 1, "timeout")]
    assert e.agents[1].state == "missed" and e.agents[1].load == 0
    assert e.items[1].status == "waiting" and e.items[1].eff == T0 - 50
    e.set_state(1, "available", T0 + 21)
    assert e.decide(T0 + 21) == []  # the agent who let it time out is skipped for a while
    assert e.items[1].declined[1] == T0 + 80
    e.tick(T0 + 81)
    assert [o.item_id for o in e.decide(T0 + 81)] == [1]


def test_decliner_is_skipped_but_gets_the_next_item() -> None:
    e = Engine(RouterSettings())
    e.upsert_agent(agent(1, capacity=20), T0)
    e.add_item(item(1, at=T0), T0)
    e.add_item(item(2, at=T0 + 1), T0 + 1)
    [o] = e.decide(T0 + 2)
    e.decline(o.item_id, 1, T0 + 3)
    [o2] = e.decide(T0 + 3)
    assert o2.item_id == 2
    with pytest.raises(Conflict):
        e.accept(1, 1)
    assert explain(e, 1, T0 + 3)["declined_by"] == [1]


def test_logout_requeues_everything_the_agent_holds() -> None:
    e = Engine(RouterSettings())
    e.upsert_agent(agent(1), T0)
    e.add_item(item(1), T0)
    e.add_item(item(2), T0)
    offers = e.decide(T0)
    e.accept(offers[0].item_id, 1)
    released = e.set_state(1, "offline", T0 + 1)
    assert sorted(r.item_id for r in released) == [1, 2]
    assert all(i.status == "waiting" for i in e.items.values()) and e.agents[1].load == 0


def test_pinned_item_waits_for_its_agent_until_the_pin_expires() -> None:
    e = Engine(RouterSettings())
    e.upsert_agent(agent(1, state="break"), T0)
    e.upsert_agent(agent(2), T0)
    e.add_item(item(1), T0, pin=(1, T0 + 30))
    assert e.decide(T0 + 1) == []
    assert "reserved for agent 1" in explain(e, 1, T0 + 1)["reasons"][0]
    e.set_state(1, "available", T0 + 2)
    [o] = e.decide(T0 + 2)
    assert (o.agent_id, o.why["step"]) == (1, "pinned")
    e2 = Engine(RouterSettings())
    e2.upsert_agent(agent(2), T0)
    e2.add_item(item(1), T0, pin=(1, T0 + 30))
    e2.tick(T0 + 30)
    assert [o.agent_id for o in e2.decide(T0 + 30)] == [2]


def test_after_work_timer_returns_the_agent() -> None:
    e = Engine(RouterSettings())
    e.upsert_agent(agent(1, state="after_work"), T0)
    e.set_state(1, "after_work", T0, until=T0 + 15)
    e.add_item(item(1), T0)
    assert e.decide(T0 + 1) == []
    e.tick(T0 + 15)
    assert e.take_state_changes() == [1]
    assert [o.agent_id for o in e.decide(T0 + 15)] == [1]


def test_explain_names_missing_skill_and_unavailable_agents() -> None:
    e = Engine(RouterSettings())
    e.upsert_agent(agent(1, state="break", skills={"en": 3}), T0)
    e.add_item(item(1, skills={"de": 1}), T0)
    e.add_item(item(2, skills={"en": 2}), T0)
    assert explain(e, 1, T0)["reasons"] == ["no agent of queue 'q' has skill 'de' at proficiency >= 1"]
    assert explain(e, 2, T0)["reasons"] == ["none of the 1 eligible agents is available (break 1)"]
    assert explain(e, 99, T0)["known"] is False


def test_an_agent_is_indexed_once_per_skill_not_per_queue_cost_and_level() -> None:
    """Indexes, not scans: with two queues of one strategy, two channel costs and items asking for
    levels 1-3 of three skills, an agent at level 5 sits in three agent families (one per skill),
    and a decision about it leaves one live heap entry per family, not one per queue x cost x level."""
    e = Engine(RouterSettings())
    iid = 0
    for q in ("sales", "support"):
        for ch in ("chat", "email"):
            for s in ("en", "fr", "de"):
                for lv in (1, 2, 3):
                    iid += 1
                    e.add_item(item(iid, ch, at=T0 + iid, queue=q, skills={s: lv}), T0)
    e.upsert_agent(agent(1, skills={"en": 5, "fr": 5, "de": 5}), T0)
    e.upsert_agent(agent(2, skills={"en": 2}), T0 - 5)
    a = e.agents[1]
    assert len(a.families) == 3 and len(e.agents[2].families) == 1
    [o] = e.decide(T0 + 1, limit=1)
    assert o.item_id == 1 and o.agent_id == 2  # en >= 1: both could; agent 2 has been idle longer
    [o] = e.decide(T0 + 1, limit=1)
    assert o.item_id == 2 and o.agent_id == 1
    live = [entry for f in a.families for heap in f.heaps for entry in heap if entry[2] == a.version]
    assert len(live) == 3


def test_many_distinct_queue_memberships_do_not_multiply_what_a_pool_reads() -> None:
    """Agents limited to different sets of queues: a pool still reads only its queue's family and
    the every-queue family (per skill level and capacity band), and picks the right agent."""
    e = Engine(RouterSettings())
    queues = [f"q{i}" for i in range(8)]
    for i, q in enumerate(queues):
        e.add_item(item(i + 1, "email", at=T0 + i, queue=q), T0)
    e.upsert_agent(agent(1, state="break"), T0)  # every queue
    for aid in range(2, 2 + 2 ** 6):  # 64 agents, each with its own set of queues
        member = {q: 0 for j, q in enumerate(queues[:6]) if aid & (1 << j)} or {"q7": 0}
        e.upsert_agent(agent(aid, state="break", queues=member), T0)
    for key, pool in e._pools.items():
        assert len(pool.families) <= 2, key
        assert len(pool.heaps) <= 2 * len(e._costs), key
    e.set_state(37, "available", T0 + 1)  # 37 = 0b100101: q0, q2, q5
    offers = e.decide(T0 + 1)
    assert sorted(o.item_id for o in offers) == [1, 3, 6] and {o.agent_id for o in offers} == {37}

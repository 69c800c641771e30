"""Property-based model of the router engine: random arrivals, presence changes, accepts,
declines, timeouts, transfers and completions, with the brute-force audit as the oracle."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from umsg.router.audit import before_decision, order_violation, violations
from umsg.router.engine import Engine
from umsg.router.settings import QueuePolicy, RelaxStep, RouterSettings
from umsg.router.views import AgentSpec, ItemSpec

SKILLS = ("en", "fr", "billing")
QUEUES = ("sales", "support")
CHANNELS = ("chat", "email", "sms")
STATES = ("available", "available", "available", "break", "after_work", "offline")


def make_settings(strategy: str) -> RouterSettings:
    return RouterSettings(
        channel_caps={"chat": 2},
        queues={
            "sales": QueuePolicy(strategy=strategy),  # type: ignore[arg-type]
            "support": QueuePolicy(strategy="least_busy", priority_head_start_seconds=10,
                                   relax=[RelaxStep(after_seconds=40, lower_proficiency=1),
                                          RelaxStep(after_seconds=90, drop_skills=["*"])]),
        },
        offer_timeout_seconds=20, decline_block_seconds=30, after_work_seconds=15,
    )


class RouterModel(RuleBasedStateMachine):
    strategy = "longest_idle"

    @initialize()
    def setup(self) -> None:
        self.engine = Engine(make_settings(self.strategy))
        self.now = 1_000_000.0
        self.next_item = 1
        self.next_agent = 1
        self.removed: set[int] = set()
        self.added: set[int] = set()

    def _decide(self) -> None:
        """Decide one offer at a time so that every single decision is checked against the oracle."""
        for _ in range(200):
            before = before_decision(self.engine, self.now)
            offers = self.engine.decide(self.now, limit=1)
            if not offers:
                return
            problem = order_violation(offers[0], before)
            assert problem is None, problem

    @rule(capacity=st.sampled_from([100, 60, 40]),
          skills=st.dictionaries(st.sampled_from(SKILLS), st.integers(1, 5), max_size=3),
          projects=st.sets(st.sampled_from([1, 2]), min_size=1),
          queues=st.sets(st.sampled_from(QUEUES)), rank=st.integers(0, 5),
          state=st.sampled_from(STATES))
    def add_agent(self, capacity: int, skills: dict[str, int], projects: set[int], queues: set[str],
                  rank: int, state: str) -> None:
        spec = AgentSpec(
            id=self.next_agent, capacity=capacity, state=state, projects=frozenset(projects),
            skills={(p, k): v for p in projects for k, v in skills.items()},
            queues={p: {q: rank for q in queues} for p in projects},
            state_until=self.now + 15 if state == "after_work" else None)
        self.next_agent += 1
        self.engine.upsert_agent(spec, self.now)

    @rule(project=st.sampled_from([1, 2]), queue=st.sampled_from(QUEUES), channel=st.sampled_from(CHANNELS),
          priority=st.integers(-2, 3), skills=st.dictionaries(st.sampled_from(SKILLS), st.integers(1, 4),
                                                              max_size=2),
          pin=st.booleans(), pin_to=st.integers(1, 8))
    def arrive(self, project: int, queue: str, channel: str, priority: int, skills: dict[str, int],
               pin: bool, pin_to: int) -> None:
        spec = ItemSpec(self.next_item, project, queue, channel, priority, skills, self.now, 0)
        self.added.add(self.next_item)
        self.next_item += 1
        self.engine.add_item(spec, self.now, (pin_to, self.now + 25) if pin else None)

    @precondition(lambda self: self.engine.agents)
    @rule(data=st.data(), capacity=st.sampled_from([100, 60, 40]),
          skills=st.dictionaries(st.sampled_from(SKILLS), st.integers(1, 5), max_size=3),
          projects=st.sets(st.sampled_from([1, 2]), min_size=1),
          queues=st.sets(st.sampled_from(QUEUES)), rank=st.integers(0, 5),
          state=st.sampled_from(STATES))
    def change_agent(self, data: Any, capacity: int, skills: dict[str, int], projects: set[int],
                     queues: set[str], rank: int, state: str) -> None:
        """The store says an agent's skills, projects, queues or capacity changed (upsert again)."""
        agent_id = data.draw(st.sampled_from(sorted(self.engine.agents)))
        load = self.engine.agents[agent_id].load
        spec = AgentSpec(
            id=agent_id, capacity=max(capacity, load), state=state, projects=frozenset(projects),
            skills={(p, k): v for p in projects for k, v in skills.items()},
            queues={p: {q: rank for q in queues} for p in projects},
            state_until=self.now + 15 if state == "after_work" else None)
        self.engine.upsert_agent(spec, self.now)

    @precondition(lambda self: self.engine.agents)
    @rule(data=st.data(), state=st.sampled_from(STATES))
    def change_state(self, data: Any, state: str) -> None:
        agent_id = data.draw(st.sampled_from(sorted(self.engine.agents)))
        until = self.now + 15 if state == "after_work" else None
        self.engine.set_state(agent_id, state, self.now, until)

    @rule(seconds=st.sampled_from([0.5, 3, 11, 21, 45]))
    def advance(self, seconds: float) -> None:
        self.now += seconds
        for r in self.engine.tick(self.now):
            assert self.engine.items[r.item_id].status in ("waiting", "pinned")
            assert self.engine.agents[r.agent_id].state == "missed"
        self.engine.take_state_changes()

    def _pick(self, data: Any, statuses: tuple[str, ...]) -> int | None:
        ids = sorted(i for i, it in self.engine.items.items() if it.status in statuses)
        return data.draw(st.sampled_from(ids)) if ids else None

    @rule(data=st.data())
    def accept(self, data: Any) -> None:
        item_id = self._pick(data, ("offered",))
        if item_id is not None:
            agent_id = self.engine.items[item_id].agent_id
            assert agent_id is not None
            self.engine.accept(item_id, agent_id)

    @rule(data=st.data())
    def decline(self, data: Any) -> None:
        item_id = self._pick(data, ("offered",))
        if item_id is not None:
            agent_id = self.engine.items[item_id].agent_id
            assert agent_id is not None
            self.engine.decline(item_id, agent_id, self.now)
            assert self.engine.items[item_id].declined[agent_id] > self.now

    @rule(data=st.data())
    def complete(self, data: Any) -> None:
        item_id = self._pick(data, ("accepted",))
        if item_id is not None:
            self.engine.remove_item(item_id, self.now)
            self.removed.add(item_id)

    @rule(data=st.data(), to_queue=st.sampled_from((None, *QUEUES)), to_agent=st.integers(1, 8))
    def transfer(self, data: Any, to_queue: str | None, to_agent: int) -> None:
        item_id = self._pick(data, ("waiting", "offered", "accepted", "pinned"))
        if item_id is None:
            return
        if to_queue is None:
            self.engine.requeue(item_id, self.now, pin=(to_agent, self.now + 20))
        else:
            self.engine.requeue(item_id, self.now, queue=to_queue)

    @rule()
    def decide(self) -> None:
        self._decide()

    @invariant()
    def holds(self) -> None:
        if not hasattr(self, "engine"):
            return
        problems = violations(self.engine, self.now, settled=False)
        assert not problems, problems
        # Nothing lost: every item ever added is tracked or was completed.
        assert set(self.engine.items) | self.removed == self.added

    @invariant()
    def settled_after_decide(self) -> None:
        if not hasattr(self, "engine"):
            return
        self._decide()
        problems = violations(self.engine, self.now, settled=True)
        assert not problems, problems


class LeastBusyModel(RouterModel):
    strategy = "least_busy"


class FixedOrderModel(RouterModel):
    strategy = "fixed_order"


class RoundRobinModel(RouterModel):
    strategy = "round_robin"


_SETTINGS = settings(max_examples=60, stateful_step_count=60, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("model", [RouterModel, LeastBusyModel, FixedOrderModel, RoundRobinModel],
                         ids=lambda m: m.strategy)
def test_router_model(model: type[RouterModel]) -> None:
    model.TestCase.settings = _SETTINGS
    model.TestCase().runTest()

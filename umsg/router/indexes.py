"""The indexes behind the router's decisions (see `umsg.router.engine` for how they are used).

- A *pool* is (project, queue, channel, requirement). Waiting items of a pool sit
  in a heap keyed by effective enqueue time (enqueued_at minus the priority head
  start), so the best item of a pool is its head.
- Agents sit in heaps per (project, queue, channel cost, requirement), holding
  those that are eligible *and* have room for one more item of that cost, keyed
  by the queue's strategy (idle since, load, fixed rank, round-robin turn).
  Entries are never searched for and removed: an agent change bumps its version
  and pushes fresh entries; stale ones are skipped when they surface (lazy
  deletion), so an update is a few O(log n) pushes and a pick an O(log n) pop.
- A `ready` heap orders pools by their head's effective time, one pending entry
  per pool, so decisions follow global priority/age order without visiting idle pools.
"""


from __future__ import annotations

import itertools
from heapq import heapify, heappop, heappush

from umsg.errors import NotFound
from umsg.router.settings import RouterSettings
from umsg.router.views import (
    OFFERABLE_STATES,
    AgentSpec,
    AgentView,
    APool,
    ItemSpec,
    ItemView,
    PoolKey,
    Req,
)

AgentEntry = tuple[float, float, int, int]  # (strategy key, tie-break key, agent version, agent id)
# Agents are indexed per APool (project, queue, channel cost, requirement): channels of equal
# cost share one heap, so an agent change pushes fewer entries than one heap per channel would.
ItemEntry = tuple[float, int, int]  # (effective time, item id, item version)


def relaxed(skills: dict[str, int], settings: RouterSettings, queue: str, level: int) -> Req:
    """The requirement of an item after `level` relaxation steps of its queue."""
    need = dict(skills)
    for step in settings.policy(queue).relax[:level]:
        if "*" in step.drop_skills:
            need.clear()
        for name in step.drop_skills:
            need.pop(name, None)
        need = {k: max(1, v - step.lower_proficiency) for k, v in need.items()}
    return tuple(sorted(need.items()))


class PoolIndex:
    """Pools, agent heaps, the ready heap and timers of one router shard (no policy of its own)."""

    def __init__(self, settings: RouterSettings) -> None:
        self.settings = settings
        self.agents: dict[int, AgentView] = {}
        self.items: dict[int, ItemView] = {}
        self._agents_in: dict[APool, list[AgentEntry]] = {}
        self._item_pools: dict[APool, list[PoolKey]] = {}
        self._items_in: dict[PoolKey, list[ItemEntry]] = {}
        self._members: dict[APool, set[int]] = {}
        self._waiting: dict[PoolKey, int] = {}
        self._by_project: dict[int, set[int]] = {}
        self._ready: list[tuple[float, int, PoolKey]] = []
        self._marked: dict[PoolKey, float] = {}  # the head time each pool's pending ready entry has
        # Pools by (project, one required skill or None): an agent can only be eligible for pools
        # listed under its own skills, so adding an agent never looks at every pool.
        self._pools_by_skill: dict[tuple[int, str | None], set[APool]] = {}
        self._pinned: dict[int, list[ItemEntry]] = {}
        self._pin_dirty: set[int] = set()
        self._timers: list[tuple[float, int, str, int, int]] = []
        self._seq = itertools.count()
        self._rr = itertools.count(1)
        self._ended_after_work: list[int] = []

    def _candidate_pools(self, spec: AgentSpec) -> set[APool]:
        found: set[APool] = set()
        by_skill = self._pools_by_skill
        for p in spec.projects:
            found |= by_skill.get((p, None), set())
        for key in spec.skills:
            found |= by_skill.get(key, set())
        return found

    def _eligible(self, a: AgentView, pool: PoolKey | APool) -> bool:
        project, queue, _channel, req = pool
        if project not in a.spec.projects:
            return False
        queues = a.spec.queues.get(project)
        if queues and queue not in queues:
            return False
        skills = a.spec.skills
        return all(skills.get((project, name), 0) >= level for name, level in req)

    def fits(self, a: AgentView, channel: str) -> bool:
        if a.state not in OFFERABLE_STATES:
            return False
        if a.load + self.settings.cost(channel) > a.spec.capacity:
            return False
        cap = self.settings.channel_caps.get(channel)
        return cap is None or a.per_channel[channel] < cap

    def _key(self, a: AgentView, queue: str, project: int) -> tuple[float, float]:
        strategy = self.settings.policy(queue).strategy
        if strategy == "longest_idle":
            return (a.idle_since, 0.0)
        if strategy == "least_busy":
            return (a.load / max(1, a.spec.capacity), a.idle_since)
        if strategy == "fixed_order":
            return (float(a.spec.queues.get(project, {}).get(queue, 0)), 0.0)
        return (float(a.rr_seq), 0.0)

    def _apool(self, pool: PoolKey) -> APool:
        return (pool[0], pool[1], self.settings.cost(pool[2]), pool[3])

    def _touch(self, a: AgentView) -> None:
        """The agent changed: invalidate its old heap entries and push current ones."""
        a.version += 1
        if a.state in OFFERABLE_STATES and a.pools:
            free = a.spec.capacity - a.load
            keys: dict[tuple[str, int], tuple[float, float]] = {}
            marked, waiting = self._marked, self._waiting
            for ap in a.pools:
                if ap[2] > free:
                    continue
                qp = (ap[1], ap[0])
                key = keys.get(qp)
                if key is None:
                    key = keys[qp] = self._key(a, ap[1], ap[0])
                heap = self._agents_in[ap]
                heappush(heap, (key[0], key[1], a.version, a.id))
                if len(heap) > 2 * len(self._members[ap]) + 64:
                    self._compact_agents(ap)
                for pool in self._item_pools[ap]:
                    # A pool with a pending ready entry will look at its agents anyway.
                    if waiting[pool] and pool not in marked:
                        self._mark(pool)
        if self._pinned.get(a.id):
            self._pin_dirty.add(a.id)

    def _compact_agents(self, ap: APool) -> None:
        agents = self.agents
        live = [e for e in self._agents_in[ap] if (a := agents.get(e[3])) is not None and a.version == e[2]]
        heapify(live)
        self._agents_in[ap] = live

    def _eff(self, spec: ItemSpec) -> float:
        """Effective enqueue time: priority buys a head start of a configured number of seconds."""
        return spec.enqueued_at - spec.priority * self.settings.policy(spec.queue).priority_head_start_seconds

    def _place(self, item: ItemView, now: float) -> None:
        spec = item.spec
        steps = self.settings.policy(spec.queue).relax
        waited = now - spec.enqueued_at
        level = sum(1 for s in steps if s.after_seconds <= waited)
        req = relaxed(spec.skills, self.settings, spec.queue, level)
        pool = (spec.project_id, spec.queue, spec.channel, req)
        if pool not in self._items_in:
            self._new_pool(pool)
        item.status, item.pool, item.relax_level, item.pin_agent = "waiting", pool, level, None
        item.version += 1
        heap = self._items_in[pool]
        heappush(heap, (item.eff, item.id, item.version))
        self._waiting[pool] += 1
        if len(heap) > 2 * self._waiting[pool] + 64:
            self._compact_items(pool)
        if level < len(steps):
            self._timer(spec.enqueued_at + steps[level].after_seconds, "relax", item.id, item.version)
        self._mark(pool)

    def _new_pool(self, pool: PoolKey) -> None:
        self._items_in[pool] = []
        self._waiting[pool] = 0
        ap = self._apool(pool)
        if ap in self._members:
            self._item_pools[ap].append(pool)
            return
        self._item_pools[ap] = [pool]
        members: set[int] = set()
        heap: list[AgentEntry] = []
        self._members[ap], self._agents_in[ap] = members, heap
        req = pool[3]
        self._pools_by_skill.setdefault((pool[0], req[0][0] if req else None), set()).add(ap)
        # A new requirement is rare (routes define them): one pass over the project's agents.
        for agent_id in self._by_project.get(pool[0], ()):
            a = self.agents[agent_id]
            if self._eligible(a, ap):
                members.add(agent_id)
                a.pools.add(ap)
                if a.state in OFFERABLE_STATES and a.load + ap[2] <= a.spec.capacity:
                    key = self._key(a, ap[1], ap[0])
                    heappush(heap, (key[0], key[1], a.version, a.id))

    def _compact_items(self, pool: PoolKey) -> None:
        live = [e for e in self._items_in[pool] if self._live_item(e, pool) is not None]
        heapify(live)
        self._items_in[pool] = live

    def _live_item(self, entry: ItemEntry, pool: PoolKey) -> ItemView | None:
        item = self.items.get(entry[1])
        if item is None or item.version != entry[2] or item.status != "waiting" or item.pool != pool:
            return None
        return item

    def _unwait(self, item: ItemView) -> None:
        """Take an item out of its pool or pin (its heap entries go stale)."""
        pool = item.pool if item.status == "waiting" else None
        item.pool, item.pin_agent = None, None
        item.version += 1
        if pool is not None:
            self._waiting[pool] -= 1
            self._mark(pool)  # its head may have been this item: the pool's ready entry must follow

    def _head(self, pool: PoolKey) -> ItemView | None:
        heap = self._items_in[pool]
        while heap:
            item = self._live_item(heap[0], pool)
            if item is not None:
                return item
            heappop(heap)
        return None

    def _room(self, a: AgentView, channel: str) -> bool:
        return a.state in OFFERABLE_STATES and a.load + self.settings.cost(channel) <= a.spec.capacity

    def _mark(self, pool: PoolKey) -> None:
        """Make sure the ready heap has an entry for the pool's current head (one, not many)."""
        head = self._head(pool)
        if head is not None and head.eff < self._marked.get(pool, float("inf")):
            self._marked[pool] = head.eff
            heappush(self._ready, (head.eff, next(self._seq), pool))

    def _timer(self, when: float, kind: str, ident: int, version: int) -> None:
        heappush(self._timers, (when, next(self._seq), kind, ident, version))

    def _agent(self, agent_id: int) -> AgentView:
        a = self.agents.get(agent_id)
        if a is None:
            raise NotFound(f"agent {agent_id} is not known to the router")
        return a

    def _item(self, item_id: int) -> ItemView:
        item = self.items.get(item_id)
        if item is None:
            raise NotFound(f"queue item {item_id} is not known to the router")
        return item

    def pool_waiting(self, pool: PoolKey) -> int:
        return self._waiting.get(pool, 0)

    def pool_members(self, pool: PoolKey) -> set[int]:
        return self._members.get(self._apool(pool), set())

"""The indexes behind the router's decisions (see `umsg.router.engine` for how they are used).

- A *pool* (umsg.router.families.Pool) is (project, queue, channel, requirement):
  its waiting items sit in a heap keyed by effective enqueue time (enqueued_at
  minus the priority head start), so the best item of a pool is its head.
- Agents sit in *families* (umsg.router.families.Family): (project, strategy,
  queue signature, skill atom). The strategy is the queue's ordering, so queues
  with the same strategy share a family (fixed order is per queue: the rank is);
  the signature is None for agents serving every queue of the project, else the
  one queue (an agent limited to some queues has a family per queue it serves);
  the atom is one skill at one *exact* proficiency, no skill, or a whole
  multi-skill requirement. Inside a family, agents are heaped by strategy key,
  one heap per capacity band (the largest channel cost that still fits). An
  agent is in one family per (project, strategy, skill it has) that some pool
  asks for: 4 in the benchmark, not one heap per queue x cost x level (29).
- A pool reads the heads of the families that serve it: signature None or its
  queue, levels at or above its minimum, bands with room for its cost. That is
  a handful of heaps whatever the number of agents or of queue memberships.
- Entries are never searched for and removed: an agent change bumps its version
  and pushes one fresh entry per family; stale ones are skipped when they
  surface (lazy deletion). An update is a few O(log n) pushes, a pick a few
  O(log n) pops.
- A `ready` heap orders pools by their head's effective time, one pending entry
  per pool, so decisions follow global priority/age order without visiting idle
  pools. A pool no agent can serve is *parked* in its families; an agent that
  comes available or gains room wakes only the parked pools of its own families.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left, bisect_right
from heapq import heapify, heappop, heappush

from umsg.errors import NotFound
from umsg.router.families import AgentEntry, AKind, Family, ItemEntry, KindKey, Need, Pool
from umsg.router.settings import RouterSettings
from umsg.router.views import OFFERABLE_STATES, AgentView, ItemSpec, ItemView, PoolKey, Req

__all__ = ["AgentEntry", "ItemEntry", "Pool", "PoolIndex", "relaxed"]


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
    """Pools, agent families, the ready heap and timers of one router shard (no policy of its own)."""

    def __init__(self, settings: RouterSettings) -> None:
        self.settings = settings
        self.agents: dict[int, AgentView] = {}
        self.items: dict[int, ItemView] = {}
        # Distinct channel costs, ascending: an agent's band is the last one that fits its free room.
        self._costs = sorted({*settings.channel_costs.values(), settings.default_cost})
        self._pools: dict[PoolKey, Pool] = {}
        self._pools_by: dict[tuple[int, KindKey, AKind], list[Pool]] = {}
        self._fams: dict[tuple[int, KindKey, str | None, AKind, int], Family] = {}
        self._fams_by: dict[tuple[int, KindKey, AKind], list[Family]] = {}
        self._needs: dict[int, dict[KindKey, Need]] = {}  # project -> strategy -> what its pools ask
        self._kinds: dict[str, KindKey] = {}
        self._pks: dict[tuple[int, KindKey], tuple[int, KindKey]] = {}  # one shared object per (project, kind)
        self._by_project: dict[int, set[int]] = {}
        self._ready: list[tuple[float, int, Pool]] = []
        self._pinned: dict[int, list[ItemEntry]] = {}
        self._pin_dirty: set[int] = set()
        self._timers: list[tuple[float, int, str, int, int]] = []
        self._seq = itertools.count()
        self._rr = itertools.count(1)
        self._ended_after_work: list[int] = []

    # -- eligibility ------------------------------------------------------------------------------

    def _eligible(self, a: AgentView, pool: PoolKey) -> bool:
        """The plain rule (for audits and explain); deciding uses the families instead."""
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

    def _kind(self, queue: str) -> KindKey:
        kind = self._kinds.get(queue)
        if kind is None:
            strategy = self.settings.policy(queue).strategy
            kind = self._kinds[queue] = (strategy, queue) if strategy == "fixed_order" else (strategy,)
        return kind

    def _key(self, a: AgentView, project: int, kind: KindKey) -> tuple[float, float]:
        strategy = kind[0]
        if strategy == "longest_idle":
            return (a.idle_since, 0.0)
        if strategy == "least_busy":
            return (a.load / max(1, a.spec.capacity), a.idle_since)
        if strategy == "fixed_order":
            return (float(a.spec.queues.get(project, {}).get(kind[1], 0)), 0.0)
        return (float(a.rr_seq), 0.0)

    # -- families ---------------------------------------------------------------------------------

    def _families(self, a: AgentView) -> list[Family]:
        """The families the agent belongs to, grouped by (project, strategy); creates missing ones."""
        spec = a.spec
        out: list[Family] = []
        for p in sorted(spec.projects):
            needs = self._needs.get(p)
            if not needs:
                continue
            queues = spec.queues.get(p)
            mine = [(s, lv) for (pp, s), lv in spec.skills.items() if pp == p and lv >= 1]
            for kind, need in needs.items():
                sigs: list[str | None] = [q for q in queues if q in need.queues] if queues else [None]
                for sig in sigs:
                    if need.none:
                        out.append(self._family(p, kind, sig, None, 0))
                    for s, lv in mine:
                        if s in need.skills:
                            out.append(self._family(p, kind, sig, s, lv))
                    for req in need.multi:
                        if all(spec.skills.get((p, s), 0) >= lv for s, lv in req):
                            out.append(self._family(p, kind, sig, req, 0))
        return out

    def _family(self, p: int, kind: KindKey, sig: str | None, akind: AKind, level: int) -> Family:
        key = (p, kind, sig, akind, level)
        f = self._fams.get(key)
        if f is None:
            pk = self._pks.setdefault((p, kind), (p, kind))
            f = self._fams[key] = Family(p, kind, pk, sig, akind, level, len(self._costs))
            self._fams_by.setdefault((p, kind, akind), []).append(f)
            for pool in self._pools_by.get((p, kind, akind), ()):
                if f.serves(pool):
                    pool.link(f)
        return f

    def _refamily(self, a: AgentView) -> bool:
        """Recompute the agent's families; True when they changed (the caller then touches it)."""
        new = self._families(a)
        old = a.families
        if new == old:
            return False
        for f in old:
            f.members.discard(a.id)
        for f in new:
            f.members.add(a.id)
        a.families = new
        return True

    def _reindex(self, project: int, only_limited: bool) -> None:
        """Pools asked for something new: one pass over the project's agents (rare: routes define
        requirements). `only_limited`: just a new queue, which concerns agents limited to some queues."""
        for agent_id in self._by_project.get(project, ()):
            a = self.agents[agent_id]
            if only_limited and not a.spec.queues.get(project):
                continue
            if self._refamily(a):
                self._touch(a)

    def _touch(self, a: AgentView, gained: bool = True) -> None:
        """The agent changed: invalidate its old heap entries and push current ones.

        `gained`: it may have come available or gained room, so pools parked in its families
        may now be served (an offer only takes room away, and passes False).
        """
        a.version += 1
        if a.state in OFFERABLE_STATES and a.families:
            band = bisect_right(self._costs, a.spec.capacity - a.load) - 1
            if band >= 0:
                v, aid = a.version, a.id
                last: tuple[int, KindKey] | None = None
                entry: AgentEntry = (0.0, 0.0, v, aid, a)
                for f in a.families:
                    if f.pk is not last:
                        last = f.pk
                        k0, k1 = self._key(a, f.project, f.kind)
                        entry = (k0, k1, v, aid, a)
                    heap = f.heaps[band]
                    heappush(heap, entry)
                    if len(heap) > 2 * len(f.members) + 64:
                        self._compact_agents(heap)
                if gained:
                    for f in a.families:
                        if f.parked:
                            self._unpark(f, band)
        if self._pinned.get(a.id):
            self._pin_dirty.add(a.id)

    def _unpark(self, f: Family, band: int) -> None:
        """An agent of `f` with room up to `band` is free: mark the parked pools it could serve."""
        for pool in list(f.parked):
            if pool.marked is not None or not pool.waiting:
                del f.parked[pool]  # marked or emptied since
            elif pool.band <= band:
                del f.parked[pool]
                self._mark(pool)

    def _park(self, pool: Pool) -> None:
        """Nobody can take the pool's head now: its families wake it when one of their agents can."""
        for f in pool.families:
            f.parked[pool] = None

    def _compact_agents(self, heap: list[AgentEntry]) -> None:
        live = [e for e in heap if e[4].version == e[2]]
        heapify(live)
        heap[:] = live  # in place: pools hold references to their families' heaps

    # -- pools ------------------------------------------------------------------------------------

    def _eff(self, spec: ItemSpec) -> float:
        """Effective enqueue time: priority buys a head start of a configured number of seconds."""
        return spec.enqueued_at - spec.priority * self.settings.policy(spec.queue).priority_head_start_seconds

    def _place(self, item: ItemView, now: float) -> None:
        spec = item.spec
        steps = self.settings.policy(spec.queue).relax
        level = 0
        if steps:
            waited = now - spec.enqueued_at
            level = sum(1 for s in steps if s.after_seconds <= waited)
        req = relaxed(spec.skills, self.settings, spec.queue, level)
        key = (spec.project_id, spec.queue, spec.channel, req)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._new_pool(key)
        item.status, item.pool, item.slot, item.relax_level, item.pin_agent = "waiting", pool.key, pool, level, None
        item.version += 1
        heap = pool.items
        heappush(heap, (item.eff, item.id, item.version))
        pool.waiting += 1
        if len(heap) > 2 * pool.waiting + 64:
            self._compact_items(pool)
        if level < len(steps):
            self._timer(spec.enqueued_at + steps[level].after_seconds, "relax", item.id, item.version)
        self._mark(pool)

    def _new_pool(self, key: PoolKey) -> Pool:
        project = key[0]
        kind = self._kind(key[1])
        pool = Pool(key, kind, bisect_left(self._costs, self.settings.cost(key[2])))
        self._pools[key] = pool
        self._pools_by.setdefault((project, kind, pool.akind), []).append(pool)
        for f in self._fams_by.get((project, kind, pool.akind), ()):
            if f.serves(pool):
                pool.link(f)
        new_queue, new_atom = self._needs.setdefault(project, {}).setdefault(kind, Need()).add(pool)
        if new_queue or new_atom:
            self._reindex(project, only_limited=not new_atom)
        return pool

    def _compact_items(self, pool: Pool) -> None:
        live = [e for e in pool.items if self._live_item(e, pool) is not None]
        heapify(live)
        pool.items[:] = live

    def _live_item(self, entry: ItemEntry, pool: Pool) -> ItemView | None:
        item = self.items.get(entry[1])
        if item is None or item.version != entry[2] or item.status != "waiting" or item.slot is not pool:
            return None
        return item

    def _unwait(self, item: ItemView) -> None:
        """Take an item out of its pool or pin (its heap entries go stale)."""
        pool = item.slot if item.status == "waiting" else None
        item.pool, item.slot, item.pin_agent = None, None, None
        item.version += 1
        if pool is not None:
            pool.waiting -= 1
            self._mark(pool)  # its head may have been this item: the pool's ready entry must follow

    def _head(self, pool: Pool) -> ItemView | None:
        heap = pool.items
        items = self.items
        while heap:
            entry = heap[0]
            item = items.get(entry[1])
            if item is not None and item.version == entry[2] and item.status == "waiting" and item.slot is pool:
                return item
            heappop(heap)
        return None

    def _mark(self, pool: Pool) -> None:
        """Make sure the ready heap has an entry for the pool's current head (one, not many)."""
        head = self._head(pool)
        if head is not None and (pool.marked is None or head.eff < pool.marked):
            pool.marked = head.eff
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
        p = self._pools.get(pool)
        return p.waiting if p is not None else 0

    def pool_members(self, pool: PoolKey) -> set[int]:
        """Agents eligible for the pool, whatever their state (a diagnostic: builds a set)."""
        p = self._pools.get(pool)
        return set().union(*(f.members for f in p.families)) if p is not None else set()

"""The two index objects of the router: pools of waiting items and families of agents.

A `Pool` is one (project, queue, channel, requirement): a heap of its waiting
items by effective enqueue time. A `Family` is a set of agents that share what
decides eligibility and order, heaped by strategy key in one heap per capacity
band. A pool is linked to every family that can serve it and reads only their
heap heads; see `umsg.router.indexes` for how both are kept up to date.
"""

from __future__ import annotations

from umsg.router.views import AgentView, PoolKey, Req

# A queue's ordering of agents: ("longest_idle",), ("least_busy",), ("round_robin",) are the same
# whatever the queue, so queues sharing one share agent heaps; ("fixed_order", queue) is per queue.
KindKey = tuple[str, ...]
# What a family holds about skills: None (any agent), a skill name (agents with that skill at exactly
# `level`), or a whole requirement of several skills (agents meeting all of it).
AKind = str | Req | None
# (strategy key, tie-break key, agent version, agent id, agent): (version, id) is unique within a heap,
# so the agent itself is never compared; carrying it saves a lookup in a dict of every agent per look.
AgentEntry = tuple[float, float, int, int, AgentView]
ItemEntry = tuple[float, int, int]  # (effective time, item id, item version)


class Family:
    """Agents of one project with the same strategy, queue signature and skill atom.

    The signature is None for agents serving every queue of the project, else one queue: an
    agent limited to some queues is in one family per queue it serves. (A family per *set* of
    queues would share more, but a pool would then read one family per distinct set.)
    """

    __slots__ = ("project", "kind", "pk", "sig", "akind", "level", "heaps", "members", "pools", "parked")

    def __init__(self, project: int, kind: KindKey, pk: tuple[int, KindKey], sig: str | None,
                 akind: AKind, level: int, bands: int) -> None:
        self.project, self.kind, self.pk = project, kind, pk
        self.sig = sig  # the queue its agents serve; None: they serve every queue of the project
        self.akind, self.level = akind, level
        self.heaps: list[list[AgentEntry]] = [[] for _ in range(bands)]  # per capacity band
        self.members: set[int] = set()  # every agent of the family, whatever its state or load
        self.pools: list[Pool] = []  # the pools this family can serve
        # Those of them waiting for an agent (may hold stale ones); a dict, so that waking them
        # goes in a deterministic order.
        self.parked: dict[Pool, None] = {}

    def serves(self, pool: Pool) -> bool:
        return (self.sig is None or self.sig == pool.queue) and self.level >= pool.level


class Pool:
    """Waiting items of one (project, queue, channel, requirement) and the families that serve it."""

    __slots__ = ("key", "project", "queue", "channel", "req", "kind", "akind", "level", "band", "items",
                 "waiting", "marked", "families", "heaps")

    def __init__(self, key: PoolKey, kind: KindKey, band: int) -> None:
        self.key = key
        self.project, self.queue, self.channel, self.req = key
        self.kind = kind
        need = tuple((s, lv) for s, lv in self.req if lv > 0)  # a minimum of 0 is met by everyone
        self.akind: AKind = None if not need else need[0][0] if len(need) == 1 else need
        self.level = need[0][1] if len(need) == 1 else 0
        self.band = band  # index of the channel's cost: agents in this band or above have room
        self.items: list[ItemEntry] = []
        self.waiting = 0
        self.marked: float | None = None  # head time of the pool's pending entry in the ready heap
        self.families: list[Family] = []
        self.heaps: list[list[AgentEntry]] = []  # the families' heaps of bands with room, flattened

    def link(self, family: Family) -> None:
        self.families.append(family)
        self.heaps.extend(family.heaps[self.band:])
        family.pools.append(self)
        if self.waiting and self.marked is None:
            family.parked[self] = None

    def eligible(self) -> int:
        """How many agents are eligible (families are disjoint for one pool: one queue signature
        per agent and project, one exact level per skill)."""
        return sum(len(f.members) for f in self.families)


class Need:
    """What the pools of one (project, strategy) ask of agents, so agents join only useful families."""

    __slots__ = ("queues", "none", "skills", "multi")

    def __init__(self) -> None:
        self.queues: set[str] = set()
        self.none = False  # some pool requires no skill
        self.skills: set[str] = set()  # skills some pool requires alone
        self.multi: set[Req] = set()  # requirements of several skills

    def add(self, pool: Pool) -> tuple[bool, bool]:
        """Record the pool's needs; says whether its queue, and whether its skill atom, are new
        (a new queue concerns only agents limited to some queues; a new atom, any agent)."""
        new_queue = pool.queue not in self.queues
        self.queues.add(pool.queue)
        a = pool.akind
        if a is None:
            new_atom, self.none = not self.none, True
        elif isinstance(a, str):
            new_atom = a not in self.skills
            self.skills.add(a)
        else:
            new_atom = a not in self.multi
            self.multi.add(a)
        return new_queue, new_atom

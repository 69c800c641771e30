"""The engine's view of agents, items and decisions (plain data, no I/O).

Times are float seconds since the epoch: the engine never reads a clock, the
caller passes `now`, so tests and the benchmark drive time explicitly.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

Req = tuple[tuple[str, int], ...]  # required (skill, minimum proficiency), sorted
PoolKey = tuple[int, str, str, Req]  # project, queue, channel, requirement
ItemStatus = Literal["waiting", "pinned", "offered", "accepted", "held"]
OFFERABLE_STATES = frozenset({"available"})


@dataclass(frozen=True)
class AgentSpec:
    """What the store knows about an agent; `queues[p]` empty means every queue of project p."""

    id: int
    capacity: int = 100
    state: str = "offline"
    projects: frozenset[int] = frozenset()
    skills: dict[tuple[int, str], int] = field(default_factory=dict)
    queues: dict[int, dict[str, int]] = field(default_factory=dict)  # project -> {queue: rank}
    state_until: float | None = None  # after_work ends by itself at this time


@dataclass(frozen=True)
class ItemSpec:
    id: int
    project_id: int
    queue: str
    channel: str
    priority: int
    skills: dict[str, int]
    enqueued_at: float
    conversation_id: int = 0


@dataclass(slots=True)
class AgentView:
    spec: AgentSpec
    state: str
    idle_since: float
    load: int = 0
    per_channel: Counter[str] = field(default_factory=Counter)
    holding: set[int] = field(default_factory=set)
    version: int = 0
    rr_seq: int = 0
    state_until: float | None = None
    # The index's bookkeeping (umsg.router.indexes): the agent families it belongs to.
    families: list[Any] = field(default_factory=list, repr=False, compare=False)

    @property
    def id(self) -> int:
        return self.spec.id


@dataclass(slots=True)
class ItemView:
    spec: ItemSpec
    eff: float  # effective enqueue time: enqueued_at - priority head start
    status: ItemStatus = "waiting"
    agent_id: int | None = None
    offer_expires: float | None = None
    declined: dict[int, float] = field(default_factory=dict)  # agent -> blocked until
    pin_agent: int | None = None
    pin_until: float = 0.0
    relax_level: int = 0
    pool: PoolKey | None = None
    version: int = 0
    slot: Any = field(default=None, repr=False, compare=False)  # the index's Pool object for `pool`

    @property
    def id(self) -> int:
        return self.spec.id


@dataclass(frozen=True)
class Offer:
    """A decision: offer `item_id` to `agent_id` until `expires`; `why` is kept for explain."""

    item_id: int
    agent_id: int
    expires: float
    why: dict[str, Any]


@dataclass(frozen=True)
class Released:
    """An item the engine gave back to waiting (timeout, logout) that the store must follow."""

    item_id: int
    agent_id: int
    reason: str  # timeout | logout

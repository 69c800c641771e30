"""The supervisors' wall as figures: per queue (waiting, oldest wait, SLA) and per agent (state, load).

The caller (umsg.web.api.wall) serialises; this module runs the queries, all in one read
transaction so the figures agree with each other. Load is the capacity the agent's held
items cost at the router's channel costs, so the wall's "full" is the router's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select

from storage.db import SessionFactory
from storage.models import Agent, AgentProject, QueueItem, RouterOffer
from storage.states import OfferStatus, QueueItemStatus
from storage.types import utcnow


@dataclass
class QueueFigures:
    """One queue of one project; the waiting figures stay None/0 when nothing waits."""

    project_id: int
    queue: str
    waiting: int = 0
    in_progress: int = 0
    oldest_wait_seconds: float | None = None
    next_sla_due_at: datetime | None = None
    sla_breached: int = 0


@dataclass(frozen=True)
class AgentFigures:
    """One agent: what it holds (items, and their cost as load), its open offers, time in its state."""

    agent: Agent
    items: int
    load: int
    load_percent: int
    offers: int
    state_seconds: float | None


@dataclass(frozen=True)
class WallFigures:
    """The wall at `at`: queues by project then name, agents by display name then id."""

    at: datetime
    queues: list[QueueFigures]
    agents: list[AgentFigures]


def _age(now: datetime, since: datetime | None) -> float | None:
    return None if since is None else max(0.0, (now - since).total_seconds())


class Wall:
    """The wall's read model: `cost(channel)` is what one held item of that channel costs."""

    def __init__(self, readers: SessionFactory, cost: Callable[[str], int]) -> None:
        self.readers = readers
        self.cost = cost

    async def figures(self, project_ids: Collection[int] | None) -> WallFigures:
        """The queues of `project_ids` (None: all) and the agents working in one of them (None: every agent)."""
        now = utcnow()
        scope = None if project_ids is None else sorted(project_ids)
        qstmt = (select(QueueItem.project_id, QueueItem.queue, QueueItem.status, func.count(),
                        func.min(QueueItem.enqueued_at), func.min(QueueItem.sla_due_at),
                        func.sum(case((QueueItem.sla_due_at < now, 1), else_=0)))
                 .where(QueueItem.status.in_((QueueItemStatus.WAITING, QueueItemStatus.LEASED)))
                 .group_by(QueueItem.project_id, QueueItem.queue, QueueItem.status))
        astmt = select(Agent).order_by(Agent.display_name, Agent.id)
        if scope is not None:
            qstmt = qstmt.where(QueueItem.project_id.in_(scope))
            astmt = astmt.where(Agent.id.in_(select(AgentProject.agent_id).where(AgentProject.project_id.in_(scope))))
        async with self.readers() as s:
            queue_rows = (await s.execute(qstmt)).all()
            agents = list((await s.scalars(astmt)).all())
            # Accepted work is leased to `agent:<id>` (while offered, to `offer:<id>`).
            owners = [f"agent:{a.id}" for a in agents]
            held = (await s.execute(select(QueueItem.lease_owner, QueueItem.channel, func.count())
                                    .where(QueueItem.status == QueueItemStatus.LEASED,
                                           QueueItem.lease_owner.in_(owners))
                                    .group_by(QueueItem.lease_owner, QueueItem.channel))).all() if owners else []
            offered: dict[int, int] = {
                int(agent_id): int(n) for agent_id, n in (await s.execute(
                    select(RouterOffer.agent_id, func.count())
                    .where(RouterOffer.status == OfferStatus.OFFERED, RouterOffer.agent_id.in_([a.id for a in agents]))
                    .group_by(RouterOffer.agent_id))).all()
            } if agents else {}
        queues: dict[tuple[int, str], QueueFigures] = {}
        for pid, name, status, n, oldest, sla, breached in queue_rows:
            q = queues.setdefault((pid, name), QueueFigures(project_id=pid, queue=name))
            if status == QueueItemStatus.WAITING:
                q.waiting = int(n)
                q.oldest_wait_seconds = _age(now, oldest)
                q.next_sla_due_at = sla
                q.sla_breached = int(breached or 0)
            else:
                q.in_progress = int(n)
        items: dict[str, int] = defaultdict(int)
        used: dict[str, int] = defaultdict(int)
        for owner, channel, n in held:
            items[owner or ""] += int(n)
            used[owner or ""] += int(n) * self.cost(channel)
        rows = []
        for a in agents:
            owner = f"agent:{a.id}"
            rows.append(AgentFigures(agent=a, items=items[owner], load=used[owner],
                                     load_percent=round(100 * used[owner] / max(1, a.capacity)),
                                     offers=offered.get(a.id, 0), state_seconds=_age(now, a.state_since)))
        ordered = sorted(queues.values(), key=lambda q: (q.project_id, q.queue))
        return WallFigures(at=now, queues=ordered, agents=rows)

"""The supervisors' wall: every queue (waiting, oldest wait, SLA) and every agent (state, load).

One read-only snapshot per call; the page refreshes it when the event feed says
something changed, so the wall needs no state of its own on the server. Load is
the capacity the agent's held items cost (the router's channel costs), so the
wall shows the same "full" the router uses.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import case, func, select

from storage.models import Agent, AgentProject, QueueItem, RouterOffer
from storage.states import OfferStatus, QueueItemStatus
from storage.types import utcnow
from umsg.web import serialize
from umsg.web.endpoints import Ctx, json_ok


def _age(now: datetime, since: datetime | None) -> float | None:
    return None if since is None else max(0.0, (now - since).total_seconds())


async def wall(ctx: Ctx) -> web.StreamResponse:
    me = ctx.me
    now = utcnow()
    costs = ctx.core.settings.router
    scope = None if me.project_ids is None else sorted(me.project_ids)
    async with ctx.core.readers() as s:
        qstmt = (select(QueueItem.project_id, QueueItem.queue, QueueItem.status, func.count(),
                        func.min(QueueItem.enqueued_at), func.min(QueueItem.sla_due_at),
                        func.sum(case((QueueItem.sla_due_at < now, 1), else_=0)))
                 .where(QueueItem.status.in_((QueueItemStatus.WAITING, QueueItemStatus.LEASED)))
                 .group_by(QueueItem.project_id, QueueItem.queue, QueueItem.status))
        astmt = select(Agent).order_by(Agent.display_name, Agent.id)
        if scope is not None:
            qstmt = qstmt.where(QueueItem.project_id.in_(scope))
            astmt = astmt.where(Agent.id.in_(select(AgentProject.agent_id).where(AgentProject.project_id.in_(scope))))
        queue_rows = (await s.execute(qstmt)).all()
        agents = list((await s.scalars(astmt)).all())
        owners = [f"agent:{a.id}" for a in agents]
        held = (await s.execute(select(QueueItem.lease_owner, QueueItem.channel, func.count())
                                .where(QueueItem.status == QueueItemStatus.LEASED, QueueItem.lease_owner.in_(owners))
                                .group_by(QueueItem.lease_owner, QueueItem.channel))).all() if owners else []
        offered = dict((await s.execute(select(RouterOffer.agent_id, func.count())
                                        .where(RouterOffer.status == OfferStatus.OFFERED,
                                               RouterOffer.agent_id.in_([a.id for a in agents]))
                                        .group_by(RouterOffer.agent_id))).all()) if agents else {}
    queues: dict[tuple[int, str], dict[str, Any]] = {}
    for pid, name, status, n, oldest, sla, breached in queue_rows:
        q = queues.setdefault((pid, name), {"project_id": pid, "queue": name, "waiting": 0, "in_progress": 0,
                                            "oldest_wait_seconds": None, "next_sla_due_at": None, "sla_breached": 0})
        if status == "waiting":
            q["waiting"] = int(n)
            q["oldest_wait_seconds"] = _age(now, oldest)
            q["next_sla_due_at"] = serialize.ts(sla)
            q["sla_breached"] = int(breached or 0)
        else:
            q["in_progress"] = int(n)
    items: dict[str, int] = defaultdict(int)
    used: dict[str, int] = defaultdict(int)
    for owner, channel, n in held:
        items[owner or ""] += int(n)
        used[owner or ""] += int(n) * costs.cost(channel)
    agent_rows = []
    for a in agents:
        owner = f"agent:{a.id}"
        row = serialize.agent(a)
        row.update(items=items[owner], load=used[owner], load_percent=round(100 * used[owner] / max(1, a.capacity)),
                   offers=int(offered.get(a.id, 0)), state_seconds=_age(now, a.state_since))
        agent_rows.append(row)
    ordered = sorted(queues.values(), key=lambda q: (q["project_id"], q["queue"]))
    return json_ok({"at": serialize.ts(now), "queues": ordered, "agents": agent_rows})

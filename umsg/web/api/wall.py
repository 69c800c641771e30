"""The supervisors' wall: every queue (waiting, oldest wait, SLA) and every agent (state, load).

One read-only snapshot per call; the page refreshes it when the event feed says
something changed, so the wall needs no state of its own on the server. The figures
come from `umsg.wall.Wall`, scoped to the caller's projects; this module serialises them.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from umsg.wall import AgentFigures, QueueFigures, Wall
from umsg.web import serialize
from umsg.web.endpoints import Ctx, json_ok


def _queue(q: QueueFigures) -> dict[str, Any]:
    return {"project_id": q.project_id, "queue": q.queue, "waiting": q.waiting, "in_progress": q.in_progress,
            "oldest_wait_seconds": q.oldest_wait_seconds, "next_sla_due_at": serialize.ts(q.next_sla_due_at),
            "sla_breached": q.sla_breached}


def _agent(f: AgentFigures) -> dict[str, Any]:
    row = serialize.agent(f.agent)
    row.update(items=f.items, load=f.load, load_percent=f.load_percent, offers=f.offers,
               state_seconds=f.state_seconds)
    return row


async def wall(ctx: Ctx) -> web.StreamResponse:
    figures = await Wall(ctx.core.readers, ctx.core.settings.router.cost).figures(ctx.me.project_ids)
    return json_ok({"at": serialize.ts(figures.at), "queues": [_queue(q) for q in figures.queues],
                    "agents": [_agent(a) for a in figures.agents]})

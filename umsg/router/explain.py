"""Why an item waits, or why it went to its agent: plain facts from the engine's indexes.

Explaining is a diagnostic, not a decision: it may look at every agent of the
item's project, which deciding never does.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from umsg.router.engine import Engine
from umsg.router.views import OFFERABLE_STATES, ItemView, Req


def _missing(engine: Engine, item: ItemView, req: Req) -> list[str]:
    project = item.spec.project_id
    agents = [a for a in engine.agents.values() if project in a.spec.projects]
    reasons: list[str] = []
    if not agents:
        return [f"no agent works in project {project}"]
    queue = item.spec.queue
    in_queue = [a for a in agents if not a.spec.queues.get(project) or queue in a.spec.queues[project]]
    if not in_queue:
        return [f"no agent of project {project} is a member of queue {queue!r}"]
    for name, level in req:
        if not any(a.spec.skills.get((project, name), 0) >= level for a in in_queue):
            reasons.append(f"no agent of queue {queue!r} has skill {name!r} at proficiency >= {level}")
    return reasons


def explain(engine: Engine, item_id: int, now: float) -> dict[str, Any]:
    """A JSON-ready account of one item's routing state."""
    item = engine.items.get(item_id)
    if item is None:
        return {"item_id": item_id, "known": False,
                "reasons": ["the router does not track this item (finished, dead, or another shard)"]}
    spec = item.spec
    out: dict[str, Any] = {
        "item_id": item_id, "known": True, "status": item.status, "queue": spec.queue,
        "channel": spec.channel,
        "priority": spec.priority, "required_skills": spec.skills, "relax_level": item.relax_level,
        "waited_seconds": round(max(0.0, now - spec.enqueued_at), 3),
        "effective_enqueue_time": item.eff, "agent_id": item.agent_id,
        "declined_by": sorted(a for a, until in item.declined.items() if until > now),
    }
    reasons: list[str] = []
    if item.status in ("offered", "accepted"):
        reasons.append(f"{item.status} to agent {item.agent_id}")
    elif item.status == "held":
        reasons.append("leased outside the router (a manual claim)")
    elif item.status == "pinned":
        reasons.append(f"reserved for agent {item.pin_agent} (last agent / transfer) until {item.pin_until}")
    elif item.pool is not None:
        pool = item.pool
        out["effective_requirement"] = dict(pool[3])
        reasons.extend(_missing(engine, item, pool[3]))
        members = [engine.agents[i] for i in engine.pool_members(pool)]
        if members and not reasons:
            states = Counter(a.state for a in members)
            offerable = [a for a in members if a.state in OFFERABLE_STATES]
            fitting = [a for a in offerable if engine.fits(a, spec.channel)]
            usable = [a for a in fitting if item.declined.get(a.id, 0.0) <= now]
            out["eligible_agents"] = len(members)
            out["agent_states"] = dict(states)
            if not offerable:
                reasons.append(f"none of the {len(members)} eligible agents is available "
                               f"({', '.join(f'{k} {v}' for k, v in sorted(states.items()))})")
            elif not fitting:
                cost = engine.settings.cost(spec.channel)
                reasons.append(f"all {len(offerable)} available eligible agents are full for "
                               f"{spec.channel!r} (costs {cost} units)")
            elif not usable:
                reasons.append(f"declined by all {len(fitting)} agents that could take it now")
            else:
                reasons.append(f"{len(usable)} agent(s) could take it: it is offered at the next decision")
        ahead = engine.pool_waiting(pool) - 1
        if ahead > 0:
            out["items_in_same_pool"] = ahead
        if out["declined_by"]:
            reasons.append(f"declined by {len(out['declined_by'])} agent(s), who are skipped for a while")
    out["reasons"] = reasons
    return out

"""Brute-force checks of the engine's promises (for tests and debugging, never for deciding).

Each check walks every agent and item, so it is O(n * m): exactly the scan the
engine avoids, used here as the oracle it is compared against.
"""

from __future__ import annotations

from collections import Counter

from umsg.router.engine import Engine
from umsg.router.views import AgentView, ItemView, Offer


def could_take(engine: Engine, a: AgentView, item: ItemView, now: float) -> bool:
    """`a` is eligible for the item's current pool, has room, and has not declined it lately."""
    return (item.status == "waiting" and item.pool is not None and engine._eligible(a, item.pool)
            and engine.fits(a, item.spec.channel) and item.declined.get(a.id, 0.0) <= now)


def violations(engine: Engine, now: float, *, settled: bool = True) -> list[str]:
    """Broken invariants; `settled` means decide() just ran, so nothing offerable may wait."""
    out: list[str] = []
    holders: Counter[int] = Counter()
    for a in engine.agents.values():
        load = sum(engine.settings.cost(engine.items[i].spec.channel) for i in a.holding)
        if load != a.load:
            out.append(f"agent {a.id} load {a.load} != sum of its items {load}")
        if a.load > a.spec.capacity:
            out.append(f"agent {a.id} over capacity: {a.load} > {a.spec.capacity}")
        per = Counter(engine.items[i].spec.channel for i in a.holding)
        for channel, n in per.items():
            cap = engine.settings.channel_caps.get(channel)
            if cap is not None and n > cap:
                out.append(f"agent {a.id} holds {n} {channel} items, cap {cap}")
            if a.per_channel[channel] != n:
                out.append(f"agent {a.id} per-channel count for {channel} is off")
        for i in a.holding:
            holders[i] += 1
            if engine.items[i].agent_id != a.id:
                out.append(f"item {i} is in agent {a.id}'s hands but names agent {engine.items[i].agent_id}")
    for item in engine.items.values():
        if holders[item.id] > 1:
            out.append(f"item {item.id} is held by {holders[item.id]} agents")
        if item.status in ("offered", "accepted") and holders[item.id] != 1:
            out.append(f"item {item.id} is {item.status} but held by {holders[item.id]} agents")
        if item.status in ("waiting", "pinned", "held") and holders[item.id]:
            out.append(f"item {item.id} is {item.status} yet held by an agent")
        if settled and item.status == "waiting":
            for a in engine.agents.values():
                if could_take(engine, a, item, now):
                    out.append(f"item {item.id} waits although agent {a.id} could take it")
                    break
    return out


Before = dict[int, tuple[float, dict[int, tuple[float, ...]]]]


def before_decision(engine: Engine, now: float) -> Before:
    """For every waiting item some agent could take: its effective time and those agents' keys."""
    out: Before = {}
    for item in engine.items.values():
        if item.status != "waiting" or item.pool is None:
            continue
        keys = {a.id: _rank(engine, a, item) for a in engine.agents.values() if could_take(engine, a, item, now)}
        if keys:
            head_start = engine.settings.policy(item.spec.queue).priority_head_start_seconds
            out[item.id] = (item.spec.enqueued_at - item.spec.priority * head_start, keys)
    return out


def _rank(engine: Engine, a: AgentView, item: ItemView) -> tuple[float, ...]:
    """The queue strategy's preference, written out independently of the engine (smaller first)."""
    strategy = engine.settings.policy(item.spec.queue).strategy
    if strategy == "longest_idle":
        return (a.idle_since,)  # idle longest = least recent activity
    if strategy == "least_busy":
        return (a.load / a.spec.capacity, a.idle_since)
    if strategy == "fixed_order":
        return (float(a.spec.queues.get(item.spec.project_id, {}).get(item.spec.queue, 0)),)
    return (float(a.rr_seq),)  # round robin: whoever had a turn longest ago


def order_violation(offer: Offer, before: Before) -> str | None:
    """Was `offer` (the first decision after `before`) the oldest offerable item, to the best agent?

    Pinned (last-agent / transfer) offers are exempt by design: they come first.
    """
    if offer.why.get("step") == "pinned":
        return None
    if offer.item_id not in before:
        return f"item {offer.item_id} was offered although no agent could take it"
    eff, keys = before[offer.item_id]
    oldest = min(e for e, _ in before.values())
    if eff > oldest:
        return f"item {offer.item_id} (eff {eff}) offered while an item with eff {oldest} was offerable"
    if offer.agent_id not in keys:
        return f"item {offer.item_id} offered to agent {offer.agent_id}, who could not take it"
    if keys[offer.agent_id] > min(keys.values()):
        return f"agent {offer.agent_id} chosen for item {offer.item_id} although a better-ranked agent was free"
    return None

"""Router decision benchmark: the service's engine against a naive linear-scan router.

For 1,000 / 10,000 / 100,000 agents with 100,000 waiting items and random skills
(20 skills; agents hold 3 at proficiency 1-5; an item needs one at 1-3; five
channels with blended costs; two queues), it measures decisions per second and
per-decision latency (p50/p99) in two phases: *bulk* (agents free, the backlog
is handed out) and *steady* (an agent finishes an item, the next decision
follows). The naive router, written here, does what the handbook says other
routers do: for the best waiting item, scan every agent. Both run in this
process on the same data; the figure that matters is the ratio.

The engine is `umsg.router.engine.Engine`, the very code the service runs.

Usage: python bench/router.py [--quick] [--agents 1000,10000,100000] [--items 100000]
Prints one JSON object last: {"name","value","unit","baseline","ratio","params"}.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from heapq import heappop, heappush
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from umsg.router.engine import Engine  # noqa: E402
from umsg.router.settings import RouterSettings  # noqa: E402
from umsg.router.views import AgentSpec, ItemSpec  # noqa: E402

# Decisions are timed in this process's CPU time: the machines are shared, and wall-clock
# latencies there measure the neighbours as much as the router. Both routers use this clock.
clock = time.process_time

SKILLS = [f"s{i}" for i in range(20)]
CHANNELS = ["chat", "email", "sms", "voicemail", "fax"]
CHANNEL_WEIGHTS = [4, 3, 2, 1, 1]
QUEUES = ["sales", "support"]
T0 = 1_000_000.0


@dataclass
class World:
    agents: list[AgentSpec]
    items: list[ItemSpec]


def make_world(n_agents: int, n_items: int, seed: int) -> World:
    rnd = random.Random(seed)
    agents = [AgentSpec(id=i + 1, capacity=100, state="available", projects=frozenset({1}),
                        skills={(1, s): rnd.randint(1, 5) for s in rnd.sample(SKILLS, 3)})
              for i in range(n_agents)]
    items = [ItemSpec(i + 1, 1, rnd.choice(QUEUES), rnd.choices(CHANNELS, CHANNEL_WEIGHTS)[0],
                      rnd.choice([0, 0, 0, 1, 2]), {rnd.choice(SKILLS): rnd.randint(1, 3)},
                      T0 - n_items + i, i + 1)
             for i in range(n_items)]
    return World(agents, items)


# -- the naive router ---------------------------------------------------------------------------

@dataclass
class NaiveAgent:
    spec: AgentSpec
    load: int = 0
    idle_since: float = 0.0
    holding: list[ItemSpec] = field(default_factory=list)


class NaiveRouter:
    """Longest idle with blended capacity, by scanning: the baseline every decision pays O(n) for."""

    def __init__(self, settings: RouterSettings, world: World) -> None:
        self.settings = settings
        self.agents = [NaiveAgent(a, idle_since=T0) for a in world.agents]
        self.waiting: list[tuple[float, int, ItemSpec]] = []
        for it in world.items:
            heappush(self.waiting, (it.enqueued_at - it.priority * 60.0, it.id, it))

    def decide(self, now: float) -> tuple[int, int] | None:
        skipped: list[tuple[float, int, ItemSpec]] = []
        found = None
        while self.waiting and found is None:
            entry = heappop(self.waiting)
            item = entry[2]
            cost = self.settings.cost(item.channel)
            best: NaiveAgent | None = None
            for a in self.agents:  # the linear scan
                if a.load + cost > a.spec.capacity:
                    continue
                if not all(a.spec.skills.get((1, s), 0) >= m for s, m in item.skills.items()):
                    continue
                if best is None or a.idle_since < best.idle_since:
                    best = a
            if best is None:
                skipped.append(entry)
                if len(skipped) > 50:  # give up on this decision: nobody can take the head items
                    break
                continue
            best.load += cost
            best.idle_since = now
            best.holding.append(item)
            found = (item.id, best.spec.id)
        for entry in skipped:
            heappush(self.waiting, entry)
        return found

    def finish_random(self, rnd: random.Random, now: float) -> None:
        busy = [a for a in rnd.sample(self.agents, min(20, len(self.agents))) if a.holding]
        if busy:
            a = busy[0]
            item = a.holding.pop(rnd.randrange(len(a.holding)))
            a.load -= self.settings.cost(item.channel)
            a.idle_since = now


# -- measuring ----------------------------------------------------------------------------------

def _stats(latencies: list[float], total: float) -> dict[str, float]:
    if not latencies:
        return {"decisions": 0}
    ordered = sorted(latencies)
    return {
        "decisions": len(latencies),
        "decisions_per_s": round(len(latencies) / total, 1) if total else 0.0,
        "mean_us": round(statistics.fmean(latencies) * 1e6, 2),
        "p50_us": round(ordered[len(ordered) // 2] * 1e6, 2),
        "p99_us": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6, 2),
    }


def bench_engine(world: World, settings: RouterSettings, bulk: int, steady: int, seed: int) -> dict[str, Any]:
    rnd = random.Random(seed)
    engine = Engine(settings)
    t = time.perf_counter()
    for it in world.items:
        engine.add_item(it, T0)
    for a in world.agents:
        engine.upsert_agent(a, T0)
    build = time.perf_counter() - t
    # The indexes are long-lived: keep the cyclic GC from re-walking them on every collection.
    gc.freeze()
    now = T0 + 1
    lat: list[float] = []
    total = 0.0
    while len(lat) < bulk:
        t = clock()
        offers = engine.decide(now, limit=1)
        dt = clock() - t
        if not offers:
            break
        lat.append(dt)
        total += dt
        engine.accept(offers[0].item_id, offers[0].agent_id)
    result = {"build_s": round(build, 2), "bulk": _stats(lat, total)}
    # Steady state: an agent finishes an item; the next decision fills the room it left.
    held = [i for i, v in engine.items.items() if v.status == "accepted"]
    lat, total = [], 0.0
    for _ in range(steady):
        if not held:
            break
        item_id = held.pop(rnd.randrange(len(held)))
        engine.remove_item(item_id, now)
        t = clock()
        offers = engine.decide(now, limit=1)
        dt = clock() - t
        total += dt
        lat.append(dt)
        for o in offers:
            engine.accept(o.item_id, o.agent_id)
            held.append(o.item_id)
        now += 0.001
    result["steady"] = _stats(lat, total)
    return result


def bench_naive(world: World, settings: RouterSettings, decisions: int, budget_s: float, seed: int
                ) -> dict[str, Any]:
    rnd = random.Random(seed)
    naive = NaiveRouter(settings, world)
    now = T0 + 1
    lat: list[float] = []
    total = 0.0
    started = time.perf_counter()
    while len(lat) < decisions and time.perf_counter() - started < budget_s:
        t = clock()
        got = naive.decide(now)
        dt = clock() - t
        if got is None:
            naive.finish_random(rnd, now)
            continue
        lat.append(dt)
        total += dt
    return {"bulk": _stats(lat, total)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--quick", action="store_true", help="fewer decisions measured (under a minute)")
    p.add_argument("--agents", default="1000,10000,100000")
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    sizes = [int(x) for x in args.agents.split(",")]
    bulk, steady, naive_n, naive_budget = (3000, 3000, 60, 4.0) if args.quick else (20000, 20000, 300, 20.0)
    settings = RouterSettings()
    per_size: dict[str, Any] = {}
    for n in sizes:
        gc.unfreeze()
        gc.collect()
        world = make_world(n, args.items, args.seed)
        ours = bench_engine(world, settings, bulk, steady, args.seed)
        base = bench_naive(world, settings, naive_n, naive_budget, args.seed)
        per_size[str(n)] = {"engine": ours, "naive": base}
        ours_us = ours["bulk"].get("mean_us", 0.0)
        print(json.dumps({"agents": n, "engine": ours, "naive": base,
                          "engine_mean_us_per_log2n": round(ours_us / math.log2(n), 3)}), flush=True)
    headline = str(10_000) if "10000" in per_size else str(sizes[-1])
    ours_h = per_size[headline]["engine"]
    naive_h = per_size[headline]["naive"]["bulk"]
    value = float(ours_h["bulk"].get("decisions_per_s", 0.0))
    baseline = float(naive_h.get("decisions_per_s", 0.0))
    growth = {n: {"engine_mean_us": r["engine"]["bulk"].get("mean_us"),
                  "engine_steady_mean_us": r["engine"]["steady"].get("mean_us"),
                  "naive_mean_us": r["naive"]["bulk"].get("mean_us"),
                  "engine_us_per_log2n": round(r["engine"]["bulk"].get("mean_us", 0.0) / math.log2(int(n)), 3)}
              for n, r in per_size.items()}
    print(json.dumps({
        "name": "router",
        "value": value,
        "unit": "decisions/s",
        "baseline": baseline,
        "ratio": round(value / baseline, 1) if baseline else None,
        "params": {"agents_headline": int(headline), "items": args.items, "quick": args.quick,
                   "gc_frozen_after_build": True, "clock": "process_time (CPU seconds)",
                   "p50_us": ours_h["bulk"].get("p50_us"), "p99_us": ours_h["bulk"].get("p99_us"),
                   "steady_p99_us": ours_h["steady"].get("p99_us"), "growth": growth},
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Router decision benchmark: the service's engine against a naive linear-scan router.

For 1,000 / 10,000 / 100,000 agents with 100,000 waiting items and random skills
(20 skills; agents hold 3 at proficiency 1-5; an item needs one at 1-3; five
channels with blended costs; two queues), it measures decisions per second and
per-decision latency (p50/p99) in two phases: *bulk* (agents free, the backlog
is handed out) and *steady* (an agent finishes an item, the next decision
follows). The naive router, written here, does what the handbook says other
routers do: for the best waiting item, scan every agent. Both run in this
process on the same data; the figure that matters is the ratio.

Growth with n is shown on stderr and in params.growth: per size the mean cost
of the first 1,000 bulk decisions (the same regime at every size; median of
several fresh builds), the ratio of the largest size's cost to the smallest's
next to the ratio of their log2 n (1.67 from 1k to 100k; a scan grows 100x),
the cost added per tenfold n, a least-squares fit cost = a + b * log2(n), the
log-log slope (cost ~ n^k: k = 1 for a scan), and an untimed count of heap
operations per decision with the length of the agent heaps they touch.
params.goals_met says which of the issue's goals this run met.

The engine is `umsg.router.engine.Engine`, the very code the service runs.

Usage: python bench/router.py [--quick] [--agents 1000,10000,100000] [--items 100000]
Prints one JSON object last: {"name","value","unit","baseline","ratio","params"}.
"""

from __future__ import annotations

import argparse
import gc
import heapq
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

import umsg.router.engine as engine_module  # noqa: E402
import umsg.router.indexes as indexes_module  # noqa: E402
from umsg.router.engine import Engine  # noqa: E402
from umsg.router.settings import RouterSettings  # noqa: E402
from umsg.router.views import AgentSpec, AgentView, ItemSpec  # noqa: E402

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


def build_engine(world: World, settings: RouterSettings) -> tuple[Engine, float]:
    engine = Engine(settings)
    t = time.perf_counter()
    for it in world.items:
        engine.add_item(it, T0)
    for a in world.agents:
        engine.upsert_agent(a, T0)
    return engine, time.perf_counter() - t


def count_heap_ops(world: World, settings: RouterSettings, decisions: int) -> dict[str, Any]:
    """Untimed probe, on an engine of its own: heap pops and pushes per decision over the first
    `decisions` bulk decisions (the growth window), and the length of the heaps they touch.

    Timing on a shared machine is noisy; this shows the work itself. O(log n) per decision means
    a constant number of heap operations per decision, each costing log2 of its heap's length.
    Agent heaps (entries ending with the agent) grow with n; item, ready and timer heaps do not.
    """
    engine, _ = build_engine(world, settings)
    ops = {"agent": [0, 0, 0], "other": [0, 0, 0]}  # pops, pushes, summed heap length

    def pop(heap: list[Any]) -> Any:
        c = ops["agent" if isinstance(heap[0][-1], AgentView) else "other"]
        c[0] += 1
        c[2] += len(heap)
        return heapq.heappop(heap)

    def push(heap: list[Any], entry: Any) -> None:
        c = ops["agent" if isinstance(entry[-1], AgentView) else "other"]
        c[1] += 1
        c[2] += len(heap)
        heapq.heappush(heap, entry)

    saved = [(m, m.heappop, m.heappush) for m in (engine_module, indexes_module)]
    for m, _, _ in saved:
        m.heappop, m.heappush = pop, push  # type: ignore[attr-defined]
    made = 0
    try:
        for _ in range(decisions):
            offers = engine.decide(T0 + 1, limit=1)
            if not offers:
                break
            engine.accept(offers[0].item_id, offers[0].agent_id)
            made += 1
    finally:
        for m, p, q in saved:
            m.heappop, m.heappush = p, q  # type: ignore[attr-defined]
    out: dict[str, Any] = {"decisions": made}
    for kind, (pops, pushes, summed) in ops.items():
        out[f"{kind}_heaps"] = {"pops_per_decision": round(pops / max(1, made), 2),
                                "pushes_per_decision": round(pushes / max(1, made), 2),
                                "mean_len": round(summed / max(1, pops + pushes), 1)}
    return out


def time_window(world: World, settings: RouterSettings, window: int) -> float:
    """Mean CPU seconds of the first `window` bulk decisions of a freshly built engine."""
    engine, _ = build_engine(world, settings)
    gc.freeze()
    total = 0.0
    try:
        for _ in range(window):
            t = clock()
            offers = engine.decide(T0 + 1, limit=1)
            total += clock() - t
            engine.accept(offers[0].item_id, offers[0].agent_id)
    finally:
        gc.unfreeze()
    return total / window


def bench_engine(world: World, settings: RouterSettings, bulk: int, steady: int, seed: int, window: int,
                 window_runs: int) -> dict[str, Any]:
    """`window`: the first bulk decisions that every size is compared on (see `growth`), timed on
    the main engine and on `window_runs - 1` more fresh builds (the median goes into the growth table)."""
    rnd = random.Random(seed)
    heap_ops = count_heap_ops(world, settings, window)
    runs = []
    for _ in range(window_runs - 1):
        gc.collect()
        runs.append(time_window(world, settings, window))
    gc.collect()
    engine, build = build_engine(world, settings)
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
    runs.insert(0, statistics.fmean(lat[:window]))
    result = {"build_s": round(build, 2), "bulk": _stats(lat, total),
              "bulk_first": {"decisions": window, "mean_us_per_run": [round(r * 1e6, 2) for r in runs],
                             "median_us": round(statistics.median(runs) * 1e6, 2)},
              "heap_ops": heap_ops}
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
    # The same steady cycle with the finish timed too: waking the pools the finishing agent can
    # serve happens there, outside decide().
    lat, total = [], 0.0
    for _ in range(steady):
        if not held:
            break
        item_id = held.pop(rnd.randrange(len(held)))
        t = clock()
        engine.remove_item(item_id, now)
        offers = engine.decide(now, limit=1)
        dt = clock() - t
        total += dt
        lat.append(dt)
        for o in offers:
            engine.accept(o.item_id, o.agent_id)
            held.append(o.item_id)
        now += 0.001
    result["steady_cycle"] = _stats(lat, total)
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


def growth(per_size: dict[str, Any], window: int, runs: int) -> dict[str, Any]:
    """How the mean decision cost grows with the number of agents, next to log2 n.

    Sizes are compared on the first `window` bulk decisions (the smallest size): with longest
    idle, each of those goes to an agent still holding nothing, at every size. (The whole bulk
    phase is no fair comparison: at 1,000 agents it runs until agents are full, a costlier
    regime with many pools nobody can serve, which 100,000 agents never reach.)
    """
    sizes = sorted(int(n) for n in per_size)
    table: dict[str, Any] = {}
    for n in sizes:
        ours, naive = per_size[str(n)]["engine"], per_size[str(n)]["naive"]["bulk"]
        first = ours["bulk_first"]["median_us"]
        ops = ours["heap_ops"]
        table[str(n)] = {
            "engine_mean_us": first, "engine_us_per_log2n": round(first / math.log2(n), 3),
            "engine_bulk_mean_us": ours["bulk"].get("mean_us"),
            "engine_steady_mean_us": ours["steady"].get("mean_us"), "naive_mean_us": naive.get("mean_us"),
            "agent_heap_ops_per_decision": round(ops["agent_heaps"]["pops_per_decision"]
                                                 + ops["agent_heaps"]["pushes_per_decision"], 2),
            "other_heap_ops_per_decision": round(ops["other_heaps"]["pops_per_decision"]
                                                 + ops["other_heaps"]["pushes_per_decision"], 2),
            "agent_heap_mean_len": ops["agent_heaps"]["mean_len"],
        }
    out: dict[str, Any] = {"window_decisions": window, "window_runs": runs, "table": table}
    if len(sizes) < 2:
        return out
    lo, hi = sizes[0], sizes[-1]
    log_ratio = math.log2(hi) / math.log2(lo)
    out["log2n_ratio"] = round(log_ratio, 2)
    out["n_ratio"] = round(hi / lo, 2)
    for who, column in (("engine", "engine_mean_us"), ("naive", "naive_mean_us")):
        costs = [table[str(n)][column] for n in sizes]
        if not all(costs):
            continue
        xs = [math.log2(n) for n in sizes]
        mx, my = statistics.fmean(xs), statistics.fmean(costs)
        b = sum((x - mx) * (y - my) for x, y in zip(xs, costs, strict=True)) / sum((x - mx) ** 2 for x in xs)
        lx = [math.log(n) for n in sizes]
        ly = [math.log(c) for c in costs]
        mlx, mly = statistics.fmean(lx), statistics.fmean(ly)
        k = sum((x - mlx) * (y - mly) for x, y in zip(lx, ly, strict=True)) / sum((x - mlx) ** 2 for x in lx)
        a = my - b * mx
        ss_tot = sum((y - my) ** 2 for y in costs)
        r2 = 1 - sum((y - (a + b * x)) ** 2 for x, y in zip(xs, costs, strict=True)) / ss_tot if ss_tot else 1.0
        # Logarithmic growth adds the same amount per tenfold n; linear growth multiplies it by 10.
        steps = [round((costs[i + 1] - costs[i]) / math.log10(sizes[i + 1] / sizes[i]), 2)
                 for i in range(len(sizes) - 1)]
        out[who] = {"cost_ratio": round(costs[-1] / costs[0], 2), "fit_us": f"{a:.2f} + {b:.3f} * log2(n)",
                    "fit_r2": round(r2, 3), "added_us_per_10x_agents": steps, "loglog_exponent": round(k, 3)}
    return out


def print_growth(grown: dict[str, Any]) -> None:
    """The growth table for people (stderr; the JSON holds the same figures)."""
    err = sys.stderr
    print(f"mean CPU us per decision over the first {grown['window_decisions']} bulk decisions (median of "
          f"{grown['window_runs']} builds); heap operations per decision", file=err)
    print(f"{'agents':>8} {'engine':>8} {'us/log2n':>9} {'naive':>10} | {'agent-heap ops':>14} {'mean len':>9} "
          f"{'other ops':>9}", file=err)
    for n, row in grown["table"].items():
        print(f"{n:>8} {row['engine_mean_us']:>8} {row['engine_us_per_log2n']:>9} {row['naive_mean_us']:>10} | "
              f"{row['agent_heap_ops_per_decision']:>14} {row['agent_heap_mean_len']:>9} "
              f"{row['other_heap_ops_per_decision']:>9}", file=err)
    for who in ("engine", "naive"):
        g = grown.get(who)
        if g:
            print(f"{who:>8}: cost x{g['cost_ratio']} while log2 n grows x{grown['log2n_ratio']} "
                  f"and n x{grown['n_ratio']}; "
                  f"+{g['added_us_per_10x_agents']} us per 10x agents; fit {g['fit_us']} us (r2 {g['fit_r2']}); "
                  f"cost ~ n^{g['loglog_exponent']}", file=err)
    err.flush()


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
    window = min(min(sizes), bulk)
    window_runs = 3 if args.quick else 5
    per_size: dict[str, Any] = {}
    for n in sizes:
        gc.unfreeze()
        gc.collect()
        world = make_world(n, args.items, args.seed)
        ours = bench_engine(world, settings, bulk, steady, args.seed, window, window_runs)
        base = bench_naive(world, settings, naive_n, naive_budget, args.seed)
        per_size[str(n)] = {"engine": ours, "naive": base}
        print(json.dumps({"agents": n, "engine": ours, "naive": base}), flush=True)
    headline = str(10_000) if "10000" in per_size else str(sizes[-1])
    ours_h = per_size[headline]["engine"]
    naive_h = per_size[headline]["naive"]["bulk"]
    value = float(ours_h["bulk"].get("decisions_per_s", 0.0))
    baseline = float(naive_h.get("decisions_per_s", 0.0))
    grown = growth(per_size, window, window_runs)
    print_growth(grown)
    p99 = ours_h["bulk"].get("p99_us", math.inf)
    goals = {"decisions_per_s_at_least_20000": value >= 20_000, "p99_under_1ms": p99 < 1000,
             "at_least_50x_naive": bool(baseline) and value / baseline >= 50}
    if "engine" in grown:
        goals["cost_grows_no_faster_than_log2n"] = grown["engine"]["cost_ratio"] <= grown["log2n_ratio"]
    print(json.dumps({
        "name": "router",
        "value": value,
        "unit": "decisions/s",
        "baseline": baseline,
        "ratio": round(value / baseline, 1) if baseline else None,
        "params": {"agents_headline": int(headline), "items": args.items, "quick": args.quick,
                   "gc_frozen_after_build": True, "clock": "process_time (CPU seconds)",
                   "p50_us": ours_h["bulk"].get("p50_us"), "p99_us": ours_h["bulk"].get("p99_us"),
                   "steady_p99_us": ours_h["steady"].get("p99_us"),
                   "steady_cycle_p99_us": ours_h["steady_cycle"].get("p99_us"), "goals_met": goals,
                   "growth": grown},
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

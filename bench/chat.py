"""Web chat benchmark: customer send → agent receive latency, against a raw websocket relay.

Setup: a real `umsg` service (SQLite store, the `webchat` channel, dispatcher and router
running) in a child process; N customer websockets on `/channels/webchat/ws` (each says
hello) and A agents on the events websocket `/api/v1/events`, all on loopback, driven from
this process. Each customer sends M chat lines (paced at `--rate` lines per second over
all customers); a line's latency is the time from the customer's send to the arrival, at
the agent who serves that customer (customer i → agent i mod A), of the `message.created`
event naming the stored message. Every agent sees every event, and asks for batched frames
(`batch=true`, a JSON array of the events ready together), as the inbox does.

Baseline, measured in the same run with the same clients and pacing: a raw aiohttp
websocket relay in a child process that forwards each customer frame to the same agent
(no store, no commit). Goal: p99 within 2× the relay's. A floor, same clients and pacing: the
same relay storing each line durably first (`floor_store.MinimalStore`: one SQLite row,
group-committed with fsync) and only then acknowledging and forwarding it, the least that
"acknowledged after commit" and "the agent sees stored messages" cost.

Memory: the service's RSS with N idle, greeted customer sockets minus its RSS before they
connected, divided by N (goal < 64 KB per connection).

Usage: python bench/chat.py [--quick] [--customers 1000] [--agents 50] [--messages 3] [--rate 300]
       [--profile FILE]  (the service runs under cProfile; stats written to FILE at its end)
Prints one JSON object last: {"name","value","unit","baseline","ratio","params"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

SECRET = "bench-secret-0123456789abcdef"
LISTENING = "listening on "


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- child processes -------------------------------------------------------------------------

def _settings(data_dir: str) -> Any:
    from umsg.config import load_settings

    return load_settings(None, environ={}, overrides={
        "data_dir": data_dir, "log_level": "WARNING",
        "database": {"url": f"sqlite:///{data_dir}/umsg.db"},
        "http": {"host": "127.0.0.1", "port": 0},
        "channels": {"webchat": {"type": "webchat", "secret": SECRET, "history_limit": 0}},
    })


async def _seed(data_dir: str, agents: int) -> list[str]:
    """Project, agents and their tokens, written before the service starts."""
    from storage.models import Agent, AgentProject
    from umsg.core import Core
    from umsg.tokens import create_token

    core = await Core.open(_settings(data_dir))
    try:
        pid = await core.ensure_project("default")
        tokens = []
        for i in range(agents):
            async with core.sessions() as s:
                agent = Agent(login=f"agent{i}", display_name=f"Agent {i}", state="offline")
                s.add(agent)
                await s.flush()
                s.add(AgentProject(agent_id=agent.id, project_id=pid))
                await s.commit()
                agent_id = agent.id
            tokens.append(await create_token(core.sessions, "agent", agent_id=agent_id))
        return tokens
    finally:
        await core.aclose()


async def _serve_umsg(data_dir: str) -> None:
    from umsg.app.gc_tuning import settle_after_start
    from umsg.app.serve import run_service

    _raise_fd_limit()
    # As `umsg serve` runs it; prints "umsg listening on URL"; ends on SIGTERM.
    await run_service(_settings(data_dir), ready=lambda _url: settle_after_start())


async def _serve_relay(store_dir: str | None) -> None:
    """The baseline: customers' frames forwarded to agent (customer mod A), nothing stored.

    With `store_dir`, the floor: each line is stored and committed before the ack and the forward.
    """
    from aiohttp import WSMsgType, web
    from floor_store import MinimalStore

    _raise_fd_limit()
    agents: dict[int, web.WebSocketResponse] = {}
    store = MinimalStore(Path(store_dir) / "floor.db") if store_dir else None

    async def agent(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        agents[int(request.query["n"])] = ws
        async for _ in ws:
            pass
        return ws

    async def customer(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        target = int(request.query["agent"])
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                frame = json.loads(msg.data)
                if frame.get("type") == "message":
                    if store is not None:
                        await store.store(("customer", frame["text"], msg.data.encode(), frame["client_id"]))
                    await ws.send_json({"type": "ack", "client_id": frame["client_id"]})
                    if target in agents:
                        await agents[target].send_json({"id": frame["client_id"]})
        return ws

    app = web.Application()
    app.router.add_get("/agent", agent)
    app.router.add_get("/customer", customer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"relay {LISTENING}http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


async def _spawn(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, __file__, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        if not line:
            raise RuntimeError(f"child {args} exited before listening")
        if LISTENING in line:
            return proc, line.split(LISTENING, 1)[1].strip()


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# -- measurement ---------------------------------------------------------------------------

def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _pace(n_customers: int, messages: int, rate: float, send: Any) -> None:
    """Send every customer's lines, spread evenly at `rate` lines/s in total."""
    interval = 1.0 / rate
    start = time.perf_counter()
    k = 0
    for m in range(messages):
        for i in range(n_customers):
            due = start + k * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the load, not synchronising a test
            await send(i, m)
            k += 1


async def run_umsg(url: str, tokens: list[str], args: argparse.Namespace, proc: psutil.Process,
                   http: aiohttp.ClientSession) -> dict[str, Any]:
    ws_url = url.replace("http", "ws", 1)
    n_agents = len(tokens)
    received: dict[int, dict[int, float]] = {a: {} for a in range(n_agents)}  # agent -> message id -> t
    sent_at: dict[str, float] = {}
    acked: dict[str, int] = {}
    total = args.customers * args.messages
    complete = asyncio.Event()

    def check() -> None:
        if len(acked) >= total and all(mid in received[int(c[1:].split("x")[0]) % n_agents]
                                       for c, mid in acked.items()):
            complete.set()

    async def agent_loop(a: int, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            now = time.perf_counter()
            data = json.loads(msg.data)
            for ev in data if isinstance(data, list) else [data]:
                if ev.get("kind") == "message.created" and ev["payload"].get("direction") == "in":
                    received[a].setdefault(int(ev["payload"]["message_id"]), now)
            if len(acked) >= total:
                check()

    agent_ws = [await http.ws_connect(f"{ws_url}/api/v1/events", params={"access_token": t, "batch": "true"})
                for t in tokens]
    agent_tasks = [asyncio.create_task(agent_loop(a, ws)) for a, ws in enumerate(agent_ws)]

    rss_before = proc.memory_info().rss
    customers = []
    for _ in range(args.customers):
        ws = await http.ws_connect(f"{ws_url}/channels/webchat/ws")
        await ws.send_json({"type": "hello"})
        welcome = await ws.receive_json(timeout=30)
        assert welcome["type"] == "welcome", welcome
        customers.append(ws)
    await asyncio.sleep(1.0)  # let the server settle its buffers before reading RSS
    rss_after = proc.memory_info().rss
    per_conn = (rss_after - rss_before) / args.customers

    async def customer_loop(i: int, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            f = json.loads(msg.data)
            if f.get("type") == "ack":
                acked[f["client_id"]] = int(f["id"])
                if len(acked) >= total:
                    check()

    cust_tasks = [asyncio.create_task(customer_loop(i, ws)) for i, ws in enumerate(customers)]

    async def send(i: int, m: int) -> None:
        cid = f"c{i}x{m}"
        sent_at[cid] = time.perf_counter()
        await customers[i].send_json({"type": "message", "client_id": cid, "text": f"line {m} of customer {i}"})

    await _pace(args.customers, args.messages, args.rate, send)
    try:
        await asyncio.wait_for(complete.wait(), 60)
    except TimeoutError:
        pass  # counted as lost below
    latencies = []
    for cid, mid in acked.items():
        i = int(cid[1:].split("x")[0])
        t = received[i % n_agents].get(mid)
        if t is not None:
            latencies.append((t - sent_at[cid]) * 1000)
    for ws in customers + agent_ws:
        await ws.close()
    for task in cust_tasks + agent_tasks:
        task.cancel()
    await asyncio.gather(*cust_tasks, *agent_tasks, return_exceptions=True)
    return {"latencies": latencies, "lost": total - len(latencies), "bytes_per_conn": per_conn,
            "rss_mb": rss_after / 2**20}


async def run_relay(url: str, args: argparse.Namespace, http: aiohttp.ClientSession) -> dict[str, Any]:
    ws_url = url.replace("http", "ws", 1)
    arrived: dict[str, float] = {}
    sent_at: dict[str, float] = {}
    total = args.customers * args.messages
    complete = asyncio.Event()

    async def agent_loop(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            arrived.setdefault(json.loads(msg.data)["id"], time.perf_counter())
            if len(arrived) >= total:
                complete.set()

    agent_ws = [await http.ws_connect(f"{ws_url}/agent", params={"n": str(a)}) for a in range(args.agents)]
    agent_tasks = [asyncio.create_task(agent_loop(ws)) for ws in agent_ws]
    customers = [await http.ws_connect(f"{ws_url}/customer", params={"agent": str(i % args.agents)})
                 for i in range(args.customers)]

    async def drain(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break

    cust_tasks = [asyncio.create_task(drain(ws)) for ws in customers]

    async def send(i: int, m: int) -> None:
        cid = f"c{i}x{m}"
        sent_at[cid] = time.perf_counter()
        await customers[i].send_json({"type": "message", "client_id": cid, "text": f"line {m} of customer {i}"})

    await _pace(args.customers, args.messages, args.rate, send)
    try:
        await asyncio.wait_for(complete.wait(), 30)
    except TimeoutError:
        pass  # counted as lost below
    latencies = [(arrived[c] - sent_at[c]) * 1000 for c in arrived]
    for ws in customers + agent_ws:
        await ws.close()
    for task in cust_tasks + agent_tasks:
        task.cancel()
    await asyncio.gather(*cust_tasks, *agent_tasks, return_exceptions=True)
    return {"latencies": latencies, "lost": total - len(latencies)}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    _raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="umsg-chat-bench-") as data_dir:
        tokens = await _seed(data_dir, args.agents)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            relay_proc, relay_url = await _spawn("--serve-relay")
            try:
                relay = await run_relay(relay_url, args, http)
            finally:
                await _stop(relay_proc)
            floor_proc, floor_url = await _spawn("--serve-relay", "--relay-store", data_dir)
            try:
                floor = await run_relay(floor_url, args, http)
            finally:
                await _stop(floor_proc)
            extra = ("--profile", args.profile) if args.profile else ()
            umsg_proc, umsg_url = await _spawn("--serve-umsg", data_dir, *extra)
            try:
                umsg = await run_umsg(umsg_url, tokens, args, psutil.Process(umsg_proc.pid), http)
            finally:
                await _stop(umsg_proc)
    p99, base99 = _pct(umsg["latencies"], 0.99), _pct(relay["latencies"], 0.99)
    summary = {
        "umsg_ms": {"p50": round(_pct(umsg["latencies"], 0.5), 2), "p99": round(p99, 2),
                    "mean": round(statistics.fmean(umsg["latencies"]), 2) if umsg["latencies"] else None,
                    "lost": umsg["lost"]},
        "relay_ms": {"p50": round(_pct(relay["latencies"], 0.5), 2), "p99": round(base99, 2),
                     "lost": relay["lost"]},
        "durable_relay_ms": {"p50": round(_pct(floor["latencies"], 0.5), 2),
                             "p99": round(_pct(floor["latencies"], 0.99), 2), "lost": floor["lost"]},
        "durable_relay_ratio": round(_pct(floor["latencies"], 0.99) / base99, 2) if base99 else None,
        "idle_connection_kb": round(umsg["bytes_per_conn"] / 1024, 1),
        "server_rss_mb": round(umsg["rss_mb"], 1),
    }
    print(json.dumps(summary), file=sys.stderr)
    return {
        "name": "chat_send_to_agent_p99",
        "value": round(p99, 2),
        "unit": "ms",
        "baseline": round(base99, 2),
        "ratio": round(p99 / base99, 2) if base99 else None,
        "params": {"customers": args.customers, "agents": args.agents, "messages": args.messages,
                   "rate": args.rate, "store": "sqlite", **summary},
    }


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one line per customer (under a minute)")
    ap.add_argument("--customers", type=int, default=1000)
    ap.add_argument("--agents", type=int, default=50)
    ap.add_argument("--messages", type=int, default=3, help="lines per customer")
    ap.add_argument("--rate", type=float, default=300.0, help="lines per second over all customers")
    ap.add_argument("--profile", metavar="FILE", help="profile the service with cProfile into FILE")
    ap.add_argument("--serve-umsg", metavar="DATA_DIR", help=argparse.SUPPRESS)
    ap.add_argument("--serve-relay", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--relay-store", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.messages = 1
    return args


if __name__ == "__main__":
    opts = _parse()
    if opts.serve_umsg and opts.profile:
        import cProfile

        with cProfile.Profile() as prof:
            asyncio.run(_serve_umsg(opts.serve_umsg))
        prof.dump_stats(opts.profile)
    elif opts.serve_umsg:
        asyncio.run(_serve_umsg(opts.serve_umsg))
    elif opts.serve_relay:
        asyncio.run(_serve_relay(opts.relay_store))
    else:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        print(json.dumps(asyncio.run(main(opts))))

"""Ingest throughput and time-to-commit, pipeline against a plain durable writer.

For each database (SQLite in WAL with full fsync, and the PostgreSQL at
127.0.0.1:5432) the same generated messages go through:

- the baseline: the same rows (contact, identity, conversation, message, raw
  part, body part, queue item, event) and the same blobs, kept as the pipeline
  keeps them (rows of `blob` in the message's transaction when small, files
  otherwise), each message in its own durable transaction from the same number
  of concurrent clients, but no dedupe, no contact resolution, no threading, no
  conversion and no routing;
- the pipeline: `core.ingest.ingest`, the function every channel calls.

It prints one JSON object per backend and, last, a summary object whose value
is the worse of the two pipeline/baseline ratios. Memory is sampled during a
long pipeline run (100,000 messages in full mode) to show it stays flat.

    python bench/ingest.py [--quick] [--db sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage.models import Blob, Contact, Conversation, Event, Identity, Message, Part, QueueItem  # noqa: E402
from storage.types import utcnow  # noqa: E402
from umsg.config import load_settings  # noqa: E402
from umsg.core import Core  # noqa: E402
from umsg.ingest.prepare import INLINE_BLOB_BYTES  # noqa: E402
from umsg.model import Address, IdentityKind, Inbound, InboundPart, ThreadHints  # noqa: E402

WARMUP = 200
PG_DSN = os.environ.get("UMSG_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def body(i: int, who: int) -> str:
    return (f"Hello, I ordered item {i} last week and it has not arrived yet. Could you check the "
            f"tracking number for me? Thanks, customer {who}. ") * 8


def make_inbound(i: int, senders: int) -> Inbound:
    who = i % senders
    html = f"<html><body><p>{body(i, who)}</p></body></html>".encode()
    raw = (f"From: c{who}@customers.test\r\nTo: support@acme.test\r\nSubject: order {i}\r\n"
           f"Message-ID: <m{i}@customers.test>\r\n\r\n" + body(i, who)).encode()
    refs = (f"<m{i - senders}@customers.test>",) if i >= senders and i % 3 == 0 else ()
    return Inbound(channel="email", sender=Address(IdentityKind.EMAIL, f"c{who}@customers.test"),
                   recipients=("support@acme.test",), dedupe_key=f"<m{i}@customers.test>", raw=raw,
                   raw_media_type="message/rfc822", subject=f"order {i}", text=body(i, who),
                   parts=(InboundPart("text/html", html, "body.html", role="body"),),
                   thread=ThreadHints(own=(f"<m{i}@customers.test>",), refs=refs))


async def _pg(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def open_core(backend: str, workdir: Path, tag: str) -> tuple[Core, str | None]:
    schema = None
    if backend == "sqlite":
        db = {"url": f"sqlite:///{workdir / (tag + '.db')}"}
    else:
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        await _pg(f'CREATE SCHEMA "{schema}"')
        db = {"url": PG_DSN, "schema": schema}
    settings = load_settings(None, environ={}, overrides={"data_dir": str(workdir / tag), "database": db})
    core = await Core.open(settings)
    await core.start()
    return core, schema


async def close_core(core: Core, schema: str | None) -> None:
    await core.aclose()
    if schema:
        await _pg(f'DROP SCHEMA "{schema}" CASCADE')


async def run_clients(n: int, clients: int, one: Any) -> tuple[float, list[float]]:
    """`clients` concurrent producers call `one(i)` for i in 0..n-1; return elapsed and latencies."""
    latencies: list[float] = []
    counter = iter(range(n))

    async def client() -> None:
        for i in counter:
            t0 = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - t0, latencies


async def baseline(core: Core, n: int, clients: int, senders: int, offset: int = 0) -> tuple[float, list[float]]:
    """The same rows and blobs, one durable transaction per message, none of the pipeline's logic."""
    pid = await core.ensure_project("default")

    async def one(i: int) -> None:
        m = make_inbound(i + offset, senders)
        data = [m.raw, m.parts[0].data]
        inline = sum(len(d) for d in data) <= INLINE_BLOB_BYTES  # as the pipeline decides
        if inline:
            raw_sha, body_sha = (hashlib.sha256(d).hexdigest() for d in data)
        else:
            raw_sha, body_sha = await core.blobs.put_many(data)
        now = utcnow()
        async with core.sessions() as s, s.begin():
            if inline:
                s.add_all([Blob(sha256=raw_sha, data=data[0]), Blob(sha256=body_sha, data=data[1])])
            contact = Contact(project_id=pid, attributes={})
            s.add(contact)
            await s.flush()
            s.add(Identity(project_id=pid, contact_id=contact.id, kind="email", value=f"b{i + offset}@customers.test"))
            conv = Conversation(project_id=pid, contact_id=contact.id, channel="email", subject=m.subject,
                                token=secrets.token_hex(6), queue="default")
            s.add(conv)
            await s.flush()
            msg = Message(project_id=pid, conversation_id=conv.id, contact_id=contact.id, direction="in",
                          channel="email", from_addr=m.sender.value, to_addrs=list(m.recipients),
                          subject=m.subject, text=m.text, dedupe_key=m.dedupe_key, created_at=now)
            s.add(msg)
            await s.flush()
            s.add_all([
                Part(project_id=pid, message_id=msg.id, role="raw", sha256=raw_sha, media_type="message/rfc822",
                     size=len(m.raw)),
                Part(project_id=pid, message_id=msg.id, role="body", sha256=body_sha, media_type="text/html",
                     size=len(m.parts[0].data)),
                QueueItem(project_id=pid, conversation_id=conv.id, message_id=msg.id, queue="default",
                          channel="email", skills={}),
                Event(project_id=pid, kind="message.created", payload={"message_id": msg.id}),
            ])

    return await run_clients(n, clients, one)


async def pipeline(core: Core, n: int, clients: int, senders: int, rss: list[tuple[int, float]] | None = None,
                   offset: int = 0) -> tuple[float, list[float]]:
    proc = psutil.Process()
    step = max(n // 10, 1)

    async def one(i: int) -> None:
        await core.ingest.ingest(make_inbound(i + offset, senders))
        if rss is not None and i % step == 0:
            rss.append((i, proc.memory_info().rss / 2**20))

    return await run_clients(n, clients, one)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def bench_backend(backend: str, n: int, soak: int, clients: int, senders: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="umsg-bench-") as tmp:
        work = Path(tmp)
        core, schema = await open_core(backend, work, "baseline")
        try:
            await baseline(core, WARMUP, clients, senders, offset=10**9)
            b_time, b_lat = await baseline(core, n, clients, senders)
        finally:
            await close_core(core, schema)
        core, schema = await open_core(backend, work, "pipeline")
        try:
            # Warm-up (connection pool, converter worker processes), not timed.
            await pipeline(core, WARMUP, clients, senders, offset=10**9)
            before = core.ingest.stats["batches"]
            p_time, p_lat = await pipeline(core, n, clients, senders)
            batches = core.ingest.stats["batches"] - before
            rss: list[tuple[int, float]] = []
            soak_time = 0.0
            if soak:
                soak_time, _ = await pipeline(core, soak, clients, senders, rss, offset=n)
        finally:
            await close_core(core, schema)
    base_rate, pipe_rate = n / b_time, n / p_time
    mem = {}
    if rss:
        rss.sort()
        later = [m for i, m in rss if i >= soak // 5]  # after warm-up
        mem = {"messages": soak, "rss_mb_samples": [round(m, 1) for _, m in rss],
               "rss_growth_after_warmup_mb": round(max(later) - min(later), 1) if later else None,
               "soak_msgs_per_s": round(soak / soak_time, 1)}
    return {
        "name": f"ingest-{backend}", "value": round(pipe_rate, 1), "unit": "messages/s",
        "baseline": round(base_rate, 1), "ratio": round(pipe_rate / base_rate, 3),
        "params": {"messages": n, "clients": clients, "senders": senders, "backend": backend,
                   "pipeline_commits": batches,
                   "pipeline_p50_ms": round(pct(p_lat, 0.5), 2), "pipeline_p99_ms": round(pct(p_lat, 0.99), 2),
                   "baseline_p50_ms": round(pct(b_lat, 0.5), 2), "baseline_p99_ms": round(pct(b_lat, 0.99), 2),
                   "memory": mem},
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small run, under a minute")
    ap.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--messages", type=int, help="messages per timed run")
    ap.add_argument("--soak", type=int, help="messages in the memory run (0 to skip)")
    ap.add_argument("--clients", type=int, default=32)
    args = ap.parse_args()
    n = args.messages or (1500 if args.quick else 10_000)
    soak = args.soak if args.soak is not None else (3000 if args.quick else 100_000)
    backends = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    results = []
    for backend in backends:
        r = await bench_backend(backend, n, soak, args.clients, senders=max(n // 10, 10))
        results.append(r)
        print(json.dumps(r), flush=True)
    worst = min(results, key=lambda r: r["ratio"])
    print(json.dumps({"name": "ingest", "value": worst["value"], "unit": "messages/s",
                      "baseline": worst["baseline"], "ratio": worst["ratio"],
                      "params": {"worst_backend": worst["params"]["backend"], "quick": args.quick,
                                 "by_backend": {r["params"]["backend"]: r["ratio"] for r in results}}}))


if __name__ == "__main__":
    asyncio.run(main())

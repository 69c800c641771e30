"""Messages per second accepted over SMTP with 250-after-commit, against a bare aiosmtpd sink.

Both servers run in this process on loopback and are driven by the same
client: `--clients` concurrent aiosmtplib sessions (default 8), each sending
corpus messages (../shared/corpus/email) one after another over one
connection. Every message gets a unique `X-Bench-Seq` header so none is a
duplicate. The baseline is aiosmtpd with a handler that answers 250 at once;
the measured server is the email channel parsing each message and answering
250 only after `core.ingest.ingest` committed (SQLite in WAL in a temp dir,
or the PostgreSQL at 127.0.0.1:5432 with `--db postgres`).

Two floors, run once each with the same client, show what the goal leaves for the store:
`channel_only` is the same email channel (parsing included) handing each message to a sink
that stores nothing (`channel_only_pool`: the same with every message parsed in two worker
processes), and `minimal_store` the channel with `floor_store.MinimalStore` (one
SQLite row per message, group-committed, 250 after commit) instead of the core's ingest.

    python bench/smtp_ingest.py [--quick] [--clients 8] [--messages N] [--db sqlite|postgres]

Prints one JSON object per server, then the summary object last:
{"name", "value", "unit", "baseline", "ratio", "params"}. The goal is ratio >= 0.5.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosmtplib
from aiosmtpd.smtp import SMTP, Envelope, Session

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from floor_store import MinimalStore  # noqa: E402

from channels.email import EmailChannel, EmailSettings  # noqa: E402
from umsg.config import load_settings  # noqa: E402
from umsg.core import Core  # noqa: E402
from umsg.model import Inbound, IngestResult  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "email"
PG_DSN = os.environ.get("UMSG_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
RCPT = "support@acme.test"


class _Sink:
    """The baseline: accepts everything at once, stores nothing."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 OK"


def corpus() -> list[bytes]:
    return [p.read_bytes() for p in sorted(CORPUS.rglob("*.eml"))]


async def drive(port: int, messages: list[bytes], clients: int, total: int) -> dict[str, Any]:
    """Send `total` messages over `clients` sessions; returns rate and outcome counts."""
    counter = iter(range(total))
    outcome = {"accepted": 0, "refused": 0}
    run = uuid.uuid4().hex[:8]

    async def client() -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60, start_tls=False) as smtp:
            for i in counter:
                raw = f"X-Bench-Seq: {run}-{i}\r\n".encode() + messages[i % len(messages)]
                try:
                    await smtp.sendmail("bench@example.com", [RCPT], raw)
                    outcome["accepted"] += 1
                except aiosmtplib.SMTPResponseException:
                    outcome["refused"] += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    seconds = time.perf_counter() - started
    return {"messages": total, "seconds": round(seconds, 3), "rate": total / seconds, **outcome}


async def with_sink(fn: Callable[[int], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(_Sink(), hostname="sink.test", enable_SMTPUTF8=True, decode_data=False, loop=loop),
        "127.0.0.1", 0)
    try:
        return await fn(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def with_channel(
    db: str, data_dir: Path, fn: Callable[[int], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    database: dict[str, Any] = {"url": f"sqlite:///{data_dir / 'umsg.db'}"}
    schema = None
    if db == "postgres":
        import asyncpg

        schema = f"bench_{uuid.uuid4().hex[:10]}"
        conn = await asyncpg.connect(PG_DSN)
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.close()
        database = {"url": PG_DSN, "schema": schema}
    settings = load_settings(None, environ={}, overrides={"data_dir": str(data_dir), "database": database})
    core = await Core.open(settings)
    await core.start()
    channel = EmailChannel("bench", EmailSettings(domain="acme.test", addresses=[RCPT], listen="127.0.0.1:0",
                                                  max_sessions=64))
    await channel.start(core.ingest.ingest)
    try:
        result = await fn(channel.port or 0)
        result["ingest"] = core.ingest.stats
        return result
    finally:
        await channel.aclose()
        await core.aclose()
        if schema is not None:
            import asyncpg

            conn = await asyncpg.connect(PG_DSN)
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await conn.close()


async def with_floor(kind: str, data_dir: Path, fn: Callable[[int], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """The email channel over a store-nothing sink (`channel_only`) or `MinimalStore`."""
    store = MinimalStore(data_dir / "floor.db") if kind == "minimal_store" else None

    async def nowhere(inbound: Inbound) -> IngestResult:
        return IngestResult(message_id=0, conversation_id=0, contact_id=0, duplicate=False)

    # `_pool`: every message parsed in two worker processes, so parsing uses the second core.
    pool: dict[str, Any] = {"parse_inline_bytes": 0, "parse_workers": 2} if kind.endswith("_pool") else {}
    channel = EmailChannel("bench", EmailSettings(domain="acme.test", addresses=[RCPT], listen="127.0.0.1:0",
                                                  max_sessions=64, **pool))
    await channel.start(store.ingest if store is not None else nowhere)
    try:
        return {"name": kind, **await fn(channel.port or 0)}
    finally:
        await channel.aclose()
        if store is not None:
            store.close()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    messages = corpus()
    total = args.messages or (400 if args.quick else 3000)
    # Every corpus file once: the first large message starts the parse and conversion
    # worker processes (about a second each), a one-off that is not the steady state.
    warmup = max(min(100, total // 4), len(messages))
    params = {"clients": args.clients, "messages": total, "corpus_files": len(messages), "db": args.db}

    async def timed(port: int) -> dict[str, Any]:
        await drive(port, messages, args.clients, warmup)
        return await drive(port, messages, args.clients, total)

    with tempfile.TemporaryDirectory(prefix="umsg-bench-") as tmp:
        # Alternate so drift on a shared machine hits both sides alike.
        base = await with_sink(timed)
        ours = await with_channel(args.db, Path(tmp) / "a", timed)
        base2 = await with_sink(timed)
        ours2 = await with_channel(args.db, Path(tmp) / "b", timed)
        (Path(tmp) / "c").mkdir()
        floors = [await with_floor(kind, Path(tmp) / "c", timed)
                  for kind in ("channel_only", "channel_only_pool", "minimal_store")]
    baseline = (base["rate"] + base2["rate"]) / 2
    value = (ours["rate"] + ours2["rate"]) / 2
    print(json.dumps({"name": "smtp_sink", "runs": [base, base2]}), flush=True)
    print(json.dumps({"name": "smtp_ingest_server", "runs": [ours, ours2]}), flush=True)
    print(json.dumps({"name": "smtp_floors", "runs": floors}), flush=True)
    params["floor_ratios"] = {f["name"]: round(f["rate"] / baseline, 3) for f in floors}
    return {"name": "smtp_ingest", "value": round(value, 1), "unit": "messages/s",
            "baseline": round(baseline, 1), "ratio": round(value / baseline, 3), "params": params}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small run, under a minute")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--messages", type=int, help="messages per timed run")
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    print(json.dumps(asyncio.run(main(ap.parse_args()))), flush=True)

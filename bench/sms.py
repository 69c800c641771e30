"""SMS benchmark: submit_sm/s and MO ingests/s through the SMPP adapter against a bare client.

Peer: the smpp34 SMSC (as in the tests) in this process. MT: N texts queued through the
outbox and handed to `SmsChannel.send` as the dispatcher hands a first attempt, up to
`--in-flight` at once, over an SMPP window of 10 (each part's id bound in the store before
send returns); `mt_dispatched_*`: N more texts queued, then every due job (those N and
the N above, whose jobs the outbox queued too) through the whole outbound path (the
Dispatcher claiming jobs, loading each message, sending, recording the result), per job. MO: the
SMSC pushes N texts, 10 in flight, each answered only after its ingest committed;
`mo_channel_*`: the same into a sink that stores nothing (the channel's own share, apart
from the core ingest); `mo_minimal_store_*`: the same into `floor_store.MinimalStore` (one SQLite
row per text, group-committed, acknowledged after commit), the least a durable store does;
`mt_minimal_store_*`: the bare client with the adapter's sends in flight, each submit's
message_id stored in `MinimalStore` (committed) before the send counts, the least that
persisting the id before a receipt can arrive costs.
Baseline, same run and peer: a bare `smpp34.Client` with the same
window and no storage (submits; MO acknowledged on receipt). Goal: the adapter at >= 0.5
of the bare client on each. `value` is the adapter's MT rate; the rest is in `params`.
CPU per message (`*_cpu_ms`, `time.process_time`) counts this whole process, peer included.

Usage: python bench/sms.py [--quick] [--messages 2000] [--in-flight 32]
Prints one JSON object last: {"name","value","unit","baseline","ratio","params"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import smpp34  # noqa: E402
from floor_store import MinimalStore  # noqa: E402
from peers.smsc import Smsc, smpp_channel  # noqa: E402

from umsg.config import load_settings  # noqa: E402
from umsg.core import Core  # noqa: E402
from umsg.model import Address, IdentityKind, Inbound, IngestResult, Outbound  # noqa: E402
from umsg.outbound.dispatcher import Dispatcher  # noqa: E402

WINDOW = 10
# Sends handed to the adapter at once (the dispatcher's batch): each waits for its part ids to
# commit, so more sends than the SMPP window keep the window full while a group commit runs.
IN_FLIGHT = 32


@dataclass(frozen=True)
class Run:
    rate: float  # messages per second
    cpu_ms: float  # process CPU per message


async def bounded(n: int, job: Any, in_flight: int = WINDOW) -> Run:
    """Run job(i) for i < n, WINDOW at a time."""
    sem = asyncio.Semaphore(in_flight)

    async def one(i: int) -> None:
        async with sem:
            await job(i)

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(i) for i in range(n)))
    return Run(n / (time.perf_counter() - start), (time.process_time() - cpu) * 1000 / n)


async def bare(smsc: Smsc, n: int) -> tuple[Run, Run]:
    # Room for every MO event, so the bare client never NAKs one for want of space.
    client = smpp34.Client("127.0.0.1", smsc.port, "bare", "pw", window_size=WINDOW, inbound_capacity=2 * n)
    session = await client.connect()
    await smsc.wait_sessions(1)

    async def submit(i: int) -> None:
        await session.submit_sm("447700900123", f"bare {i}".encode(), source_addr="447700900000")

    mt = await bounded(n, submit)
    got = 0

    async def drain() -> None:
        nonlocal got
        while got < n:
            ev = await session.next()  # acknowledged by the client core on receipt
            if isinstance(ev, smpp34.Disconnected):
                return
            got += 1

    reader = asyncio.create_task(drain())
    mo = await bounded(n, lambda i: smsc.mo(f"bare mo {i}".encode(), source=f"4477009{i % 100000:05d}"))
    await reader
    await session.unbind()
    await client.stop()
    smsc.esmes.clear()
    return mt, mo


async def bare_mt_floor(smsc: Smsc, n: int, in_flight: int, floor_db: Path) -> Run:
    """The bare client storing each submit's message_id durably before it counts as sent: the least
    that "the SMSC's message_id persisted before a receipt can arrive" costs, with the adapter's sends in flight."""
    client = smpp34.Client("127.0.0.1", smsc.port, "floor", "pw", window_size=WINDOW)
    session = await client.connect()
    await smsc.wait_sessions(1)
    store = MinimalStore(floor_db)

    async def submit(i: int) -> None:
        resp = await session.submit_sm("447700900123", f"floor {i}".encode(), source_addr="447700900000")
        await store.store(("447700900123", f"floor {i}", b"", f"mt:{resp.message_id}"))

    try:
        return await bounded(n, submit, in_flight)
    finally:
        store.close()
        await session.unbind()
        await client.stop()
        smsc.esmes.clear()


async def adapter(smsc: Smsc, core: Core, n: int, in_flight: int, floor_db: Path) -> tuple[Run, Run, Run, Run, Run]:
    async with smpp_channel(core, smsc.port, smsc, window=WINDOW, registered_delivery=False) as channel:
        seed = await core.ingest.ingest(Inbound(channel="sms", sender=Address(IdentityKind.PHONE, "+447700900123"),
                                                recipients=("447700900000",), dedupe_key="seed", raw=b"x", text="hi"))
        project = await core.ensure_project("default")
        outs = []
        for i in range(n):
            msg = await core.outbox.reply(project_id=project, conversation_id=seed.conversation_id,
                                          text=f"adapter {i}", channel="sms")
            # As the dispatcher hands over a first attempt (no earlier parts to look up).
            outs.append(Outbound(message_id=msg.id, channel="sms", sender="", recipient=msg.to_addrs[0],
                                 text=f"adapter {i}", meta={"attempt": 0}))

        async def send(i: int) -> None:
            await channel.send(outs[i])

        mt = await bounded(n, send, in_flight)
        for i in range(n):
            await core.outbox.reply(project_id=project, conversation_id=seed.conversation_id,
                                    text=f"dispatched {i}", channel="sms")
        # The whole outbound path: claim jobs, load each message, send, record the result.
        dispatcher = Dispatcher(core.sessions, core.events, {"sms": channel}, "bench", batch=in_flight,
                                readers=core.readers)
        # The texts of the first part were queued through the outbox too, so their jobs are due
        # as well: count the jobs the dispatcher handled, not n.
        start, cpu, handled = time.perf_counter(), time.process_time(), 0
        while got := await dispatcher.run_once():
            handled += got
        via = Run(handled / (time.perf_counter() - start), (time.process_time() - cpu) * 1000 / handled)
        mo = await bounded(n, lambda i: smsc.mo(f"adapter mo {i}".encode(), source=f"4477008{i % 100000:05d}"))
    smsc.esmes.clear()

    async def nowhere(inbound: Inbound) -> IngestResult:
        return IngestResult(message_id=0, conversation_id=0, contact_id=0, duplicate=False)

    async with smpp_channel(core, smsc.port, smsc, sink=nowhere, window=WINDOW, registered_delivery=False):
        own = await bounded(n, lambda i: smsc.mo(f"own mo {i}".encode(), source=f"4477007{i % 100000:05d}"))
    smsc.esmes.clear()
    store = MinimalStore(floor_db)
    try:
        async with smpp_channel(core, smsc.port, smsc, sink=store.ingest, window=WINDOW, registered_delivery=False):
            least = await bounded(n, lambda i: smsc.mo(f"floor mo {i}".encode(), source=f"4477006{i % 100000:05d}"))
    finally:
        store.close()
    return mt, via, mo, own, least


async def main(args: argparse.Namespace) -> dict[str, Any]:
    n = 300 if args.quick else args.messages
    smsc = Smsc(receipts=None)
    await smsc.start()
    try:
        bare_mt, bare_mo = await bare(smsc, n)
        with tempfile.TemporaryDirectory() as tmp:
            mt_floor = await bare_mt_floor(smsc, n, args.in_flight, Path(tmp) / "mt_floor.db")
            settings = load_settings(None, environ={}, overrides={
                "data_dir": tmp, "database": {"url": f"sqlite:///{tmp}/umsg.db"}})
            core = await Core.open(settings)
            await core.start()
            try:
                mt, via, mo, own, least = await adapter(smsc, core, n, args.in_flight, Path(tmp) / "floor.db")
            finally:
                await core.aclose()
    finally:
        await smsc.aclose()
    return {"name": "sms_submit_sm_per_second", "value": round(mt.rate, 1), "unit": "submit_sm/s",
            "baseline": round(bare_mt.rate, 1), "ratio": round(mt.rate / bare_mt.rate, 3),
            "params": {"messages": n, "window": WINDOW, "store": "sqlite",
                       "mt_cpu_ms": round(mt.cpu_ms, 3), "mt_bare_cpu_ms": round(bare_mt.cpu_ms, 3),
                       "mt_minimal_store_per_second": round(mt_floor.rate, 1),
                       "mt_minimal_store_ratio": round(mt_floor.rate / bare_mt.rate, 3),
                       "mt_minimal_store_cpu_ms": round(mt_floor.cpu_ms, 3),
                       "mt_dispatched_per_second": round(via.rate, 1),
                       "mt_dispatched_ratio": round(via.rate / bare_mt.rate, 3),
                       "mt_dispatched_cpu_ms": round(via.cpu_ms, 3), "in_flight": args.in_flight,
                       "mo_ingests_per_second": round(mo.rate, 1), "mo_bare_per_second": round(bare_mo.rate, 1),
                       "mo_ratio": round(mo.rate / bare_mo.rate, 3),
                       "mo_cpu_ms": round(mo.cpu_ms, 3), "mo_bare_cpu_ms": round(bare_mo.cpu_ms, 3),
                       "mo_channel_per_second": round(own.rate, 1),
                       "mo_channel_ratio": round(own.rate / bare_mo.rate, 3),
                       "mo_channel_cpu_ms": round(own.cpu_ms, 3),
                       "mo_minimal_store_per_second": round(least.rate, 1),
                       "mo_minimal_store_ratio": round(least.rate / bare_mo.rate, 3),
                       "mo_minimal_store_cpu_ms": round(least.cpu_ms, 3)}}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=IN_FLIGHT,
                        help="sends handed to the adapter at once (the SMPP window stays 10)")
    print(json.dumps(asyncio.run(main(parser.parse_args()))))

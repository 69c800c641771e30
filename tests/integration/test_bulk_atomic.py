"""A batch written through `Bulk` commits all of its rows or none, on SQLite and PostgreSQL.

The bulk level uses three small tables of its own; the writer level sends a group of
messages through the ingest at once, one of which makes a middle statement of the
shared batch (the thread keys) fail on the store's unique constraint.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.bulk import Bulk
from storage.db import create_engine, writer_connection
from storage.models import Blob, Contact, Event, Identity, Message, Part, QueueItem, ThreadRef
from umsg.core import Core
from umsg.errors import TransientError
from umsg.ingest.batch import BatchState
from umsg.ingest.ingestor import Ingestor
from umsg.ingest.rows import Work
from umsg.ingest.steps import STEPS, Ctx
from umsg.model import Address, IdentityKind, Inbound, ThreadHints

META = MetaData()
FIRST = Table("bulk_first", META, Column("id", Integer, primary_key=True), Column("note", String(20), nullable=False))
SECOND = Table("bulk_second", META, Column("id", Integer, primary_key=True),
               Column("code", String(20), nullable=False, unique=True))
THIRD = Table("bulk_third", META, Column("id", Integer, primary_key=True),
              Column("first_id", Integer, ForeignKey("bulk_first.id"), nullable=False))
# The read that opens a writer's transaction (BEGIN IMMEDIATE goes with it on SQLite).
PROBE = select(SECOND.c.id).where(SECOND.c.code == bindparam("code"))


@pytest.fixture
async def engine(db_config: dict[str, Any]) -> AsyncIterator[AsyncEngine]:
    schema = db_config.get("schema")
    eng = create_engine(str(db_config["url"]), schema=str(schema) if schema else None)
    async with eng.begin() as conn:
        await conn.run_sync(META.create_all)
        await conn.execute(SECOND.insert(), [{"id": 1, "code": "taken"}])
    try:
        yield eng
    finally:
        await eng.dispose()


async def _ids(engine: AsyncEngine, table: Table) -> list[int]:
    async with engine.connect() as conn:
        return list((await conn.scalars(select(table.c.id).order_by(table.c.id))).all())


async def _batch(conn: AsyncConnection, bulk: Bulk, ops: list[tuple[str, Table, list[dict[str, Any]]]]) -> bool:
    """One writer transaction as the ingest writer and the binds run it: begin with the read, commit with the rows."""
    async with conn.begin():
        await bulk.fetch(conn, PROBE, {"code": "taken"}, begin=True)
        committed = await bulk.write(conn, ops, commit=True)
        if not committed:
            await conn.commit()
    return committed


async def test_a_failing_middle_statement_commits_nothing_and_the_connection_goes_on(
        engine: AsyncEngine, db_backend: str) -> None:
    bulk = Bulk()
    conn = await writer_connection(engine)
    statements: list[str] = []
    if db_backend == "sqlite":
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        await driver.set_trace_callback(statements.append)
    try:
        with pytest.raises(IntegrityError):
            await _batch(conn, bulk, [
                ("insert", FIRST, [{"id": 1, "note": "a"}]),
                # The first row goes in, the second breaks the unique code.
                ("insert", SECOND, [{"id": 2, "code": "fresh"}, {"id": 3, "code": "taken"}]),
                ("insert", THIRD, [{"id": 1, "first_id": 1}]),
            ])
        assert await _ids(engine, FIRST) == []
        assert await _ids(engine, SECOND) == [1]
        assert await _ids(engine, THIRD) == []
        if db_backend == "sqlite":
            sent = " | ".join(statements)
            assert "bulk_third" not in sent, sent  # nothing runs after the failed statement
            assert "COMMIT" not in sent and "ROLLBACK" in sent, sent
            await driver.set_trace_callback(None)

        # The same connection writes the next batch, and only that one is stored.
        committed = await _batch(conn, bulk, [
            ("insert", FIRST, [{"id": 2, "note": "b"}]),
            ("insert", SECOND, [{"id": 4, "code": "new"}]),
            ("insert", THIRD, [{"id": 2, "first_id": 2}]),
        ])
        assert committed is (db_backend == "sqlite")  # SQLite: COMMIT went with the rows
        assert await _ids(engine, FIRST) == [2]
        assert await _ids(engine, SECOND) == [1, 4]
        assert await _ids(engine, THIRD) == [2]
    finally:
        await conn.close()


async def test_a_failed_batch_without_commit_is_left_for_the_caller_to_roll_back(engine: AsyncEngine) -> None:
    bulk = Bulk()
    conn = await writer_connection(engine)
    try:
        with pytest.raises(IntegrityError):
            async with conn.begin():
                await bulk.fetch(conn, PROBE, {"code": "taken"}, begin=True)
                await bulk.write(conn, [("insert", FIRST, [{"id": 1, "note": "a"}]),
                                        ("insert", SECOND, [{"id": 2, "code": "taken"}]),
                                        ("insert", THIRD, [{"id": 1, "first_id": 1}])])
        assert await _ids(engine, FIRST) == []
        assert await _ids(engine, THIRD) == []
        await _batch(conn, bulk, [("insert", FIRST, [{"id": 3, "note": "c"}])])
        assert await _ids(engine, FIRST) == [3]
    finally:
        await conn.close()


# --- writer level -----------------------------------------------------------------------------

STORED_KEY = "<stored@customers.test>"


class ClaimStoredKey:
    """A step that records a thread key already stored for one message (as a concurrent process
    storing the same key first would make it), and notes which batch each message was decided in."""

    name: ClassVar[str] = "claim-stored-key"

    def __init__(self, culprit: str) -> None:
        self.culprit = culprit
        self.batches: list[tuple[BatchState, str]] = []

    def process(self, work: Work, ctx: Ctx) -> None:
        key = work.prepared.inbound.dedupe_key
        self.batches.append((ctx.batch, key))
        if key == self.culprit:
            work.new_refs.append(STORED_KEY)


def _inbound(key: str, sender: str, own: tuple[str, ...] = ()) -> Inbound:
    return Inbound(channel="email", sender=Address(IdentityKind.EMAIL, sender), recipients=("support@acme.test",),
                   dedupe_key=key, raw=f"raw bytes of {key}".encode(), text=f"hello {key}",
                   thread=ThreadHints(own=own or (f"<{key}@customers.test>",)))


async def _count(core: Core, model: Any, *where: Any) -> int:
    async with core.sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def test_a_message_failing_a_shared_batch_fails_alone_and_the_others_are_stored_once(core: Core) -> None:
    step = ClaimStoredKey("bad")
    settings = core.settings.ingest.model_copy(update={"batch_wait_ms": 50.0})
    ingest = Ingestor(core.sessions, core.readers, core.blobs, core.converters, core.routes, core.events,
                      core.queue, settings, steps=(*STEPS, step))
    await ingest.start()
    try:
        await ingest.ingest(_inbound("setup", "setup@customers.test", own=(STORED_KEY,)))
        before = ingest.stats
        keys = ["good0", "bad", "good1", "good2"]
        results = await asyncio.gather(*(ingest.ingest(_inbound(k, f"{k}@customers.test")) for k in keys),
                                       return_exceptions=True)
        # They were decided together, in one batch, before the one-by-one retries.
        shared = step.batches[1][0]
        assert [k for b, k in step.batches if b is shared] == keys
        bad = results[1]
        assert isinstance(bad, TransientError), results
        good = [r for i, r in enumerate(results) if i != 1]
        assert all(not isinstance(r, BaseException) and not r.duplicate for r in good), results
        stats = ingest.stats
        assert stats["failed"] - before["failed"] == 1
        assert stats["batches"] - before["batches"] == 3  # the failed batch committed nothing; each good one alone
        assert stats["ingested"] - before["ingested"] == 3

        for k in ("setup", "good0", "good1", "good2"):
            assert await _count(core, Message, Message.dedupe_key == k) == 1, k
            assert await _count(core, Identity, Identity.value == f"{k}@customers.test") == 1, k
        assert await _count(core, Message, Message.dedupe_key == "bad") == 0
        assert await _count(core, Identity, Identity.value == "bad@customers.test") == 0
        assert await _count(core, Blob, Blob.data == b"raw bytes of bad") == 0
        assert await _count(core, Message) == 4
        assert await _count(core, Contact) == 4
        assert await _count(core, Part) == 4
        assert await _count(core, QueueItem) == 4
        assert await _count(core, ThreadRef) == 4
        assert await _count(core, Event, Event.kind == "message.created") == 4

        # The writer's connection goes on committing.
        after = await ingest.ingest(_inbound("later", "later@customers.test"))
        assert not after.duplicate
        assert await _count(core, Message) == 5
    finally:
        await ingest.aclose()

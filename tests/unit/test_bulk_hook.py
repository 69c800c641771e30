"""The private aiosqlite API `storage.bulk` runs a batch with: it must still be there and do the same.

If this fails after an aiosqlite upgrade, do not widen the pin in pyproject.toml before
`Bulk._on_thread` is made to work with the new version (or falls back to public calls).
"""

from __future__ import annotations

import sqlite3
import threading

import aiosqlite
import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from storage.bulk import Bulk

HOOK = ("_execute", "_conn")


def test_aiosqlite_still_has_the_private_calls_bulk_uses() -> None:
    missing = [name for name in HOOK if not hasattr(aiosqlite.Connection, name)]
    assert not missing, (f"aiosqlite {aiosqlite.__version__} has no Connection.{', '.join(missing)}: "
                         "storage.bulk._on_thread needs them")


async def test_a_function_runs_on_the_driver_thread_with_the_sqlite3_connection() -> None:
    async with aiosqlite.connect(":memory:") as driver:
        loop_thread = threading.get_ident()

        def run() -> tuple[int, object]:
            return threading.get_ident(), driver._conn

        thread, conn = await driver._execute(run)
        assert thread != loop_thread
        assert isinstance(conn, sqlite3.Connection)

        def fail() -> None:
            raise sqlite3.IntegrityError("raised on the thread")

        with pytest.raises(sqlite3.IntegrityError, match="raised on the thread"):
            await driver._execute(fail)
        # The thread goes on after a failure.
        assert (await driver._execute(lambda: driver._conn.execute("SELECT 41 + 1").fetchone())) == (42,)


async def test_bulk_runs_through_the_hook_and_wraps_the_failing_statement() -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    try:
        async with engine.connect() as conn:
            bulk = Bulk()
            await conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            await conn.commit()
            reached = [0]

            def insert_twice(db: sqlite3.Connection) -> None:
                db.execute("INSERT INTO t VALUES (1)")
                reached[0] = 1
                db.execute("INSERT INTO t VALUES (1)")

            with pytest.raises(IntegrityError) as caught:
                await bulk._on_thread(conn, insert_twice, [("first", ()), ("second", ())], reached)
            assert caught.value.statement == "second"
    finally:
        await engine.dispose()

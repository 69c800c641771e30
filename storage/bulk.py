"""Multi-row INSERTs and UPDATEs for the batch writers (ingest, SMSC-id binds): a batch in one hop on SQLite.

Through SQLAlchemy's aiosqlite adapter every statement costs four hops to the
driver's thread (open a cursor, execute, fetch, close), about 0.1 ms of the
event loop's time each; the ingest writes seven or so statements per batch.
On SQLite the statement is therefore compiled by SQLAlchemy once per shape
(table and columns), its parameters converted by the columns' own types
(JSON, UTC timestamps), and run with the sqlite3 connection's `executemany`.
Driver errors are wrapped as SQLAlchemy's (`IntegrityError`, ...) as the
adapter would, so callers see the same exceptions. PostgreSQL (asyncpg
prepares and pipelines executemany itself) goes through SQLAlchemy as usual,
one statement after the other; the first that fails raises, and the caller's
`conn.begin()` rolls the transaction back.

On SQLite `write` runs all of a batch's statements, in order, as one function
on aiosqlite's thread (`_on_thread`): one hop however many statements, and
they run back to back instead of each waiting for the busy event loop to
collect the previous result. The first statement that fails stops the
function, so no later one runs. With `commit=True` the same function ends the
transaction: COMMIT after the last statement, or ROLLBACK when one failed, so
the batch's rows are committed all or none. Without it a failed batch's
transaction is left to the caller to roll back. `fetch(begin=True)` likewise
runs BEGIN IMMEDIATE and the writer's first read as one function; if BEGIN
fails, the read does not run. Neither BEGIN nor COMMIT is then a hop of its
own, where on a busy loop every hop costs milliseconds of waiting.

aiosqlite has no public call to run a function on its thread: `_on_thread`
uses its private `_execute` and `_conn`, so pyproject.toml allows only the
aiosqlite versions this was tested with, and tests/unit/test_bulk_hook.py
fails if either goes away.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import (
    CompoundSelect,
    DateTime,
    Select,
    String,
    Table,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert, Update

from storage.types import UTCDateTime

_T = TypeVar("_T")


def json_list(name: str) -> Any:
    """A list parameter `fetch` can compile once on SQLite: pass the list as one JSON text (`json.dumps`),
    for use as `column.in_(json_list("ids"))`; the SQL text is then the same for every length."""
    return select(literal_column("value")).select_from(func.json_each(bindparam(name, type_=String))).scalar_subquery()


def in_list(name: str, dialect: str) -> Any:
    """The right side of `column.in_(...)` for a list parameter `name` on `dialect`: `json_list`
    on SQLite (compiled once by `fetch`), an expanding parameter elsewhere. Pass its value
    through `list_param`."""
    return json_list(name) if dialect == "sqlite" else bindparam(name, expanding=True)


def list_param(dialect: str, values: Iterable[Any]) -> Any:
    """The value of an `in_list` parameter: JSON text on SQLite, the list itself elsewhere."""
    return json.dumps(sorted(values)) if dialect == "sqlite" else sorted(values)


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # parameter keys in placeholder order
    processors: tuple[Callable[[Any], Any] | None, ...]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    results: tuple[Callable[[Any], Any] | None, ...] = ()  # per result column (SELECT only)
    # Per parameter: convert each distinct value once per call (timestamps: a batch's rows share `now`).
    memo: tuple[bool, ...] = ()


class Bulk:
    """Writes rows; one per writer, so compiled statements are reused across batches."""

    def __init__(self) -> None:
        # None: the shape needs SQLAlchemy's own execution (see _compile).
        self._compiled: dict[tuple[str, str, tuple[str, ...]], _Compiled | None] = {}
        self._selects: dict[Select[Any] | CompoundSelect[Any], _Compiled] = {}

    def _compile(self, conn: AsyncConnection, kind: str, table: Table, keys: tuple[str, ...]) -> _Compiled | None:
        key = (kind, table.name, keys)
        if key not in self._compiled:
            stmt = _statement(conn, kind, table)
            dialect = conn.dialect
            compiled = stmt.compile(dialect=dialect, column_keys=[k for k in keys if k != "_id"])
            names = tuple(compiled.positiontup or ())
            if not set(names) <= set(keys):
                self._compiled[key] = None  # a column default SQLAlchemy fills in at execution: let it
            else:
                types = [compiled.binds[n].type for n in names]
                procs = tuple(t.dialect_impl(dialect).bind_processor(dialect) for t in types)
                memo = tuple(isinstance(t, (DateTime, UTCDateTime)) for t in types)
                self._compiled[key] = _Compiled(str(compiled), names, procs, memo=memo)
        return self._compiled[key]

    async def _run(self, conn: AsyncConnection, kind: str, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        shape = self._compile(conn, kind, table, tuple(rows[0])) if conn.dialect.name == "sqlite" else None
        if shape is None:
            await conn.execute(_statement(conn, kind, table), list(rows))
            return
        await self._driver(conn, "executemany", shape.sql, self._params(shape, rows))

    async def write(self, conn: AsyncConnection, ops: Sequence[tuple[str, Table, Sequence[Mapping[str, Any]]]],
                    *, commit: bool = False) -> bool:
        """Run `ops` ("insert", "insert_new" or "update", table, rows) in order; on SQLite in one pipelined go.

        "insert_new" skips rows whose primary key is stored already (ON CONFLICT DO NOTHING).

        On SQLite the statements run as one call on the driver's thread; the first that
        fails raises and no later one runs. With `commit` that call ends with COMMIT, or
        with ROLLBACK when a statement failed, and True says the transaction is committed
        (durably: the engine runs `synchronous=FULL`); False leaves the commit to the
        caller (PostgreSQL, or a shape that needs SQLAlchemy's own execution). Without
        `commit`, and on PostgreSQL, a failed batch's transaction is the caller's to roll back.
        """
        ops = [op for op in ops if op[2]]
        shapes = [self._compile(conn, kind, table, tuple(rows[0])) if conn.dialect.name == "sqlite" else None
                  for kind, table, rows in ops]
        if conn.dialect.name != "sqlite" or None in shapes:
            for kind, table, rows in ops:
                await self._run(conn, kind, table, rows)
            return False
        statements: list[tuple[str, Any]] = []
        for shape, (_kind, _table, rows) in zip(shapes, ops, strict=True):
            assert shape is not None
            statements.append((shape.sql, self._params(shape, rows)))
        if not statements and not commit:
            return False
        reached = [0]  # the statement running (len(statements): the COMMIT)

        def run(db: sqlite3.Connection) -> None:
            try:
                for i, (sql, params) in enumerate(statements):
                    reached[0] = i
                    db.executemany(sql, params)
                if commit:
                    reached[0] = len(statements)
                    db.execute("COMMIT")
            except BaseException:
                if commit:
                    # Keep nothing of the batch. Should ROLLBACK fail, the caller's rollback tries again.
                    with suppress(sqlite3.Error):
                        db.rollback()
                raise

        await self._on_thread(conn, run, [*statements, ("COMMIT", ())], reached)
        return commit

    @staticmethod
    def _params(shape: _Compiled, rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
        """Each row's values in placeholder order, converted by their columns' types.

        Column by column rather than row by row: the per-value work is then one call, and a
        timestamp column converts each distinct value once (the SQLite processors format strings).
        """
        values = [[r[n] for n in shape.names] for r in rows]
        for i, (convert, memo) in enumerate(zip(shape.processors, shape.memo, strict=True)):
            if convert is None:
                continue
            if memo:
                done: dict[Any, Any] = {}
                for v in values:
                    if v[i] not in done:
                        done[v[i]] = convert(v[i])
                    v[i] = done[v[i]]
            else:
                for v in values:
                    v[i] = convert(v[i])
        return values

    async def fetch(self, conn: AsyncConnection, stmt: Select[Any] | CompoundSelect[Any],
                    params: Mapping[str, Any], *, begin: bool = False) -> Sequence[Any]:
        """The rows of `stmt` (scalar parameters only), through the driver in one hop on SQLite.

        With `begin`, on SQLite BEGIN IMMEDIATE is queued in front of the read (the
        transaction `conn.begin()` opened on a `writer_connection` takes its write
        lock here); elsewhere the transaction has already begun.
        """
        if conn.dialect.name != "sqlite":
            return list(await conn.execute(stmt, dict(params)))
        shape = self._selects.get(stmt)
        if shape is None:
            dialect = conn.dialect
            compiled = stmt.compile(dialect=dialect)
            names = tuple(compiled.positiontup or ())
            if any(compiled.binds[n].expanding for n in names):
                raise ValueError("an IN list of values cannot be compiled once; pass it as JSON (json_each)")
            procs = tuple(compiled.binds[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names)
            # Literals in the statement (the row tags) are binds with a value of their own.
            fixed = {n: compiled.binds[n].effective_value for n in names if n not in params}
            results = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None)
                            for c in stmt.selected_columns)
            shape = self._selects[stmt] = _Compiled(str(compiled), names, procs, fixed, results)
        values = tuple(p(v) if p is not None else v for p, v in zip(
            shape.processors, (params[n] if n in params else shape.fixed[n] for n in shape.names), strict=True))
        rows: Sequence[Any]
        if begin:
            rows = await self._begin_and_fetch(conn, shape.sql, values)
        else:
            rows = await self._driver(conn, "execute_fetchall", shape.sql, values)
        if not any(shape.results):
            return rows
        return [tuple(p(v) if p is not None else v for p, v in zip(shape.results, row, strict=True)) for row in rows]

    async def _begin_and_fetch(self, conn: AsyncConnection, sql: str, values: tuple[Any, ...]) -> Sequence[Any]:
        reached = [0]

        def run(db: sqlite3.Connection) -> list[Any]:
            db.execute("BEGIN IMMEDIATE")  # if the lock times out, the read does not run
            reached[0] = 1
            return db.execute(sql, values).fetchall()

        rows: list[Any] = await self._on_thread(conn, run, [("BEGIN IMMEDIATE", ()), (sql, values)], reached)
        return rows

    async def _on_thread(self, conn: AsyncConnection, fn: Callable[[sqlite3.Connection], _T],
                         calls: Sequence[tuple[str, Any]], reached: list[int]) -> _T:
        """`fn(the sqlite3 connection)` run on aiosqlite's thread as one queued call: one hop.

        `calls` are the statements `fn` runs, and `reached[0]` the index of the one running
        when it raised: a driver error is wrapped as SQLAlchemy's, naming that statement.
        Private aiosqlite API (see the module docstring): `_execute` queues a callable for
        the thread and awaits its result, `_conn` is the sqlite3 connection.
        """
        driver = await self._driver_connection(conn)
        try:
            return await driver._execute(lambda: fn(driver._conn))  # type: ignore[no-any-return]
        except conn.dialect.loaded_dbapi.Error as exc:
            sql, params = calls[reached[0]]
            raise DBAPIError.instance(sql, params, exc, conn.dialect.loaded_dbapi.Error) from exc

    @staticmethod
    async def _driver_connection(conn: AsyncConnection) -> Any:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        return driver

    async def _driver(self, conn: AsyncConnection, method: str, sql: str, params: Any) -> Any:
        driver = await self._driver_connection(conn)
        try:
            return await getattr(driver, method)(sql, params)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(sql, params, exc, conn.dialect.loaded_dbapi.Error) from exc

    async def insert(self, conn: AsyncConnection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
        """INSERT `rows` (all with the same keys, the column names) into `table`."""
        await self._run(conn, "insert", table, rows)

    async def update(self, conn: AsyncConnection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
        """UPDATE `table` by id: each row names its id as `_id` and the columns to set."""
        await self._run(conn, "update", table, rows)


def _statement(conn: AsyncConnection, kind: str, table: Table) -> Insert | Update:
    """The statement of an op: "insert", "insert_new" (conflicts on the key skipped) or "update" by id."""
    if kind == "insert":
        return insert(table)
    if kind == "insert_new":
        dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        return dialect_insert(table).on_conflict_do_nothing()
    return update(table).where(table.c.id == bindparam("_id"))

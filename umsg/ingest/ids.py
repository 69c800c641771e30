"""Primary keys for rows the ingest adds through the ORM (route actions), on SQLite only.

The writer's own rows get their ids from the batch's first read (`preread`);
this hook covers what `umsg.routes.actions` and `umsg.outbound.outbox` add.

SQLAlchemy cannot batch an INSERT ... RETURNING on SQLite (the order of the
returned rows is not guaranteed), so without ids every new row of a batch is
its own statement: ~8 per message, each a hop to the aiosqlite thread. When
the rows already carry their ids the ORM sends one executemany per table.

This is safe because the writer's transaction began with BEGIN IMMEDIATE: it
holds SQLite's only write lock, so no other connection or process can insert
between reading max(id) and our INSERT. The ids are the ones SQLite would
pick itself (max(rowid) + 1, the tables do not use AUTOINCREMENT).
PostgreSQL batches with RETURNING already and keeps its sequences.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, Table, event, func, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, UOWTransaction


def install(session: AsyncSession) -> None:
    """Give new rows their ids at each flush of `session` (a no-op on PostgreSQL)."""
    event.listen(session.sync_session, "before_flush", _before_flush)


def _before_flush(session: Session, _ctx: UOWTransaction, _objects: Any) -> None:
    conn = session.connection()
    if conn.dialect.name != "sqlite":
        return
    wanting: dict[Table, list[tuple[object, str]]] = {}
    for obj in session.new:
        mapper = inspect(obj).mapper
        if len(mapper.primary_key) != 1 or not isinstance(mapper.local_table, Table):
            continue
        col = mapper.primary_key[0]
        if not isinstance(col.type, Integer):
            continue
        key = mapper.get_property_by_column(col).key
        if getattr(obj, key) is None:
            wanting.setdefault(mapper.local_table, []).append((obj, key))
    if not wanting:
        return
    # One round trip per flush for all tables, read afresh each time so a row
    # inserted some other way since the last flush cannot collide with ours.
    tables = list(wanting)
    row = conn.execute(select(*(select(func.max(_pk(t))).scalar_subquery() for t in tables))).one()
    for table, top in zip(tables, row, strict=True):
        next_id = (top or 0) + 1
        # session.new is a set; number rows in the order they were added, as SQLite would.
        for obj, key in sorted(wanting[table], key=lambda o: inspect(o[0]).insert_order or 0):
            setattr(obj, key, next_id)
            next_id += 1


def _pk(table: Table) -> Any:
    return next(iter(table.primary_key.columns))

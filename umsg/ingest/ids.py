"""The batch's one id allocator, for the rows the writer writes in bulk and those the ORM adds.

The batch's first read (`preread`) draws enough ids for every row the batch can create in the
tables it writes in bulk (`ID_TABLES`): on PostgreSQL from the tables' sequences, on SQLite as
the ids after each table's highest one. `persist` takes its rows' ids from here (`take`); the
rows route actions and effects add through the ORM take theirs from the same allocator at each
flush (`install`): first what the bulk rows left of the drawn ids, then, for other tables, the
ids after the highest one stored, read once per table and counted on from there.

On SQLite the ORM needs the ids up front: it cannot batch an INSERT ... RETURNING (the order of
the returned rows is not guaranteed), so without ids every new row would be its own statement,
each a hop to the aiosqlite thread. This is safe because the writer's transaction began with
BEGIN IMMEDIATE: it holds SQLite's only write lock, so nothing else inserts between the read
and our INSERTs, and the ids are the ones SQLite would pick itself (max(rowid) + 1; the tables do
not use AUTOINCREMENT). PostgreSQL's ORM rows keep their sequences (RETURNING batches there).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Integer, Table, event, func, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, UOWTransaction


class IdAllocator:
    """Ids for one batch's new rows; see the module docstring."""

    def __init__(self, drawn: Mapping[Table, Sequence[int]]) -> None:
        self._pools: dict[Table, Iterator[int]] = {t: iter(sorted(ids)) for t, ids in drawn.items()}
        # Past the drawn ids: a drawn id handed out in this very flush is not stored yet, so the
        # count goes on after the highest drawn id, or after the highest stored one if higher.
        self._after: dict[Table, int] = {t: max(ids) + 1 for t, ids in drawn.items() if ids}
        self._next: dict[Table, int] = {}  # SQLite, ORM rows past the drawn ids: the next free id

    def take(self, table: Table) -> int:
        """The next drawn id of `table` (for the rows written in bulk: drawn for every one)."""
        return next(self._pools[table])

    def install(self, session: AsyncSession) -> None:
        """Give the ORM's new rows their ids at each flush of `session` (a no-op on PostgreSQL)."""
        event.listen(session.sync_session, "before_flush", self._before_flush)

    def _before_flush(self, session: Session, _ctx: UOWTransaction, _objects: Any) -> None:
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
        ordered = {t: sorted(objs, key=lambda o: inspect(o[0]).insert_order or 0) for t, objs in wanting.items()}
        # session.new is a set; rows are numbered in the order they were added, as SQLite would.
        rest: dict[Table, list[tuple[object, str]]] = {}
        for table, objs in ordered.items():
            pool = self._pools.get(table)
            for n, (obj, key) in enumerate(objs):
                drawn = next(pool, None) if pool is not None else None
                if drawn is None:  # none drawn, or the bulk rows and earlier flushes used them all
                    rest[table] = objs[n:]
                    break
                setattr(obj, key, drawn)
        unknown = [t for t in rest if t not in self._next]
        if unknown:  # one round trip for the tables this batch had not yet counted ids in
            row = conn.execute(select(*(select(func.max(_pk(t))).scalar_subquery() for t in unknown))).one()
            for table, top in zip(unknown, row, strict=True):
                self._next[table] = max((top or 0) + 1, self._after.get(table, 0))
        for table, objs in rest.items():
            for obj, key in objs:
                setattr(obj, key, self._next[table])
                self._next[table] += 1


def _pk(table: Table) -> Any:
    return next(iter(table.primary_key.columns))

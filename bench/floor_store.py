"""The least a durable store can do, as a floor for the channel benchmarks' goals.

`MinimalStore` keeps each message as one SQLite row (the raw bytes in the row, a unique
dedupe key) and answers a caller only after the transaction holding its row committed with
`synchronous=FULL` in WAL mode, group-committing whatever arrived meanwhile, on one writer
thread. No contacts, threading, parts, events, queue or routing: if even this cannot reach a
benchmark's goal, nothing that stores before acknowledging can, on that machine.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from umsg.model import Inbound, IngestResult

Row = tuple[str, str, bytes, str]


class MinimalStore:
    """One-table, group-committed durable writer; `await store(inbound)` returns after commit."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS message (id INTEGER PRIMARY KEY, sender TEXT, "
                         "text TEXT, raw BLOB, dedupe TEXT UNIQUE)")
        self._pending: list[tuple[Row, asyncio.Future[int]]] = []
        self._writing = False

    def _write(self, rows: list[Row]) -> list[int]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            ids = [self._db.execute("INSERT INTO message (sender, text, raw, dedupe) VALUES (?, ?, ?, ?) "
                                    "ON CONFLICT (dedupe) DO UPDATE SET dedupe = excluded.dedupe RETURNING id",
                                    row).fetchone()[0] for row in rows]
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return ids

    async def store(self, row: Row) -> int:
        """The row's id, once the transaction that wrote it committed."""
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((row, done))
        if not self._writing:
            self._writing = True
            try:
                while self._pending:
                    batch, self._pending = self._pending, []
                    try:
                        ids = await asyncio.to_thread(self._write, [r for r, _ in batch])
                    except Exception as exc:  # noqa: BLE001 - every waiter of the batch hears it
                        for _, fut in batch:
                            fut.set_exception(exc)
                    else:
                        for (_, fut), row_id in zip(batch, ids, strict=True):
                            fut.set_result(row_id)
            finally:
                self._writing = False
        return await done

    async def ingest(self, inbound: Inbound) -> IngestResult:
        """A drop-in for `core.ingest.ingest` that stores the bare minimum."""
        row_id = await self.store((inbound.sender.value, inbound.text or "", inbound.raw, inbound.dedupe_key))
        return IngestResult(message_id=row_id, conversation_id=0, contact_id=0, duplicate=False)

    def close(self) -> None:
        self._db.close()

"""Who holds the router role for a shard.

On PostgreSQL the role is a session-level advisory lock taken with
`pg_try_advisory_lock` on a connection kept open (in autocommit, so it never
sits idle in a transaction) for as long as this process leads. If the process
dies, PostgreSQL ends the session and frees the lock; a follower polling every
`leader_poll_seconds` takes over. The leader checks its connection before each
round of decisions, so a leader cut off from the database stops deciding.

SQLite is single-process: the role is simply held.
"""

from __future__ import annotations

import hashlib
import logging

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)


def lock_key(schema: str | None, shard: int) -> int:
    """A signed 64-bit key per (schema, shard): test schemas in one database do not collide."""
    digest = hashlib.sha256(f"umsg-router:{schema or ''}:{shard}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Leadership:
    def __init__(self, engine: AsyncEngine, schema: str | None, shard: int) -> None:
        self._engine = engine
        self._key = lock_key(schema, shard)
        self._conn: AsyncConnection | None = None
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    @property
    def _is_pg(self) -> bool:
        return self._engine.dialect.name == "postgresql"

    async def try_acquire(self) -> bool:
        if self._held:
            return True
        if not self._is_pg:
            self._held = True
            return True
        try:
            if self._conn is None:
                conn = await self._engine.connect()
                self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            got = await self._conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key})
        except (OperationalError, InterfaceError, DBAPIError, OSError):
            log.warning("router leadership check failed; will retry", exc_info=True)
            await self.close()
            return False
        self._held = bool(got)
        return self._held

    async def alive(self) -> bool:
        """True while the lock's connection answers (always on SQLite)."""
        if not self._held:
            return False
        if self._conn is None:
            return True
        try:
            await self._conn.scalar(text("SELECT 1"))
        except (OperationalError, InterfaceError, DBAPIError, OSError):
            log.warning("router lock connection lost; giving up the router role", exc_info=True)
            await self.close()
            return False
        return True

    async def close(self) -> None:
        """Drop the lock (closing its session frees it on PostgreSQL)."""
        self._held = False
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.invalidate()  # the session ends, so the advisory lock ends with it
                await conn.close()
            except Exception:  # noqa: BLE001 - closing a dead connection must not raise
                log.debug("closing the router lock connection failed", exc_info=True)

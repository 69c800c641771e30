"""Engine and session setup for the two supported databases.

SQLite (the embedded default) runs in WAL mode with full fsync so that an
acknowledged commit survives a crash; PostgreSQL is used through asyncpg and
may be confined to one schema (tests give each run its own).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

log = logging.getLogger(__name__)

SessionFactory = async_sessionmaker[AsyncSession]
READ_ONLY_OPTION = "umsg_read_only"
# A connection that sends its own BEGIN IMMEDIATE (`begin_immediate`) on SQLite.
OWN_BEGIN_OPTION = "umsg_own_begin"


def normalise_url(url: str) -> str:
    """Accept plain `sqlite:///` and `postgresql://` URLs and pick the async drivers."""
    u = make_url(url)
    if u.drivername in ("sqlite", "sqlite+pysqlite"):
        u = u.set(drivername="sqlite+aiosqlite")
    elif u.drivername in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"):
        u = u.set(drivername="postgresql+asyncpg")
    return u.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, schema: str | None = None, pool_size: int = 10) -> AsyncEngine:
    """Create the async engine with the durability settings each backend needs."""
    url = normalise_url(url)
    kwargs: dict[str, Any] = {}
    if is_sqlite(url):
        # One writer at a time is SQLite's model; wait for the lock rather than fail.
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_size"] = pool_size
        kwargs["max_overflow"] = pool_size
        kwargs["pool_pre_ping"] = True
        if schema:
            kwargs["connect_args"] = {"server_settings": {"search_path": schema}}
    engine = create_async_engine(url, **kwargs)
    if is_sqlite(url):
        _install_sqlite_pragmas(engine)
    return engine


def _install_sqlite_pragmas(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the driver: its implicit, deferred
        # BEGIN breaks SAVEPOINT and lets a read-then-write transaction fail with
        # SQLITE_BUSY instead of waiting for the lock.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front (waiting up to busy_timeout),
        # so concurrent writers queue instead of failing on lock upgrade.
        # Sessions from `read_session_factory` only read and need no lock.
        options = conn.get_execution_options()
        if options.get(OWN_BEGIN_OPTION, False):
            return
        conn.exec_driver_sql("BEGIN" if options.get(READ_ONLY_OPTION, False) else "BEGIN IMMEDIATE")


def session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, expire_on_commit=False)


def read_session_factory(engine: AsyncEngine) -> SessionFactory:
    """Sessions for queries that never write: on SQLite they take no write lock."""
    return async_sessionmaker(engine.execution_options(**{READ_ONLY_OPTION: True}), expire_on_commit=False)


def read_sessions_for(sessions: SessionFactory) -> SessionFactory:
    """Read-only sessions on the engine `sessions` writes to (themselves if it names none)."""
    bind = sessions.kw.get("bind")
    return read_session_factory(bind) if isinstance(bind, AsyncEngine) else sessions


async def writer_connection(engine: AsyncEngine) -> AsyncConnection:
    """A connection for a long-lived writer: start each transaction with `begin_immediate`.

    Holding it saves the pool checkout and the reset on return (a ROLLBACK, or on
    PostgreSQL also the pre-ping) on every transaction.
    """
    conn = await engine.connect()
    return await conn.execution_options(**{OWN_BEGIN_OPTION: True})


class HeldConnection:
    """A batch writer's connection, kept across its transactions and replaced when it breaks.

    Holding it saves each transaction the pool's checkout and reset (see `writer_connection`).
    """

    def __init__(self, sessions: SessionFactory, what: str) -> None:
        self._sessions = sessions
        self._what = what
        self._conn: AsyncConnection | None = None

    async def get(self) -> AsyncConnection:
        if self._conn is None:
            engine = self._sessions.kw.get("bind")
            if not isinstance(engine, AsyncEngine):
                raise TypeError(f"{self._what} needs sessions bound to an AsyncEngine")
            self._conn = await writer_connection(engine)
        return self._conn

    async def drop(self, *, only_if_broken: bool = False) -> None:
        """Close the connection (with `only_if_broken`, only when the driver invalidated it)."""
        conn = self._conn
        if conn is None or (only_if_broken and not conn.invalidated):
            return
        self._conn = None
        try:
            await conn.close()
        except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is gone either way
            log.debug("closing the %s connection failed", self._what, exc_info=True)


async def begin_immediate(conn: AsyncConnection) -> None:
    """Take SQLite's write lock for the transaction `conn.begin()` just opened (no-op elsewhere).

    Sent straight to the driver: through SQLAlchemy's `exec_driver_sql` the
    statement costs three hops to aiosqlite's thread (cursor, execute, close),
    each a wait for that thread and back on a busy event loop; this is one.
    """
    if conn.dialect.name != "sqlite":
        return
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    await driver.execute("BEGIN IMMEDIATE")

"""The event log: an outbox of changes, written in the same transaction as the change.

Anything that changes state the agents can see (a message arrived, an item was
claimed, a contact merged) adds an `Event` row inside its own transaction, so
an event exists exactly when its change committed. Readers (the websocket
feed, other processes) page through the log by id with `since`. Within one
process, `notify()` after a commit wakes `wait()`ers immediately; other
processes see the rows on their next poll. Live consumers in a process share one reader
through `subscribe` (see `umsg.events.fanout`) instead of each paging the log.
"""

from __future__ import annotations

import asyncio
import enum
import re
from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import aliased

from storage.db import SessionFactory, read_session_factory
from storage.models import Event
from storage.types import utcnow
from umsg.events.fanout import EventFanout, Subscription

# The kinds the core writes (see docs/CONTRACTS.md); other components may add their own.
KINDS = frozenset(
    {
        "message.created",
        "conversation.created",
        "conversation.updated",
        "queue.enqueued",
        "queue.claimed",
        "queue.completed",
        "queue.released",
        "queue.dead",
        "contact.merged",
        "contact.unmerged",
        "message.status",
        "agent.state",
        "message.dropped",
        "routes.updated",
        "router.offered",
        "router.accepted",
        "router.declined",
        "router.timed_out",
        "router.agent",
    }
)

# How long a missing event id may be a transaction still committing (see `_horizon`).
GAP_GRACE = timedelta(seconds=10)

_KIND_RE = re.compile(r"[a-z][a-z_]*(\.[a-z][a-z_]*)+")


class WaitOutcome(enum.Enum):
    """Why `EventLog.wait` returned."""

    NOTIFIED = "notified"
    TIMED_OUT = "timed_out"


def add_event(
    session: AsyncSession, project_id: int | None, kind: str, payload: Mapping[str, Any] | None = None
) -> Event:
    """Add an outbox row to `session`'s transaction (for code that has no `EventLog` at hand).

    Nothing is flushed: the row is written when the caller commits, together
    with the change it reports.
    """
    if not _KIND_RE.fullmatch(kind):
        # A malformed kind would silently starve every subscriber; fail at the source.
        raise ValueError(f"event kind must look like 'noun.verb', got {kind!r}")
    ev = Event(project_id=project_id, kind=kind, payload=dict(payload or {}))
    session.add(ev)
    return ev


def readers_for(sessions: SessionFactory) -> SessionFactory:
    """Sessions for queries that only read, bound to the same engine as `sessions`.

    On SQLite every writing transaction takes the write lock up front; reads
    through these sessions do not, so polling the log never blocks ingest.
    """
    bind = sessions.kw.get("bind")
    return read_session_factory(bind) if isinstance(bind, AsyncEngine) else sessions


class EventLog:
    """Writes outbox rows, reads them back by id, and wakes in-process waiters."""

    def __init__(
        self,
        sessions: SessionFactory,
        readers: SessionFactory | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self._readers = readers or readers_for(sessions)
        self._clock = clock
        # Created on first use so that constructing an EventLog needs no running loop.
        self._changed: asyncio.Event | None = None
        self._fanout: EventFanout | None = None

    async def subscribe(self, after: int, project_ids: Collection[int] | None = None) -> Subscription:
        """A live cursor over events with id > `after`, served by this process's one reader.

        `project_ids` filters as in `since`. Close it (`aclose()` or `async with`) when done:
        the last subscriber to leave stops the reader.
        """
        if self._fanout is None:
            self._fanout = EventFanout(self)
        return await self._fanout.join(after, project_ids)

    def add(
        self,
        session: AsyncSession,
        project_id: int | None,
        kind: str,
        payload: Mapping[str, Any] | None = None,
    ) -> Event:
        """Add an event inside the caller's transaction; call `notify()` after the commit."""
        return add_event(session, project_id, kind, payload)

    async def since(
        self, after_id: int = 0, project_ids: Collection[int] | None = None, limit: int = 100
    ) -> list[Event]:
        """Events with id > `after_id`, oldest first; `project_ids=None` means every project.

        Events without a project (system-wide ones) are included only when no
        project filter is given: a project-scoped reader must not see them. On
        PostgreSQL, events above an id that may still be committing are held
        back until it settles (see `_horizon`), so a cursor never skips one.
        """
        stmt = select(Event).where(Event.id > after_id).order_by(Event.id).limit(max(0, limit))
        if project_ids is not None:
            ids = list(project_ids)
            if not ids:
                return []
            stmt = stmt.where(Event.project_id.in_(ids))
        async with self._readers() as s:
            events = list((await s.scalars(stmt)).all())
            if events and s.get_bind().dialect.name == "postgresql":
                horizon = await self._horizon(s, after_id, events[-1].id)
                if horizon is not None:
                    events = [e for e in events if e.id <= horizon]
        return events

    async def _horizon(self, s: AsyncSession, after_id: int, upto: int) -> int | None:
        """The last id a reader may safely move its cursor to, or None when all is settled.

        PostgreSQL hands out ids at insert but shows rows at commit, so a later
        transaction can become visible before an earlier one. A missing id just
        below a recent event may still be committing: stopping before it keeps
        a reader's cursor from skipping it for good. A gap below an event older
        than GAP_GRACE is a rolled-back transaction and is ignored. (SQLite
        serialises writers, so its ids become visible in order.)
        """
        below = aliased(Event)
        first_after_gap = await s.scalar(
            select(func.min(Event.id)).where(
                Event.id > after_id + 1,
                Event.id <= upto,
                Event.created_at > self._clock() - GAP_GRACE,
                ~exists().where(below.id == Event.id - 1),
            )
        )
        return None if first_after_gap is None else int(first_after_gap) - 1

    async def latest_id(self) -> int:
        """The id of the newest event, 0 when the log is empty."""
        async with self._readers() as s:
            return int(await s.scalar(select(func.coalesce(func.max(Event.id), 0))) or 0)

    def notify(self) -> None:
        """Wake every current `wait()`er; call after committing a transaction that added events."""
        if self._changed is not None:
            self._changed.set()
            # Waiters keep a reference to the old (now set) event; later waiters get a fresh one.
            self._changed = None

    async def wait(self, timeout: float) -> WaitOutcome:  # noqa: ASYNC109 - the contract names it
        """Wait up to `timeout` seconds for the next `notify()`.

        Callers re-read with `since(last_seen_id)` after either outcome: a
        notify that happened before this call is not replayed, and other
        processes never notify this one.
        """
        if self._changed is None:
            self._changed = asyncio.Event()
        changed = self._changed
        try:
            async with asyncio.timeout(timeout):
                await changed.wait()
        except TimeoutError:
            return WaitOutcome.TIMED_OUT
        return WaitOutcome.NOTIFIED

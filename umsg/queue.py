"""The universal queue: durable work items waiting for an agent, with leases.

Every conversation that needs a human becomes a `QueueItem` (waiting). A
claimer (the router, a worker) takes the best waiting item (highest priority,
then oldest) under a lease: `lease_owner` + `lease_until`. The holder then
completes, releases or fails it, or renews the lease; a lease that runs out is
returned to waiting by `recover_expired`, keeping the item's original age.

Several processes may claim from one store at once. On PostgreSQL a claim
locks its row with `FOR UPDATE SKIP LOCKED`; on SQLite it is a compare-and-swap
UPDATE (`WHERE id=? AND status='waiting'`) retried when another claimer won.
Every other transition is a compare-and-swap on the state it read, so two
processes can never both believe they changed an item. Each transition adds
an event in the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import datetime, timedelta
from typing import Any, TypedDict, TypeVar, cast

from sqlalchemy import CursorResult, Select, func, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from storage.db import SessionFactory
from storage.models import QueueItem
from storage.states import QueueItemStatus
from storage.types import utcnow
from umsg.config import QueueSettings
from umsg.errors import Conflict, NotFound, TransientError
from umsg.events.log import EventLog, readers_for

log = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], datetime]

# How often an operation is retried after losing a compare-and-swap race.
_MAX_ROUNDS = 200
# SQLite already waited busy_timeout before saying "locked"; retry only briefly.
_MAX_BUSY = 2
# SQLite claimers try a few candidates per round so that losing the race for
# the best item usually means taking the next one, not starting over.
_CLAIM_CANDIDATES = 8


class QueueStats(TypedDict):
    waiting: int
    leased: int
    done: int
    dead: int
    oldest_waiting_seconds: float | None


# What a transition does: new column values, the event kind (None: no event), extra payload.
_Decision = tuple[dict[str, Any], str | None, dict[str, Any]]
_Decide = Callable[[QueueItem, datetime], _Decision]


class _Lost(Exception):
    """A compare-and-swap found the row changed under it; the operation is retried."""


def _rowcount(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


def _is_busy(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return "locked" in text or "busy" in text


def _payload(item: QueueItem, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "item_id": item.id,
        "conversation_id": item.conversation_id,
        "message_id": item.message_id,
        "queue": item.queue,
        "channel": item.channel,
        "priority": item.priority,
        "status": item.status,
        "attempts": item.attempts,
    }
    data.update(extra)
    return data


class Queue:
    """Durable, prioritised, leased work items shared by every process on one store."""

    def __init__(
        self,
        sessions: SessionFactory,
        events: EventLog,
        settings: QueueSettings,
        *,
        readers: SessionFactory | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self._sessions = sessions
        self._readers = readers or readers_for(sessions)
        self._events = events
        self._settings = settings
        self._clock = clock

    # -- writing inside the caller's transaction ---------------------------------------------

    def enqueue(
        self,
        session: AsyncSession,
        *,
        project_id: int,
        conversation_id: int,
        message_id: int | None,
        queue: str = "default",
        channel: str,
        priority: int = 0,
        skills: Mapping[str, int] | None = None,
        sla_due_at: datetime | None = None,
        route: str | None = None,
        now: datetime | None = None,
    ) -> QueueItem:
        """Add a waiting item (and its `queue.enqueued` event) to the caller's transaction.

        The item's id exists after the caller flushes; the event names the
        conversation and message, which the caller already knows.
        """
        now = now or self._clock()
        facts = dict(conversation_id=conversation_id, message_id=message_id, queue=queue, channel=channel,
                     priority=priority, route=route)
        item = QueueItem(project_id=project_id, skills=dict(skills or {}), status=QueueItemStatus.WAITING,
                         enqueued_at=now, sla_due_at=sla_due_at, attempts=0, updated_at=now, **facts)
        session.add(item)
        self._events.add(session, project_id, "queue.enqueued", facts)
        return item

    # -- claiming ---------------------------------------------------------------------------

    async def claim(
        self,
        owner: str,
        *,
        project_ids: Collection[int] | None = None,
        queue: str | Collection[str] | None = None,
        lease_seconds: float | None = None,
        now: datetime | None = None,
    ) -> QueueItem | None:
        """Lease the best waiting item (highest priority, then oldest) to `owner`; None when empty."""
        if project_ids is not None and not project_ids:
            return None
        ready = self._ready(project_ids, queue)

        async def op(s: AsyncSession) -> QueueItem | None:
            t = now or self._clock()
            until = t + self._lease(lease_seconds)
            if s.get_bind().dialect.name == "postgresql":
                item = await s.scalar(ready.limit(1).with_for_update(skip_locked=True))
                if item is None:
                    return None
                item.status, item.lease_owner = QueueItemStatus.LEASED, owner
                item.lease_until, item.updated_at = until, t
            else:
                ids = list(
                    (await s.scalars(ready.with_only_columns(QueueItem.id).limit(_CLAIM_CANDIDATES))).all()
                )
                if not ids:
                    return None
                item = await self._cas_claim(s, ids, owner, until, t)
            self._events.add(s, item.project_id, "queue.claimed", _payload(item, owner=owner))
            await s.commit()
            self._events.notify()
            return item

        return await self._run(op)

    async def claim_item(
        self, item_id: int, owner: str, *, lease_seconds: float | None = None, now: datetime | None = None
    ) -> QueueItem:
        """Lease one particular waiting item (the router's offer); Conflict if it is not waiting."""

        async def op(s: AsyncSession) -> QueueItem:
            t = now or self._clock()
            item = await self._load(s, item_id)
            if item.status != QueueItemStatus.WAITING:
                raise Conflict(f"queue item {item_id} is {item.status}, not waiting")
            until = t + self._lease(lease_seconds)
            await self._cas(s, item, status=QueueItemStatus.LEASED, lease_owner=owner, lease_until=until, updated_at=t)
            self._events.add(s, item.project_id, "queue.claimed", _payload(item, owner=owner))
            await s.commit()
            self._events.notify()
            return item

        return await self._run(op)

    async def _cas_claim(
        self, s: AsyncSession, ids: list[int], owner: str, until: datetime, now: datetime
    ) -> QueueItem:
        for item_id in ids:
            res = await s.execute(
                update(QueueItem)
                .where(QueueItem.id == item_id, QueueItem.status == QueueItemStatus.WAITING)
                .values(status=QueueItemStatus.LEASED, lease_owner=owner, lease_until=until, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            if _rowcount(res) == 1:
                item = await s.get(QueueItem, item_id)
                assert item is not None  # we hold SQLite's write lock; the row cannot vanish
                return item
        await s.rollback()
        raise _Lost()

    # -- transitions of a leased item ---------------------------------------------------------

    async def complete(self, item_id: int, owner: str, *, now: datetime | None = None) -> QueueItem:
        """The work is done: the item leaves the queue."""
        done: _Decision = ({"status": QueueItemStatus.DONE, "lease_until": None}, "queue.completed", {})
        return await self._held(item_id, owner, now, lambda item, t: done)

    async def release(self, item_id: int, owner: str, *, now: datetime | None = None) -> QueueItem:
        """Give the item back untouched (declined offer): it waits again with its original age."""
        back: _Decision = ({"status": QueueItemStatus.WAITING, "lease_owner": None, "lease_until": None},
                           "queue.released", {"reason": "released", "owner": owner})
        return await self._held(item_id, owner, now, lambda item, t: back)

    async def fail(
        self, item_id: int, owner: str, reason: str, permanent: bool = False, *, now: datetime | None = None
    ) -> QueueItem:
        """Record a failed attempt; dead-letter after `max_attempts` or at once when permanent."""

        def decide(item: QueueItem, t: datetime) -> _Decision:
            attempts = item.attempts + 1
            values: dict[str, Any] = {"attempts": attempts, "last_error": reason, "lease_until": None}
            if permanent or attempts >= self._settings.max_attempts:
                values["status"] = QueueItemStatus.DEAD
                why = "permanent failure" if permanent else f"failed {attempts} times"
                return values, "queue.dead", {"reason": reason, "why": why, "owner": owner}
            values.update(status=QueueItemStatus.WAITING, lease_owner=None)
            return values, "queue.released", {"reason": reason, "owner": owner}

        return await self._held(item_id, owner, now, decide)

    async def renew(
        self, item_id: int, owner: str, *, lease_seconds: float | None = None, now: datetime | None = None
    ) -> QueueItem:
        """Extend the holder's lease from now (not a state change, so no event)."""
        lease = self._lease(lease_seconds)
        return await self._held(item_id, owner, now, lambda item, t: ({"lease_until": t + lease}, None, {}))

    async def _held(
        self, item_id: int, owner: str, now: datetime | None, decide: _Decide
    ) -> QueueItem:
        async def op(s: AsyncSession) -> QueueItem:
            t = now or self._clock()
            item = await self._load(s, item_id)
            if item.status != QueueItemStatus.LEASED:
                raise Conflict(f"queue item {item_id} is {item.status}, not leased")
            if item.lease_owner != owner:
                raise Conflict(f"queue item {item_id} is leased by {item.lease_owner!r}, not {owner!r}")
            values, kind, extra = decide(item, t)
            await self._cas(s, item, updated_at=t, **values)
            if kind:
                self._events.add(s, item.project_id, kind, _payload(item, **extra))
            await s.commit()
            if kind:
                self._events.notify()
            return item

        return await self._run(op)

    async def _cas(self, s: AsyncSession, item: QueueItem, **values: Any) -> None:
        """Apply `values` only if the row still has the status, owner and attempts we read."""
        owner = item.lease_owner
        res = await s.execute(
            update(QueueItem)
            .where(
                QueueItem.id == item.id,
                QueueItem.status == item.status,
                QueueItem.attempts == item.attempts,
                QueueItem.lease_owner.is_(None) if owner is None else QueueItem.lease_owner == owner,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if _rowcount(res) != 1:
            await s.rollback()
            raise _Lost()
        for key, value in values.items():
            # Keep the returned object truthful without queueing a second write for commit.
            set_committed_value(item, key, value)

    # -- housekeeping -------------------------------------------------------------------------

    async def recover_expired(self, *, now: datetime | None = None, limit: int = 500) -> int:
        """Return items whose lease ran out to waiting; each counts as an attempt.

        A lapsed lease means the holder vanished (crash, closed browser) or an
        offer timed out. That is not the item's fault, so it is never
        dead-lettered here, and it keeps its original `enqueued_at` so it does
        not lose its place in line.
        """

        async def op(s: AsyncSession) -> int:
            t = now or self._clock()
            leased = (QueueItem.status == QueueItemStatus.LEASED, QueueItem.lease_until < t)
            expired = select(QueueItem.id, QueueItem.lease_owner).where(*leased)
            expired = expired.order_by(QueueItem.lease_until)
            recovered = 0
            for item_id, old_owner in (await s.execute(expired.limit(limit))).all():
                res = await s.execute(
                    update(QueueItem)
                    .where(QueueItem.id == item_id, QueueItem.lease_owner == old_owner, *leased)
                    .values(status=QueueItemStatus.WAITING, lease_owner=None, lease_until=None, updated_at=t,
                            attempts=QueueItem.attempts + 1,
                            last_error=f"lease expired (held by {old_owner})")
                    .execution_options(synchronize_session=False)
                )
                if _rowcount(res) != 1:
                    continue  # renewed or finished meanwhile: the holder is alive
                item = await s.get(QueueItem, item_id, populate_existing=True)
                assert item is not None
                payload = _payload(item, reason="lease expired", owner=old_owner)
                self._events.add(s, item.project_id, "queue.released", payload)
                recovered += 1
            await s.commit()
            if recovered:
                log.info("recovered %d queue item(s) with expired leases", recovered)
                self._events.notify()
            return recovered

        return await self._run(op)

    # -- reading ----------------------------------------------------------------------------

    async def get(self, item_id: int, *, project_ids: Collection[int] | None = None) -> QueueItem:
        """One item; NotFound when it does not exist or is outside `project_ids`."""
        async with self._readers() as s:
            item = await s.get(QueueItem, item_id)
        if item is None or (project_ids is not None and item.project_id not in project_ids):
            raise NotFound(f"queue item {item_id} not found")
        return item

    async def list_items(
        self, project_ids: Collection[int] | None, status: str | None = None, limit: int = 100,
        after_id: int = 0,
    ) -> list[QueueItem]:
        """Items in id order, for paging (`after_id` = last id of the previous page)."""
        stmt = select(QueueItem).where(QueueItem.id > after_id).order_by(QueueItem.id).limit(max(0, limit))
        if project_ids is not None:
            stmt = stmt.where(QueueItem.project_id.in_(list(project_ids)))
        if status is not None:
            stmt = stmt.where(QueueItem.status == status)
        async with self._readers() as s:
            return list((await s.scalars(stmt)).all())

    async def stats(
        self, project_ids: Collection[int] | None = None, *, now: datetime | None = None
    ) -> QueueStats:
        """Item counts by status and the age in seconds of the oldest waiting item."""
        counts = select(QueueItem.status, func.count()).group_by(QueueItem.status)
        oldest = select(func.min(QueueItem.enqueued_at)).where(QueueItem.status == QueueItemStatus.WAITING)
        if project_ids is not None:
            counts = counts.where(QueueItem.project_id.in_(list(project_ids)))
            oldest = oldest.where(QueueItem.project_id.in_(list(project_ids)))
        async with self._readers() as s:
            by_status = {str(st): int(n) for st, n in (await s.execute(counts)).all()}
            first: datetime | None = await s.scalar(oldest)
        age = None if first is None else max(0.0, ((now or self._clock()) - first).total_seconds())
        n = {status: by_status.get(status, 0) for status in QueueItemStatus}
        return QueueStats(waiting=n[QueueItemStatus.WAITING], leased=n[QueueItemStatus.LEASED],
                          done=n[QueueItemStatus.DONE], dead=n[QueueItemStatus.DEAD], oldest_waiting_seconds=age)

    # -- plumbing ---------------------------------------------------------------------------

    def _lease(self, lease_seconds: float | None) -> timedelta:
        seconds = self._settings.lease_seconds if lease_seconds is None else lease_seconds
        if seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        return timedelta(seconds=seconds)

    @staticmethod
    def _ready(project_ids: Collection[int] | None, queue: str | Collection[str] | None) -> Select[QueueItem]:
        stmt = (
            select(QueueItem)
            .where(QueueItem.status == QueueItemStatus.WAITING)
            .order_by(QueueItem.priority.desc(), QueueItem.enqueued_at.asc(), QueueItem.id.asc())
        )
        if project_ids is not None:
            stmt = stmt.where(QueueItem.project_id.in_(list(project_ids)))
        if isinstance(queue, str):
            stmt = stmt.where(QueueItem.queue == queue)
        elif queue is not None:
            stmt = stmt.where(QueueItem.queue.in_(list(queue)))
        return stmt

    @staticmethod
    async def _load(s: AsyncSession, item_id: int) -> QueueItem:
        item = await s.get(QueueItem, item_id)
        if item is None:
            raise NotFound(f"queue item {item_id} not found")
        return item

    async def _run(self, op: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run `op` in a fresh session, again when it lost a race or SQLite was busy."""
        busy = 0
        for _ in range(_MAX_ROUNDS):
            try:
                async with self._sessions() as s:
                    return await op(s)
            except _Lost:
                continue
            except OperationalError as exc:
                busy += 1
                if _is_busy(exc) and busy <= _MAX_BUSY:
                    continue
                raise TransientError(f"queue store unavailable: {exc.orig}") from exc
            except InterfaceError as exc:
                raise TransientError(f"queue store unavailable: {exc.orig}") from exc
        raise TransientError(f"queue operation lost {_MAX_ROUNDS} races in a row; try again")

"""Durable, leased jobs for channels: the core's `job` table, reached as `ChannelServices.jobs`.

A channel whose work outlives `send` (a fax call takes minutes) keeps it as jobs of its own
kind (`fax-send:<instance>`) beside the dispatcher's `deliver` jobs. Several gateways on one
store share them, and the lease is what keeps one job with one of them:

- `submit` commits a pending job, due at `run_after`; with `unique`, at most one job of the
  kind ever has that payload value (a repeated `send` adds none).
- `claim` leases one due job of a kind to `owner`: the row is picked `FOR UPDATE SKIP LOCKED`
  on PostgreSQL (concurrent claimers pass each other's rows by) and under the write lock
  BEGIN IMMEDIATE took on SQLite, then leased in the same transaction. A job whose lease ran
  out (its owner died mid-attempt) is claimable again, `recovered` and with that lost attempt
  counted: `attempts` counts the attempts begun, this one included.
- The owner keeps the lease with `renew` (also the way to save progress) and settles the job
  with `retry` (pending again at `run_after`), `finish` (done) or `fail` (dead). Each of these
  raises `Conflict` when the job is no longer leased to `owner`. A lease that ran out stays
  its owner's until someone claims the job.

Neither the dispatcher claims channel jobs nor this `deliver` jobs (`umsg.outbound.claim`
leases and recovers `deliver` jobs only).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import SessionFactory, read_sessions_for
from storage.models import Job
from storage.states import JobStatus
from storage.types import utcnow
from umsg.errors import Conflict

_JOB = cast(Table, Job.__table__)
DELIVER_KIND = "deliver"  # the dispatcher's jobs, never a channel's


@dataclass(frozen=True)
class ChannelJob:
    """A job leased to `owner` until `lease_until`."""

    id: int
    project_id: int
    kind: str
    payload: Mapping[str, Any]
    attempts: int  # attempts begun, this one included
    max_attempts: int
    owner: str
    lease_until: datetime
    last_error: str | None
    recovered: bool  # this claim took the job from an owner whose lease ran out


def _channel_kind(kind: str) -> None:
    if kind == DELIVER_KIND:
        raise ValueError("`deliver` jobs belong to the dispatcher")


def _lock_key(kind: str, field: str, value: int | str) -> int:
    digest = hashlib.blake2b(f"umsg-job\0{kind}\0{field}\0{value}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class ChannelJobs:
    """Submit, claim and settle channel jobs; see the module docstring."""

    def __init__(self, sessions: SessionFactory, readers: SessionFactory | None = None, *,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self._sessions = sessions
        self._readers = readers or read_sessions_for(sessions)
        self._clock = clock

    async def submit(self, project_id: int, kind: str, payload: Mapping[str, Any], run_after: datetime | None = None,
                     *, max_attempts: int = 8, unique: str | None = None) -> int | None:
        """Add a pending job (committed on return): its id, or None when `unique` names a payload
        field whose value a job of this kind already has (in any state, finished ones too)."""
        _channel_kind(kind)
        async with self._sessions() as s:
            if unique is not None and await self._exists(s, kind, unique, payload[unique]):
                return None
            job_id = await s.scalar(insert(_JOB).values(
                project_id=project_id, kind=kind, payload=dict(payload), status=JobStatus.PENDING, attempts=0,
                max_attempts=max_attempts, run_after=run_after or self._clock(), updated_at=self._clock(),
            ).returning(_JOB.c.id))
            await s.commit()
        assert job_id is not None
        return int(job_id)

    @staticmethod
    async def _exists(s: AsyncSession, kind: str, field: str, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise TypeError(f"a unique payload value is an int or a str, not {type(value).__name__}")
        if s.get_bind().dialect.name == "postgresql":
            # Nothing else makes check-then-insert atomic there (no unique index on a payload
            # field); SQLite's write lock, taken at BEGIN, already does.
            await s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(kind, field, value)})
        path = _JOB.c.payload[field]
        found = await s.scalar(select(_JOB.c.id).where(
            _JOB.c.kind == kind, (path.as_integer() if isinstance(value, int) else path.as_string()) == value,
        ).limit(1))
        return found is not None

    async def claim(self, kind: str, owner: str, lease_seconds: float) -> ChannelJob | None:
        """Lease the oldest due job of `kind` (pending and due, or leased with its lease run out)."""
        _channel_kind(kind)
        now = self._clock()
        claimable = and_(_JOB.c.kind == kind, or_(and_(_JOB.c.status == JobStatus.PENDING, _JOB.c.run_after <= now),
                                                  and_(_JOB.c.status == JobStatus.LEASED, _JOB.c.lease_until < now)))
        # Workers poll, and mostly find nothing: look first without taking SQLite's write lock.
        async with self._readers() as s:
            if await s.scalar(select(_JOB.c.id).where(claimable).limit(1)) is None:
                return None
        async with self._sessions() as s:
            due = await s.execute(
                select(_JOB.c.id, _JOB.c.status, _JOB.c.lease_owner, _JOB.c.last_error)
                .where(claimable)
                .order_by(_JOB.c.run_after, _JOB.c.id)
                .limit(1)
                .with_for_update(skip_locked=True)  # SQLite renders no clause: its write lock is held
            )
            row = due.first()
            if row is None:
                return None
            recovered = row.status == JobStatus.LEASED
            error = f"lease expired (held by {row.lease_owner})" if recovered else row.last_error
            leased = (await s.execute(
                update(_JOB).where(_JOB.c.id == row.id)
                .values(status=JobStatus.LEASED, lease_owner=owner, lease_until=now + timedelta(seconds=lease_seconds),
                        attempts=_JOB.c.attempts + 1, last_error=error, updated_at=now)
                .returning(_JOB.c.project_id, _JOB.c.payload, _JOB.c.attempts, _JOB.c.max_attempts,
                           _JOB.c.lease_until)
            )).one()
            await s.commit()
        return ChannelJob(row.id, leased.project_id, kind, dict(leased.payload or {}), leased.attempts,
                          leased.max_attempts, owner, leased.lease_until, error, recovered)

    async def renew(self, job_id: int, owner: str, lease_seconds: float, *,
                    payload: Mapping[str, Any] | None = None) -> datetime:
        """Extend the lease (and replace the payload when given); the new end of the lease."""
        until = self._clock() + timedelta(seconds=lease_seconds)
        await self._settle(job_id, owner, payload, status=JobStatus.LEASED, lease_until=until)
        return until

    async def retry(self, job_id: int, owner: str, run_after: datetime, error: str, *,
                    payload: Mapping[str, Any] | None = None) -> None:
        """Hand the job back, due again at `run_after`, with the reason this attempt failed."""
        await self._settle(job_id, owner, payload, status=JobStatus.PENDING, run_after=run_after, last_error=error,
                           lease_owner=None, lease_until=None)

    async def finish(self, job_id: int, owner: str, *, payload: Mapping[str, Any] | None = None) -> None:
        """The job is done."""
        await self._settle(job_id, owner, payload, status=JobStatus.DONE, lease_until=None)

    async def fail(self, job_id: int, owner: str, error: str, *, payload: Mapping[str, Any] | None = None) -> None:
        """The job is dead: it will not be tried again, for `error`."""
        await self._settle(job_id, owner, payload, status=JobStatus.DEAD, last_error=error, lease_until=None)

    async def unfinished(self, kind: str) -> int:
        """How many jobs of `kind` are pending or leased."""
        async with self._readers() as s:
            count = await s.scalar(select(func.count()).select_from(_JOB).where(
                _JOB.c.kind == kind, _JOB.c.status.in_((JobStatus.PENDING, JobStatus.LEASED))))
        return int(count or 0)

    async def _settle(self, job_id: int, owner: str, payload: Mapping[str, Any] | None, **values: Any) -> None:
        if payload is not None:
            values["payload"] = dict(payload)
        async with self._sessions() as s:
            held = await s.scalar(
                update(_JOB)
                .where(_JOB.c.id == job_id, _JOB.c.status == JobStatus.LEASED, _JOB.c.lease_owner == owner)
                .values(updated_at=self._clock(), **values)
                .returning(_JOB.c.id)
            )
            await s.commit()
        if held is None:
            raise Conflict(f"job {job_id} is not leased to {owner}")

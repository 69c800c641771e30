"""Claiming delivery jobs: due `deliver` jobs leased to one dispatcher, in one statement.

PostgreSQL: `UPDATE job ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING`,
so concurrent dispatchers skip each other's rows instead of waiting on them. SQLite: the
same UPDATE without the lock clause; the write transaction began with BEGIN IMMEDIATE
and holds the only write lock, so nothing can take a row between the select and the
update. Either way one round trip leases a whole batch; the messages of the batch move
from `queued` to `sending` in the same transaction.

Also here: `recover_expired`, which hands back `deliver` jobs whose dispatcher vanished
mid-send (the channels' jobs in the same table are theirs to take over: umsg/channel_jobs.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Job
from storage.states import JobStatus, MessageStatus
from umsg.outbound.status_changes import StatusChange, set_statuses

_JOB = cast(Table, Job.__table__)


@dataclass(frozen=True)
class Claimed:
    """A job this dispatcher holds the lease of."""

    job_id: int
    project_id: int
    message_id: int | None
    attempts: int = 0  # attempts made before this claim (0: nothing can have reached the peer)
    max_attempts: int = 8


def _message_id(payload: Any) -> int | None:
    value = payload.get("message_id") if isinstance(payload, dict) else None
    return value if isinstance(value, int) else None


async def claim(s: AsyncSession, *, owner: str, now: datetime, lease: timedelta, limit: int) -> list[Claimed]:
    """Lease up to `limit` due deliver jobs to `owner` and mark their messages `sending`.

    The caller commits (and the events for `sending` go in with the claim).
    """
    due = (
        select(_JOB.c.id)
        .where(_JOB.c.status == JobStatus.PENDING, _JOB.c.kind == "deliver", _JOB.c.run_after <= now)
        .order_by(_JOB.c.run_after, _JOB.c.id)
        .limit(limit)
    )
    if s.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    stmt = (
        update(_JOB)
        .where(_JOB.c.id.in_(due.scalar_subquery()), _JOB.c.status == JobStatus.PENDING)
        .values(status=JobStatus.LEASED, lease_owner=owner, lease_until=now + lease, updated_at=now)
        .returning(_JOB.c.id, _JOB.c.project_id, _JOB.c.payload, _JOB.c.attempts, _JOB.c.max_attempts)
    )
    rows = (await s.execute(stmt)).all()
    # RETURNING promises no order; deliver (and log) in the order the jobs were queued.
    claimed = sorted(
        (Claimed(r.id, r.project_id, _message_id(r.payload), r.attempts, r.max_attempts) for r in rows),
        key=lambda c: c.job_id,
    )
    await set_statuses(
        s,
        [StatusChange(c.project_id, c.message_id, MessageStatus.SENDING, None)
         for c in claimed if c.message_id is not None],
        expect=MessageStatus.QUEUED,
    )
    return claimed


async def recover_expired(s: AsyncSession, *, now: datetime, limit: int) -> int:
    """Put jobs whose lease ran out back to pending (or dead after max_attempts); the caller commits.

    The lost attempt counts: the message may or may not have reached the peer, and a job
    that crashes its dispatcher every time must end. Runs every few seconds and finds
    nothing almost always, so the rare rows it does find are updated one by one.
    """
    rows = (
        await s.execute(
            select(_JOB.c.id, _JOB.c.project_id, _JOB.c.payload, _JOB.c.lease_owner, _JOB.c.attempts,
                   _JOB.c.max_attempts)
            # Channels' jobs (umsg.channel_jobs) share the table: their owners recover those.
            .where(_JOB.c.kind == "deliver", _JOB.c.status == JobStatus.LEASED, _JOB.c.lease_until < now)
            .order_by(_JOB.c.lease_until)
            .limit(limit)
        )
    ).all()
    changes: list[StatusChange] = []
    recovered = 0
    for job_id, project_id, payload, old_owner, attempts, max_attempts in rows:
        dead = attempts + 1 >= max_attempts
        reason = f"lease expired (held by {old_owner})"
        taken = await s.execute(
            update(_JOB)
            .where(_JOB.c.id == job_id, _JOB.c.status == JobStatus.LEASED, _JOB.c.lease_owner == old_owner,
                   _JOB.c.lease_until < now)
            .values(status=JobStatus.DEAD if dead else JobStatus.PENDING, attempts=attempts + 1, lease_owner=None,
                    lease_until=None, run_after=now, last_error=reason, updated_at=now)
            .returning(_JOB.c.id)
        )
        if taken.first() is None:
            continue  # settled or re-leased since the read: not ours to recover
        recovered += 1
        message_id = _message_id(payload)
        if message_id is not None:
            detail = f"gave up after {attempts + 1} attempts: {reason}" if dead else f"retrying: {reason}"
            status = MessageStatus.FAILED if dead else MessageStatus.QUEUED
            changes.append(StatusChange(project_id, message_id, status, detail))
    await set_statuses(s, changes)
    return recovered

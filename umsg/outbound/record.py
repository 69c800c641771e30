"""Recording delivery results: the job's next state and the message's, group-committed.

Results that arrive while another batch is being written share the next transaction: a
batch of sends finishing together costs one commit, and inside it one read of the jobs still
leased to us at the attempt we claimed, one executemany settling them, and the same for the
messages (`dispatch_status`), instead of statements per job. If the batch cannot be written,
each result is written on its own so one bad result does not cost the others theirs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import SessionFactory
from storage.models import Job
from storage.states import JobStatus, MessageStatus
from umsg.events.log import EventLog
from umsg.group_commit import GroupCommit
from umsg.model import DeliveryResult, DeliveryStatus
from umsg.outbound.claim import Claimed
from umsg.outbound.status_changes import StatusChange, set_statuses

log = logging.getLogger(__name__)

_JOB = cast(Table, Job.__table__)
# The batch's jobs still leased to us, read under the write lock (see dispatch_status), then each
# settled by one row of an executemany: statements built once, whatever the batch holds.
_HELD = (select(_JOB.c.id, _JOB.c.attempts, _JOB.c.run_after)
         .where(_JOB.c.id.in_(bindparam("ids", expanding=True)), _JOB.c.status == JobStatus.LEASED,
                _JOB.c.lease_owner == bindparam("owner"))
         .with_for_update())
_SETTLE = update(_JOB).where(_JOB.c.id == bindparam("_id")).values(
    status=bindparam("b_status"), attempts=bindparam("b_attempts"), lease_until=None, last_error=bindparam("b_error"),
    updated_at=bindparam("b_now"), lease_owner=bindparam("b_owner"), run_after=bindparam("b_run_after"))
MAX_BACKOFF_SECONDS = 300


def backoff(attempts: int) -> timedelta:
    """Delay before retry number `attempts` (1-based): 2, 4, 8 ... seconds, at most five minutes."""
    return timedelta(seconds=min(2**attempts, MAX_BACKOFF_SECONDS))


@dataclass(frozen=True)
class _Result:
    """A job's delivery result waiting for the next group commit of results."""

    job: Claimed
    result: DeliveryResult
    now: datetime


@dataclass(frozen=True)
class _Plan:
    """What one result does to its job and its message."""

    job_status: str  # done | pending | dead
    error: str | None  # the job's last_error
    run_after: datetime | None  # set when it is retried
    msg_status: str
    detail: str | None
    provider_id: str | None


def _plan(job: Claimed, result: DeliveryResult, now: datetime) -> _Plan:
    attempts = job.attempts + 1
    if result.status in (DeliveryStatus.ACCEPTED, DeliveryStatus.DELIVERED):
        msg_status = MessageStatus.SENT if result.status is DeliveryStatus.ACCEPTED else MessageStatus.DELIVERED
        return _Plan(JobStatus.DONE, None, None, msg_status, result.detail or None, result.provider_id)
    if result.status is DeliveryStatus.TRANSIENT_FAILURE and attempts < job.max_attempts:
        return _Plan(JobStatus.PENDING, result.detail, now + backoff(attempts), MessageStatus.QUEUED,
                     f"retrying after attempt {attempts}: {result.detail}", None)
    transient = result.status is DeliveryStatus.TRANSIENT_FAILURE
    detail = f"gave up after {attempts} attempts: {result.detail}" if transient else result.detail
    return _Plan(JobStatus.DEAD, result.detail, None, MessageStatus.FAILED, detail, None)


class ResultRecorder:
    """Group-commits delivery results for one dispatcher (`owner`)."""

    def __init__(self, sessions: SessionFactory, events: EventLog, owner: str) -> None:
        self._sessions = sessions
        self._events = events
        self._owner = owner
        self._group: GroupCommit[_Result, None] = GroupCommit(self._write, name="delivery results",
                                                              gather=0)

    async def record(self, job: Claimed, result: DeliveryResult, now: datetime) -> None:
        """Record one job's result, committed on return (together with whatever else is waiting)."""
        await self._group.submit(_Result(job, result, now))

    async def _write(self, batch: Sequence[_Result]) -> list[None | Exception]:
        outcomes = await self._commit(batch)
        self._events.notify()
        for item, outcome in zip(batch, outcomes, strict=True):
            if outcome is None:
                log.warning("job %s: lease lost before its result (%s) was recorded",
                            item.job.job_id, item.result.status.value)
            elif log.isEnabledFor(logging.INFO):
                log.info("job %s (message %s): %s%s", item.job.job_id, item.job.message_id, outcome.msg_status,
                         f" ({outcome.detail})" if outcome.detail else "")
        return [None] * len(batch)

    async def _commit(self, batch: Sequence[_Result]) -> list[_Plan | None]:
        """One transaction for `batch`; per item its plan, None if its lease was lost."""
        plans = {item.job.job_id: _plan(item.job, item.result, item.now) for item in batch}
        async with self._sessions() as s:
            taken = await self._update_jobs(s, batch, plans)
            await set_statuses(s, [
                StatusChange(item.job.project_id, item.job.message_id, plan.msg_status, plan.detail,
                             provider_id=plan.provider_id, at=item.now)
                for item in batch
                if item.job.message_id is not None and item.job.job_id in taken
                for plan in (plans[item.job.job_id],)
            ])
            await s.commit()
        return [plans[item.job.job_id] if item.job.job_id in taken else None for item in batch]

    async def _update_jobs(self, s: AsyncSession, batch: Sequence[_Result], plans: dict[int, _Plan]) -> set[int]:
        """Settle the jobs still leased to us at the attempt we claimed; returns their ids."""
        claimed = {item.job.job_id: item for item in batch}  # one job twice: its last result, as `plans`
        held = await s.execute(_HELD, {"ids": list(plans), "owner": self._owner})
        rows = []
        for job_id, attempts, run_after in held:
            if attempts != claimed[job_id].job.attempts:
                continue  # its lease expired and another attempt took it meanwhile
            plan = plans[job_id]
            rows.append({
                "_id": job_id, "b_status": plan.job_status, "b_attempts": attempts + 1, "b_error": plan.error,
                "b_now": claimed[job_id].now,
                # A retried job is free for any dispatcher; a settled one keeps who settled it.
                "b_owner": None if plan.run_after is not None else self._owner,
                "b_run_after": plan.run_after if plan.run_after is not None else run_after})
        if rows:
            await s.execute(_SETTLE, rows)
        return {r["_id"] for r in rows}

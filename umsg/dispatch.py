"""The outbound path, second half: delivering queued messages through channel adapters.

A `Dispatcher` claims due `deliver` jobs under a lease (`FOR UPDATE SKIP
LOCKED` on PostgreSQL, compare-and-swap on SQLite, so several processes can
dispatch from one store), hands each message to the adapter for its channel
and records the `DeliveryResult`: sent/delivered, retried later with
exponential backoff, or failed with the peer's words. A job whose dispatcher
died mid-send is recovered when its lease runs out. One bad job never stops
the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import SessionFactory
from storage.models import Conversation, Job, Message, ThreadRef
from storage.types import utcnow
from umsg.errors import PermanentError, TransientError
from umsg.events import EventLog
from umsg.model import DeliveryResult, DeliveryStatus, Outbound, ThreadHints

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 300
# Thread keys handed to the adapter (email References); the newest matter most.
_MAX_THREAD_REFS = 20


class OutboundAdapter(Protocol):
    """What the dispatcher needs of a channel adapter (channels.base.ChannelAdapter has it)."""

    async def send(self, outbound: Outbound) -> DeliveryResult: ...


@dataclass(frozen=True)
class _Claimed:
    job_id: int
    project_id: int
    message_id: int | None


def _rowcount(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


def backoff(attempts: int) -> timedelta:
    """Delay before retry number `attempts` (1-based): 2, 4, 8 ... seconds, at most five minutes."""
    return timedelta(seconds=min(2**attempts, MAX_BACKOFF_SECONDS))


class Dispatcher:
    """Claims due delivery jobs and hands their messages to the channel adapters."""

    def __init__(
        self,
        sessions: SessionFactory,
        events: EventLog,
        adapters: Mapping[str, OutboundAdapter],
        owner: str,
        *,
        lease_seconds: float = 120.0,
        send_timeout: float = 90.0,
        batch: int = 16,
        idle_seconds: float = 1.0,
        sweep_seconds: float = 10.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if send_timeout >= lease_seconds:
            # Otherwise a slow send outlives its lease and another process sends it again.
            raise ValueError("send_timeout must be shorter than lease_seconds")
        self._sessions = sessions
        self._events = events
        self._owner = owner
        self._lease = timedelta(seconds=lease_seconds)
        self._send_timeout = send_timeout
        self._batch = batch
        self._idle_seconds = idle_seconds
        self._sweep_seconds = sweep_seconds
        self._clock = clock
        self._adapters = self._index(adapters)

    @staticmethod
    def _index(adapters: Mapping[str, OutboundAdapter]) -> dict[str, OutboundAdapter]:
        """Adapters by configured instance name, then by the channel name they stamp, then by type."""
        index = dict(adapters)
        for attr in ("channel", "name"):
            for adapter in adapters.values():
                value = getattr(adapter, attr, None)
                if isinstance(value, str):
                    index.setdefault(value, adapter)
        return index

    # -- the loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until `stop` is set, waiting briefly (or until an event) when idle."""
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()
        while not stop.is_set():
            if loop.time() >= next_sweep:
                try:
                    await self.recover_expired()
                except Exception:
                    log.exception("recovering expired delivery leases failed")
                next_sweep = loop.time() + self._sweep_seconds
            try:
                handled = await self.run_once()
            except Exception:
                log.exception("claiming delivery jobs failed")
                handled = 0
            if handled < self._batch:
                await self._idle(stop)

    async def _idle(self, stop: asyncio.Event) -> None:
        waiters = {
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self._events.wait(self._idle_seconds)),
        }
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def run_once(self, *, now: datetime | None = None) -> int:
        """Claim the due jobs (up to one batch), deliver them concurrently; returns how many."""
        claimed = await self._claim(now or self._clock())
        if claimed:
            await asyncio.gather(*(self._deliver(c, now) for c in claimed))
        return len(claimed)

    # -- claiming ---------------------------------------------------------------------------

    async def _claim(self, now: datetime) -> list[_Claimed]:
        due = (
            select(Job)
            .where(Job.status == "pending", Job.kind == "deliver", Job.run_after <= now)
            .order_by(Job.run_after, Job.id)
            .limit(self._batch)
        )
        leased = {
            "status": "leased",
            "lease_owner": self._owner,
            "lease_until": now + self._lease,
            "updated_at": now,
        }
        claimed: list[_Claimed] = []
        async with self._sessions() as s:
            if s.get_bind().dialect.name == "postgresql":
                for job in (await s.scalars(due.with_for_update(skip_locked=True))).all():
                    for key, value in leased.items():
                        setattr(job, key, value)
                    claimed.append(_Claimed(job.id, job.project_id, job.payload.get("message_id")))
            else:
                rows = (await s.execute(due.with_only_columns(Job.id, Job.project_id, Job.payload))).all()
                for job_id, project_id, payload in rows:
                    res = await s.execute(
                        update(Job)
                        .where(Job.id == job_id, Job.status == "pending")
                        .values(**leased)
                        .execution_options(synchronize_session=False)
                    )
                    if _rowcount(res) == 1:
                        claimed.append(_Claimed(job_id, project_id, payload.get("message_id")))
            for c in claimed:
                if c.message_id is not None:
                    await self._set_message(s, c.project_id, c.message_id, "sending", None, expect="queued")
            await s.commit()
        return claimed

    # -- delivering -------------------------------------------------------------------------

    async def _deliver(self, job: _Claimed, now: datetime | None) -> None:
        try:
            result = await self._send(job)
        except Exception as exc:  # never let one job stop the batch or the loop
            log.exception("delivery of job %s crashed", job.job_id)
            result = DeliveryResult(DeliveryStatus.TRANSIENT_FAILURE, detail=f"{type(exc).__name__}: {exc}")
        try:
            await self._record(job, result, now or self._clock())
        except Exception:
            # The job stays leased; recover_expired retries it once the lease runs out.
            log.exception("recording the delivery result of job %s failed", job.job_id)

    async def _send(self, job: _Claimed) -> DeliveryResult:
        try:
            outbound = await self._outbound(job)
            adapter = self._adapters.get(outbound.channel)
            if adapter is None:
                return DeliveryResult(
                    DeliveryStatus.PERMANENT_FAILURE,
                    detail=f"no channel adapter configured for {outbound.channel!r}",
                )
            async with asyncio.timeout(self._send_timeout):
                return await adapter.send(outbound)
        except TransientError as exc:
            return DeliveryResult(DeliveryStatus.TRANSIENT_FAILURE, detail=str(exc))
        except PermanentError as exc:
            return DeliveryResult(DeliveryStatus.PERMANENT_FAILURE, detail=str(exc))
        except TimeoutError:
            return DeliveryResult(
                DeliveryStatus.TRANSIENT_FAILURE,
                detail=f"the adapter did not answer within {self._send_timeout:g}s",
            )

    async def _outbound(self, job: _Claimed) -> Outbound:
        if job.message_id is None:
            raise PermanentError("deliver job names no message")
        async with self._sessions() as s:
            msg = await s.get(Message, job.message_id)
            if msg is None or msg.direction != "out":
                raise PermanentError(f"message {job.message_id} is not an outgoing message")
            if not msg.to_addrs:
                raise PermanentError(f"message {msg.id} has no recipient")
            conv = await s.get(Conversation, msg.conversation_id)
            refs = (
                await s.scalars(
                    select(ThreadRef.value)
                    .where(ThreadRef.conversation_id == msg.conversation_id)
                    .order_by(ThreadRef.id.desc())
                    .limit(_MAX_THREAD_REFS)
                )
            ).all()
        return Outbound(
            message_id=msg.id,
            channel=msg.channel,
            sender=msg.from_addr,
            recipient=str(msg.to_addrs[0]),
            text=msg.text or "",
            subject=msg.subject,
            html=msg.html,
            thread=ThreadHints(refs=tuple(reversed(refs)), conversation_token=conv.token if conv else None),
            automatic=bool(msg.flags.get("automatic")),
            meta={"conversation_id": msg.conversation_id, "project_id": msg.project_id},
        )

    # -- recording --------------------------------------------------------------------------

    async def _record(self, job: _Claimed, result: DeliveryResult, now: datetime) -> None:
        async with self._sessions() as s:
            row = await s.get(Job, job.job_id)
            if row is None or row.status != "leased" or row.lease_owner != self._owner:
                log.warning(
                    "job %s: lease lost before its result (%s) was recorded", job.job_id, result.status.value
                )
                return
            attempts = row.attempts + 1
            values: dict[str, Any] = {"attempts": attempts, "lease_until": None, "updated_at": now}
            provider_id: str | None = None
            if result.status in (DeliveryStatus.ACCEPTED, DeliveryStatus.DELIVERED):
                values.update(status="done", last_error=None)
                msg_status = "sent" if result.status is DeliveryStatus.ACCEPTED else "delivered"
                detail, provider_id = result.detail or None, result.provider_id
            elif result.status is DeliveryStatus.TRANSIENT_FAILURE and attempts < row.max_attempts:
                values.update(status="pending", lease_owner=None, run_after=now + backoff(attempts))
                values["last_error"] = result.detail
                msg_status, detail = "queued", f"retrying after attempt {attempts}: {result.detail}"
            else:
                values.update(status="dead", last_error=result.detail)
                msg_status = "failed"
                transient = result.status is DeliveryStatus.TRANSIENT_FAILURE
                detail = f"gave up after {attempts} attempts: {result.detail}" if transient else result.detail
            res = await s.execute(
                update(Job)
                .where(Job.id == job.job_id, Job.status == "leased", Job.lease_owner == self._owner)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if _rowcount(res) != 1:
                await s.rollback()
                log.warning("job %s: lease lost while recording its result", job.job_id)
                return
            if job.message_id is not None:
                await self._set_message(
                    s, job.project_id, job.message_id, msg_status, detail, provider_id=provider_id, now=now
                )
            await s.commit()
        self._events.notify()
        log.info(
            "job %s (message %s): %s%s",
            job.job_id,
            job.message_id,
            msg_status,
            f" ({detail})" if detail else "",
        )

    async def _set_message(
        self,
        s: AsyncSession,
        project_id: int,
        message_id: int,
        status: str,
        detail: str | None,
        *,
        provider_id: str | None = None,
        now: datetime | None = None,
        expect: str | None = None,
    ) -> None:
        msg = await s.get(Message, message_id)
        if msg is None or (expect is not None and msg.status != expect):
            return
        msg.status, msg.status_detail = status, detail
        if provider_id:
            msg.provider_id = provider_id
        if status in ("sent", "delivered") and now is not None:
            msg.sent_at = now
        payload: dict[str, Any] = {
            "message_id": msg.id,
            "conversation_id": msg.conversation_id,
            "status": status,
        }
        if detail:
            payload["detail"] = detail
        if provider_id:
            payload["provider_id"] = provider_id
        self._events.add(s, project_id, "message.status", payload)

    # -- housekeeping -----------------------------------------------------------------------

    async def recover_expired(self, *, now: datetime | None = None, limit: int = 500) -> int:
        """Put jobs whose dispatcher vanished mid-send back to pending (or dead after max_attempts).

        The lost attempt counts: the message may or may not have reached the
        peer, and a job that crashes its dispatcher every time must end.
        """
        t = now or self._clock()
        recovered = 0
        async with self._sessions() as s:
            rows = (
                await s.execute(
                    select(
                        Job.id, Job.project_id, Job.payload, Job.lease_owner, Job.attempts, Job.max_attempts
                    )
                    .where(Job.status == "leased", Job.lease_until < t)
                    .order_by(Job.lease_until)
                    .limit(limit)
                )
            ).all()
            for job_id, project_id, payload, old_owner, attempts, max_attempts in rows:
                dead = attempts + 1 >= max_attempts
                reason = f"lease expired (held by {old_owner})"
                res = await s.execute(
                    update(Job)
                    .where(
                        Job.id == job_id,
                        Job.status == "leased",
                        Job.lease_owner == old_owner,
                        Job.lease_until < t,
                    )
                    .values(
                        status="dead" if dead else "pending",
                        attempts=attempts + 1,
                        lease_owner=None,
                        lease_until=None,
                        run_after=t,
                        last_error=reason,
                        updated_at=t,
                    )
                    .execution_options(synchronize_session=False)
                )
                if _rowcount(res) != 1:
                    continue
                recovered += 1
                message_id = payload.get("message_id")
                if message_id is not None:
                    detail = (
                        f"gave up after {attempts + 1} attempts: {reason}" if dead else f"retrying: {reason}"
                    )
                    await self._set_message(s, project_id, message_id, "failed" if dead else "queued", detail)
            await s.commit()
        if recovered:
            log.info("recovered %d delivery job(s) with expired leases", recovered)
            self._events.notify()
        return recovered

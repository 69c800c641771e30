"""The outbound path, second half: delivering queued messages through channel adapters.

A `Dispatcher` claims due `deliver` jobs under a lease (`FOR UPDATE SKIP
LOCKED` on PostgreSQL, a single UPDATE under SQLite's write lock; see
umsg/outbound/claim.py), so several processes can dispatch from one store. It loads
the batch's messages in one read (umsg/outbound/load.py), hands each to the adapter of
the channel instance it names (exactly: the instance name is the channel) and records the
`DeliveryResult` (umsg/outbound/record.py): sent/delivered, retried later with exponential
backoff, or failed with the peer's words. A job whose dispatcher died mid-send is recovered
when its lease runs out. One bad job never stops the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Protocol

from storage.blobs import BlobStore
from storage.db import SessionFactory, read_sessions_for
from storage.types import utcnow
from umsg.errors import PermanentError, TransientError
from umsg.events.log import EventLog
from umsg.model import DeliveryResult, DeliveryStatus, Outbound
from umsg.outbound import claim as dispatch_claim
from umsg.outbound.claim import Claimed
from umsg.outbound.load import Loaded, attach, load_batch
from umsg.outbound.record import MAX_BACKOFF_SECONDS, ResultRecorder, backoff

__all__ = ["MAX_BACKOFF_SECONDS", "Dispatcher", "OutboundAdapter", "backoff"]

log = logging.getLogger(__name__)


class OutboundAdapter(Protocol):
    """What the dispatcher needs of a channel adapter (channels.base.ChannelAdapter has it)."""

    async def send(self, outbound: Outbound) -> DeliveryResult: ...


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
        blobs: BlobStore | None = None,
        readers: SessionFactory | None = None,
    ) -> None:
        if send_timeout >= lease_seconds:
            # Otherwise a slow send outlives its lease and another process sends it again.
            raise ValueError("send_timeout must be shorter than lease_seconds")
        self._sessions = sessions
        # Loading messages only reads: on SQLite a write session would queue for the write lock.
        self._readers = readers or read_sessions_for(sessions)
        self._events = events
        self._owner = owner
        self._lease = timedelta(seconds=lease_seconds)
        self._send_timeout = send_timeout
        self._batch = batch
        self._idle_seconds = idle_seconds
        self._sweep_seconds = sweep_seconds
        self._clock = clock
        self._blobs = blobs
        # By configured instance name, the name messages carry: a message goes to exactly the
        # instance it names, never to another instance of the same type.
        self._adapters = dict(adapters)
        self._recorder = ResultRecorder(sessions, events, owner)

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
            loaded = await self._load(claimed)
            await asyncio.gather(*(self._deliver(c, loaded, now) for c in claimed))
        return len(claimed)

    # -- claiming and loading ---------------------------------------------------------------

    async def _claim(self, now: datetime) -> list[Claimed]:
        async with self._sessions() as s:
            claimed = await dispatch_claim.claim(s, owner=self._owner, now=now, lease=self._lease,
                                                 limit=self._batch)
            await s.commit()
        return claimed

    async def _load(self, claimed: list[Claimed]) -> dict[int, Loaded] | Exception:
        try:
            async with self._readers() as s:
                return await load_batch(s, claimed)
        except Exception as exc:  # the store hiccuped: every job of the batch is retried later
            log.exception("loading %d claimed messages failed", len(claimed))
            return exc

    # -- delivering -------------------------------------------------------------------------

    async def _deliver(self, job: Claimed, loaded: dict[int, Loaded] | Exception, now: datetime | None) -> None:
        try:
            if isinstance(loaded, Exception):
                raise loaded
            result = await self._send(job, loaded.get(job.job_id))
        except Exception as exc:  # never let one job stop the batch or the loop
            log.exception("delivery of job %s crashed", job.job_id)
            result = DeliveryResult(DeliveryStatus.TRANSIENT_FAILURE, detail=f"{type(exc).__name__}: {exc}")
        try:
            await self._recorder.record(job, result, now or self._clock())
        except Exception:
            # The job stays leased; recover_expired retries it once the lease runs out.
            log.exception("recording the delivery result of job %s failed", job.job_id)

    async def _send(self, job: Claimed, loaded: Loaded | None) -> DeliveryResult:
        try:
            if loaded is None:
                raise PermanentError("deliver job names no message")
            outbound = await attach(loaded, self._blobs)
            adapter = self._adapters.get(outbound.channel)
            if adapter is None:
                running = ", ".join(sorted(self._adapters)) or "none"
                return DeliveryResult(
                    DeliveryStatus.PERMANENT_FAILURE,
                    detail=f"no channel instance named {outbound.channel!r} is running (running: {running})",
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

    # -- housekeeping -----------------------------------------------------------------------

    async def recover_expired(self, *, now: datetime | None = None, limit: int = 500) -> int:
        """Put jobs whose dispatcher vanished mid-send back to pending (or dead after max_attempts)."""
        async with self._sessions() as s:
            recovered = await dispatch_claim.recover_expired(s, now=now or self._clock(), limit=limit)
            await s.commit()
        if recovered:
            log.info("recovered %d delivery job(s) with expired leases", recovered)
            self._events.notify()
        return recovered

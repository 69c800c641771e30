"""Durable fax send jobs: accepted quickly, called in the background, retried on a schedule.

A fax takes minutes (ringing, training, pages at 14.4 kbit/s), longer than the dispatcher
waits for `send`. So `submit` stores the rendered TIFF (a blob) and a job row
(`ChannelState`, channel `fax-send:<instance>`, key `send:<message id>`), commits, and only
then does the adapter answer ACCEPTED; the call runs in a task this runner owns. `resume`
(at start) picks up every job a stopped process left, so a restart loses no fax.

Each attempt is one call (`transmit`). Busy, no answer, an unreachable trunk and a transfer
that failed in T.30 are tried again after `retry_seconds[n]` (the last delay repeats) until
`max_attempts`; a refused call (404, 403, auth) fails at once. The final result goes through
`DeliveryReports.record`: delivered or failed, the reason (SpanDSP's completion text or the
SIP outcome) as detail, and pages, bit rate, transport and attempts in `flags["delivery"]`.
The job row is marked finished before the report and removed after it, so a crash in
between re-reports rather than re-sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from channels.fax.settings import FaxSendSettings
from channels.fax.transmit import Transmission
from channels.telephony.call import CallError
from channels.telephony.uac import Busy, DialError, NoAnswer, Unreachable
from storage.models import ChannelState
from umsg.errors import TransientError

if TYPE_CHECKING:
    from umsg.services import ChannelServices

log = logging.getLogger(__name__)

Dial = Callable[[str, Path], Awaitable[Transmission]]
RETRYABLE_DIAL = (Busy, NoAnswer, Unreachable)


def _key(message_id: int) -> str:
    return f"send:{message_id}"


class OutgoingFaxes:
    """The send jobs of one fax adapter instance; see the module docstring."""

    def __init__(self, instance: str, channel: str, services: ChannelServices, send: FaxSendSettings,
                 dial: Dial, *, clock: Callable[[], float] = time.time) -> None:
        self._state_channel = f"fax-send:{instance}"
        self._channel = channel
        self._services = services
        self._send = send
        self._dial = dial
        self._clock = clock
        self._slots = asyncio.Semaphore(send.max_concurrent)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._done: dict[int, asyncio.Future[dict[str, Any]]] = {}

    # -- jobs in ----------------------------------------------------------------------------

    async def submit(self, message_id: int, number: str, tiff: bytes, pages: int) -> bool:
        """Store the job durably and start it; False when the message already has a job."""
        sha = await self._services.blobs.put(tiff)
        async with self._services.sessions() as s:
            found = await s.scalar(select(ChannelState.id).where(
                ChannelState.channel == self._state_channel, ChannelState.key == _key(message_id)))
            if found is not None:
                self._start(message_id)  # a retried send of a job we already hold
                return False
            s.add(ChannelState(channel=self._state_channel, key=_key(message_id), value={
                "number": number, "tiff": sha, "pages": pages, "attempts": 0, "next_at": self._clock(),
                "status": "pending", "history": []}))
            await s.commit()
        self._start(message_id)
        return True

    async def resume(self) -> int:
        """Start every job left by an earlier run; how many."""
        async with self._services.readers() as s:
            keys = list(await s.scalars(select(ChannelState.key).where(
                ChannelState.channel == self._state_channel, ChannelState.key.startswith("send:"))))
        for key in keys:
            self._start(int(key.removeprefix("send:")))
        return len(keys)

    def finished(self, message_id: int) -> asyncio.Future[dict[str, Any]]:
        """Resolves with the job's final result (what went into `flags["delivery"]`)."""
        return self._done.setdefault(message_id, asyncio.get_running_loop().create_future())

    def _start(self, message_id: int) -> None:
        if message_id in self._tasks and not self._tasks[message_id].done():
            return
        self._done.setdefault(message_id, asyncio.get_running_loop().create_future())
        self._tasks[message_id] = asyncio.create_task(self._run(message_id), name=f"fax-send-{message_id}")

    # -- one job ----------------------------------------------------------------------------

    async def _load(self, message_id: int) -> dict[str, Any] | None:
        async with self._services.sessions() as s:
            value = await s.scalar(select(ChannelState.value).where(
                ChannelState.channel == self._state_channel, ChannelState.key == _key(message_id)))
        return dict(value) if value is not None else None

    async def _save(self, message_id: int, job: dict[str, Any]) -> None:
        async with self._services.sessions() as s:
            row = await s.scalar(select(ChannelState).where(
                ChannelState.channel == self._state_channel, ChannelState.key == _key(message_id)))
            if row is not None:
                row.value = dict(job)  # a new dict, so the ORM sees the JSON change
                await s.commit()

    async def _run(self, message_id: int) -> None:
        try:
            job = await self._load(message_id)
            if job is None:
                return
            while job["status"] == "pending":
                delay = float(job["next_at"]) - self._clock()
                if delay > 0:
                    await asyncio.sleep(delay)  # the retry schedule, not synchronisation
                async with self._slots:
                    job = await self._attempt(message_id, job)
                await self._save(message_id, job)
            await self._report(message_id, job)
        except asyncio.CancelledError:
            raise  # stopping: the row stays and the next start resumes it
        except Exception as exc:  # noqa: BLE001 - one job's fault must not end the others
            log.exception("fax job for message %s failed", message_id)
            fut = self._done.get(message_id)
            if fut is not None and not fut.done():
                fut.set_exception(exc)

    async def _attempt(self, message_id: int, job: dict[str, Any]) -> dict[str, Any]:
        """One call; the job with its new state (pending again, or finished with a result)."""
        attempts = int(job["attempts"]) + 1
        path = self._services.blobs.path_for(str(job["tiff"]))
        retry, failing = True, False
        tx: Transmission | None = None
        try:
            tx = await self._dial(str(job["number"]), path)
            word = "ok" if tx.outcome.ok else "fax failed"
            reason = tx.outcome.reason
        except DialError as exc:
            word, reason = exc.outcome, str(exc)
            retry = isinstance(exc, RETRYABLE_DIAL)
            failing = not retry and exc.status in (404, 410, 484, 604)  # the number does not exist
        except (CallError, TransientError, OSError, TimeoutError) as exc:
            word, reason = "error", f"{type(exc).__name__}: {exc}"
        log.info("fax for message %s, attempt %d: %s (%s)", message_id, attempts, word, reason)
        history = [*job.get("history", []), {"at": self._clock(), "outcome": word, "reason": reason}]
        job = {**job, "attempts": attempts, "history": history}
        if tx is not None and tx.outcome.ok:
            return {**job, "status": "finished", "result": self._result(job, "delivered", reason, tx)}
        schedule = self._send.retry_seconds or [0.0]
        if retry and attempts < self._send.max_attempts:
            wait = schedule[min(attempts - 1, len(schedule) - 1)]
            return {**job, "next_at": self._clock() + wait}
        detail = reason if attempts == 1 else f"{reason} (after {attempts} attempts)"
        result = self._result(job, "failed", detail, tx)
        return {**job, "status": "finished", "result": {**result, "mark_failing": failing}}

    @staticmethod
    def _result(job: dict[str, Any], status: str, detail: str, tx: Transmission | None) -> dict[str, Any]:
        extra: dict[str, Any] = {"attempts": job["attempts"], "document_pages": job["pages"],
                                 "document_sha256": job["tiff"], "history": job["history"]}
        if tx is not None:
            out = tx.outcome
            extra.update(pages=out.pages, bit_rate=out.bit_rate, ecm=out.ecm, transport=out.transport,
                         resolution=f"{out.x_dpi}x{out.y_dpi}", remote_id=out.remote_id, t38=tx.t38,
                         g711_fallback=tx.fallback, completion_code=out.completion_code, reason=out.reason,
                         sip_call_id=tx.call_id)
        else:
            extra["pages"] = 0
        return {"status": status, "detail": detail, "extra": extra}

    async def _report(self, message_id: int, job: dict[str, Any]) -> None:
        result = job["result"]
        await self._services.reports.record(
            channel=self._channel, message_id=message_id, status=result["status"], detail=result["detail"],
            extra=result["extra"], mark_recipient_failing=bool(result.get("mark_failing", False)))
        async with self._services.sessions() as s:
            await s.execute(delete(ChannelState).where(
                ChannelState.channel == self._state_channel, ChannelState.key == _key(message_id)))
            await s.commit()
        fut = self._done.get(message_id)
        if fut is not None and not fut.done():
            fut.set_result({"status": result["status"], "detail": result["detail"], **result["extra"]})

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

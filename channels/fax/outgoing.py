"""Durable fax send jobs: accepted quickly, called by one gateway under a lease, retried on a schedule.

A fax takes minutes (ringing, training, pages at 14.4 kbit/s), longer than the dispatcher
waits for `send`. So `submit` stores the rendered TIFF (a blob) and a job of kind
`fax-send:<instance>` in the core's job table (`ChannelServices.jobs`, umsg/channel_jobs.py;
one job per message, so a repeated `send` adds none), committed before the adapter answers
ACCEPTED. A worker (started by `resume`, stopped by `aclose`) claims due jobs and places up to
`max_concurrent` calls at once. Every gateway on the store runs one, and the lease gives each
job to one of them at a time, so two gateways never call one fax twice at once.

The lease is short (`lease_seconds`, default 60 s) and renewed every third of it while the
call runs, rather than longer than a call can take (`max_call_seconds`, 30 minutes): a
gateway that dies mid-call leaves its job to another gateway, or to itself once restarted,
within a minute. A call whose renewal is refused (the job was taken while this gateway
stalled for a whole lease) is hung up, and its result is not reported. The fax of a call
that died is sent again: at least once is all a call cut off half-way allows.

Each attempt is one call (`transmit`). Busy, no answer, an unreachable trunk and a transfer
that failed in T.30 are tried again after `retry_seconds[n]` (the last delay repeats) until
`max_attempts`; a call lost with its gateway counts as an attempt; a refused call (404, 403,
auth) fails at once. The final result goes through `DeliveryReports.record`: delivered or
failed, the reason (SpanDSP's completion text or the SIP outcome) as detail, and pages, bit
rate, transport, attempts and their history in `flags["delivery"]`. The result is saved in
the job (still leased) before the report and the job settled after it, so a crash in between
re-reports rather than re-sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from channels.fax.settings import FaxSendSettings
from channels.fax.transmit import Transmission
from channels.telephony.call import CallError
from channels.telephony.uac import Busy, DialError, NoAnswer, Unreachable
from umsg.errors import Conflict, TransientError

if TYPE_CHECKING:
    from umsg.channel_jobs import ChannelJob
    from umsg.services import ChannelServices

log = logging.getLogger(__name__)

Dial = Callable[[str, Path], Awaitable[Transmission]]
RETRYABLE_DIAL = (Busy, NoAnswer, Unreachable)


@dataclass(frozen=True)
class _Attempt:
    """How one call went."""

    word: str  # ok | fax failed | busy | no answer | ... | error
    reason: str
    tx: Transmission | None
    retry: bool
    failing: bool  # the number does not exist: mark the recipient failing


class OutgoingFaxes:
    """The send jobs of one fax adapter instance; see the module docstring."""

    def __init__(self, instance: str, channel: str, services: ChannelServices, send: FaxSendSettings,
                 dial: Dial, *, clock: Callable[[], float] = time.time, lease_seconds: float = 60.0,
                 poll_seconds: float = 5.0) -> None:
        self.kind = f"fax-send:{instance}"
        # Unique per runner, not per process: a runner never mistakes another's lease for its own.
        self.owner = f"{self.kind}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._channel = channel
        self._services = services
        self._jobs = services.jobs
        self._send = send
        self._dial = dial
        self._clock = clock
        self._lease = lease_seconds
        self._renew_every = lease_seconds / 3
        # Jobs submitted by other gateways, or whose lease ran out elsewhere, are found this often.
        self._poll = poll_seconds
        self._slots = asyncio.Semaphore(send.max_concurrent)
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._done: dict[int, asyncio.Future[dict[str, Any]]] = {}

    # -- jobs in ----------------------------------------------------------------------------

    async def submit(self, message_id: int, number: str, tiff: bytes, pages: int, *, project_id: int) -> bool:
        """Store the job durably (committed on return); False when the message already has one."""
        sha = await self._services.blobs.put(tiff)
        payload = {"message_id": message_id, "number": number, "tiff": sha, "pages": pages, "history": []}
        job_id = await self._jobs.submit(project_id, self.kind, payload, max_attempts=self._send.max_attempts,
                                         unique="message_id")
        self.finished(message_id)
        self._wake.set()
        return job_id is not None

    async def resume(self) -> int:
        """Start the worker; how many unfinished jobs the store holds for this instance (left by
        an earlier run, or another gateway's)."""
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name=f"{self.kind}-worker")
        return await self._jobs.unfinished(self.kind)

    def finished(self, message_id: int) -> asyncio.Future[dict[str, Any]]:
        """Resolves with the job's final result (what went into `flags["delivery"]`) once this
        runner reported it."""
        return self._done.setdefault(message_id, asyncio.get_running_loop().create_future())

    # -- the worker -------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            await self._slots.acquire()  # claim only what can be called now: a lease waits for no slot
            self._wake.clear()
            try:
                job = await self._jobs.claim(self.kind, self.owner, self._lease)
            except Exception:  # noqa: BLE001 - the store hiccuped: try again after a pause
                log.exception("claiming %s jobs failed", self.kind)
                job = None
            if job is None:
                self._slots.release()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll):
                        await self._wake.wait()
                continue
            task = asyncio.create_task(self._run(job), name=f"{self.kind}-job-{job.id}")
            self._calls.add(task)
            task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._calls.discard(task)
        self._slots.release()

    def _wake_in(self, seconds: float) -> None:
        """Claim again once a retried job is due (a little after: the claim compares with the store's time)."""
        def fire() -> None:
            self._timers.discard(handle)
            self._wake.set()

        handle = asyncio.get_running_loop().call_later(seconds + 0.01, fire)
        self._timers.add(handle)

    # -- one job ----------------------------------------------------------------------------

    async def _run(self, job: ChannelJob) -> None:
        message_id = int(job.payload["message_id"])
        try:
            payload = dict(job.payload)
            if "result" not in payload:
                payload = await self._attempt(job, payload)
                if "result" not in payload:
                    return  # tried again later
            await self._report(job, payload)
        except asyncio.CancelledError:
            raise  # stopping: the lease runs out and the job goes to whoever claims it next
        except Conflict as exc:
            log.warning("fax job %s for message %s was taken over by another runner: %s", job.id, message_id, exc)
        except Exception as exc:  # noqa: BLE001 - one job's fault must not end the others
            # The job stays leased; once the lease runs out it is claimed again (an attempt more).
            log.exception("fax job %s for message %s failed", job.id, message_id)
            fut = self._done.get(message_id)
            if fut is not None and not fut.done():
                fut.set_exception(exc)

    async def _attempt(self, job: ChannelJob, payload: dict[str, Any]) -> dict[str, Any]:
        """This claim's call; the payload with its history, and its result when it is final."""
        history = list(payload.get("history", []))
        if job.recovered:  # the previous attempt died with its runner
            history.append({"at": self._clock(), "outcome": "lost", "reason": job.last_error or "lease expired"})
        if job.attempts > job.max_attempts:  # only lost calls get here: the last one used the last attempt
            attempts = job.attempts - 1
            payload = {**payload, "attempts": attempts, "history": history}
            result = self._result(payload, "failed", f"{job.last_error} (after {attempts} attempts)", None)
        else:
            out = await self._call_leased(job, str(payload["number"]), str(payload["tiff"]))
            log.info("fax for message %s, attempt %d: %s (%s)", payload["message_id"], job.attempts, out.word,
                     out.reason)
            history.append({"at": self._clock(), "outcome": out.word, "reason": out.reason})
            payload = {**payload, "attempts": job.attempts, "history": history}
            if out.tx is not None and out.tx.outcome.ok:
                result = self._result(payload, "delivered", out.reason, out.tx)
            elif out.retry and job.attempts < job.max_attempts:
                schedule = self._send.retry_seconds or [0.0]
                wait = schedule[min(job.attempts - 1, len(schedule) - 1)]
                run_after = datetime.fromtimestamp(self._clock() + wait, UTC)
                await self._jobs.retry(job.id, self.owner, run_after, f"{out.word}: {out.reason}", payload=payload)
                self._wake_in(wait)
                return payload
            else:
                detail = out.reason if job.attempts == 1 else f"{out.reason} (after {job.attempts} attempts)"
                result = {**self._result(payload, "failed", detail, out.tx), "mark_failing": out.failing}
        payload = {**payload, "result": result}
        await self._jobs.renew(job.id, self.owner, self._lease, payload=payload)  # durable before the report
        return payload

    async def _call_leased(self, job: ChannelJob, number: str, tiff: str) -> _Attempt:
        """One call, the lease renewed while it runs; a lease lost to another runner hangs up (Conflict)."""
        call = asyncio.ensure_future(self._call(number, tiff))
        try:
            while True:
                done, _ = await asyncio.wait({call}, timeout=self._renew_every)
                if done:
                    return call.result()
                try:
                    await self._jobs.renew(job.id, self.owner, self._lease)
                except Conflict:
                    raise
                except Exception:  # noqa: BLE001 - the store hiccuped; the lease has time left
                    log.exception("renewing the lease of fax job %s failed", job.id)
        finally:
            if not call.done():
                call.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await call

    async def _call(self, number: str, tiff: str) -> _Attempt:
        try:
            tx = await self._dial(number, await self._services.blobs.local_path(tiff))
        except DialError as exc:
            retry = isinstance(exc, RETRYABLE_DIAL)
            # 404, 410, 484, 604: the number does not exist.
            return _Attempt(exc.outcome, str(exc), None, retry, not retry and exc.status in (404, 410, 484, 604))
        except (CallError, TransientError, OSError, TimeoutError) as exc:
            return _Attempt("error", f"{type(exc).__name__}: {exc}", None, True, False)
        return _Attempt("ok" if tx.outcome.ok else "fax failed", tx.outcome.reason, tx, True, False)

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

    async def _report(self, job: ChannelJob, payload: dict[str, Any]) -> None:
        message_id = int(payload["message_id"])
        result = payload["result"]
        await self._services.reports.record(
            channel=self._channel, message_id=message_id, status=result["status"], detail=result["detail"],
            extra=result["extra"], mark_recipient_failing=bool(result.get("mark_failing", False)))
        if result["status"] == "delivered":
            await self._jobs.finish(job.id, self.owner)
        else:
            await self._jobs.fail(job.id, self.owner, str(result["detail"]))
        fut = self._done.get(message_id)
        if fut is not None and not fut.done():
            fut.set_result({"status": result["status"], "detail": result["detail"], **result["extra"]})

    async def aclose(self) -> None:
        """Stop claiming and hang up; the jobs held stay leased until their leases run out."""
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        tasks = [t for t in (self._worker, *self._calls) if t is not None]
        self._worker = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

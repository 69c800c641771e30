"""Group commit: one writer task runs the transactional steps for many messages at once.

Callers hand over a prepared message and wait; the writer takes whatever has
queued up (up to `batch_max`), runs each message's steps inside its own
savepoint, commits once, and only then wakes the callers. One bad message
rolls back its savepoint alone; a failed commit fails every caller of that
batch with a transient error, so none of them acknowledges to its peer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError, OperationalError

from storage.db import SessionFactory
from storage.types import utcnow
from umsg.config import IngestSettings
from umsg.errors import TransientError, UmsgError
from umsg.ingest.prepare import Prepared
from umsg.ingest.steps import Ctx, DuplicateMessage, Step, Work
from umsg.model import IngestResult

log = logging.getLogger(__name__)

MAX_RACE_RETRIES = 3


@dataclass
class _Pending:
    prepared: Prepared
    project_id: int
    future: asyncio.Future[IngestResult]
    attempts: int = 0


class _Race(UmsgError):
    """Another writer inserted the same unique key first; running the steps again resolves it."""


class GroupWriter:
    def __init__(self, sessions: SessionFactory, steps: Sequence[Step], make_ctx: Callable[..., Ctx],
                 settings: IngestSettings, on_commit: Callable[[], None]) -> None:
        self._sessions = sessions
        self._steps = tuple(steps)
        self._make_ctx = make_ctx
        self._settings = settings
        self._on_commit = on_commit
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self.stats = {"ingested": 0, "duplicates": 0, "failed": 0, "batches": 0}

    async def start(self) -> None:
        if self._task is None:
            self._queue = asyncio.Queue(maxsize=self._settings.max_pending)
            self._task = asyncio.create_task(self._run(), name="umsg-ingest-writer")

    async def aclose(self) -> None:
        if self._task is None or self._queue is None:
            return
        await self._queue.join()  # let accepted work commit before shutting down
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    async def submit(self, prepared: Prepared, project_id: int) -> IngestResult:
        if self._queue is None:
            raise TransientError("ingest writer is not running")
        fut: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(prepared, project_id, fut))
        return await fut

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            if self._settings.batch_wait_ms:
                await asyncio.sleep(self._settings.batch_wait_ms / 1000)
            while len(batch) < self._settings.batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit_with_retries(batch)
            except Exception as exc:  # the writer must outlive any single batch
                log.exception("ingest batch failed")
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(TransientError(f"ingest failed: {exc}"))
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit_with_retries(self, batch: list[_Pending]) -> None:
        todo = batch
        while todo:
            retry = await self._commit(todo)
            for p in retry:
                p.attempts += 1
                if p.attempts > MAX_RACE_RETRIES and not p.future.done():
                    p.future.set_exception(TransientError("ingest kept colliding with a concurrent writer"))
            todo = [p for p in retry if not p.future.done()]

    async def _commit(self, batch: list[_Pending]) -> list[_Pending]:
        """Run one transaction for `batch`; return the messages that lost a race and must rerun."""
        done: list[tuple[_Pending, Work | DuplicateMessage]] = []
        failed: list[tuple[_Pending, BaseException]] = []
        races: list[_Pending] = []
        try:
            async with self._sessions() as session, session.begin():
                now = utcnow()
                for p in batch:
                    ctx = self._make_ctx(session, p.project_id, now)
                    work = Work(p.prepared)
                    try:
                        async with session.begin_nested():
                            for step in self._steps:
                                await step.process(work, ctx)
                        done.append((p, work))
                    except DuplicateMessage as dup:
                        done.append((p, dup))
                    except IntegrityError:
                        races.append(p)
                    except OperationalError:
                        raise  # the connection or lock is the problem: fail the batch, transiently
                    except Exception as exc:
                        log.warning("ingest step failed: dedupe_key=%s error=%r",
                                    p.prepared.inbound.dedupe_key, exc)
                        failed.append((p, exc))
        except Exception as exc:
            log.warning("ingest commit failed for %d messages: %r", len(batch), exc)
            self.stats["failed"] += len(batch)
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(TransientError(f"the store did not commit: {exc}"))
            return []
        self.stats["batches"] += 1
        self._on_commit()
        for p, outcome in done:
            if p.future.done():
                continue
            if isinstance(outcome, DuplicateMessage):
                self.stats["duplicates"] += 1
                m = outcome.message
                p.future.set_result(IngestResult(m.id, m.conversation_id, m.contact_id, duplicate=True))
                continue
            self.stats["ingested"] += 1
            p.future.set_result(_result(outcome))
        for p, exc in failed:
            self.stats["failed"] += 1
            if not p.future.done():
                p.future.set_exception(exc)
        return races


def _result(work: Work) -> IngestResult:
    assert work.message is not None and work.conversation is not None and work.contact is not None
    return IngestResult(
        message_id=work.message.id, conversation_id=work.conversation.id, contact_id=work.contact.id,
        duplicate=False, queue_item_id=work.queue_item.id if work.queue_item is not None else None,
        route=work.decision.route if work.decision else None,
        conversion_errors=tuple(work.prepared.conversion_errors))

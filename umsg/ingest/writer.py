"""Group commit: one writer task runs the transactional steps for many messages at once.

Callers hand over a prepared message and wait; the writer takes whatever has
queued up (up to `batch_max`), runs the steps for all of them, commits once,
and only then wakes the callers. The batch is optimistic: if any message fails, nothing of it is committed and the
messages are committed one by one, so only the bad one fails; a commit that
fails answers its callers with a transient error, so none acknowledges to its peer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError, IntegrityError

from storage.db import SessionFactory
from storage.types import utcnow
from umsg.config import IngestSettings
from umsg.errors import TransientError, UmsgError
from umsg.ingest import ids
from umsg.ingest.prepare import Prepared
from umsg.ingest.steps import BatchState, Ctx, DuplicateMessage, Step, Work
from umsg.model import IngestResult

log = logging.getLogger(__name__)

MAX_RACE_RETRIES = 3


@dataclass
class _Pending:
    prepared: Prepared
    project_id: int
    future: asyncio.Future[IngestResult]
    attempts: int = 0


class GroupWriter:
    def __init__(self, sessions: SessionFactory, build: Sequence[Step], link: Sequence[Step],
                 make_ctx: Callable[..., Ctx], settings: IngestSettings, on_commit: Callable[[], None]) -> None:
        self._sessions = sessions
        self._build = tuple(build)
        self._link = tuple(link)
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
        if len(batch) > 1:
            try:
                await self._commit(batch)
                return
            except _BatchFailed as exc:
                # Optimism failed: isolate the culprit so the other messages still commit.
                log.info("ingest batch of %d failed (%r); committing one by one", len(batch), exc.cause)
        for p in batch:
            while not p.future.done():
                try:
                    await self._commit([p])
                except _BatchFailed as exc:
                    self._fail_single(p, exc.cause)

    def _fail_single(self, p: _Pending, cause: BaseException) -> None:
        """Decide what one failed message's caller hears (or leave it to be retried)."""
        if isinstance(cause, IntegrityError) and p.attempts < MAX_RACE_RETRIES:
            # Another process inserted the same key (message, identity) first; a rerun sees it.
            p.attempts += 1
            return
        self.stats["failed"] += 1
        error: BaseException = cause
        if isinstance(cause, (DBAPIError, OSError, TimeoutError)):
            error = TransientError(f"the store did not commit: {cause}")
        if not isinstance(cause, UmsgError):
            log.warning("ingest failed: dedupe_key=%s error=%r", p.prepared.inbound.dedupe_key, cause)
        if not p.future.done():
            p.future.set_exception(error)

    async def _commit(self, batch: list[_Pending]) -> None:
        """Run one transaction for `batch`, then resolve every caller's future.

        Raises `_BatchFailed` (nothing committed, no future touched) when any
        message of the batch failed.
        """
        outcomes: list[tuple[_Pending, Work | DuplicateMessage]] = []
        try:
            async with self._sessions(autoflush=False) as session, session.begin():
                ids.install(session)
                now = utcnow()
                state = BatchState()
                await state.prefetch(session, ((p.project_id, p.prepared) for p in batch))
                works: list[tuple[_Pending, Work, Ctx]] = []
                for p in batch:
                    ctx = self._make_ctx(session, p.project_id, now, state)
                    work = Work(p.prepared)
                    try:
                        for step in self._build:
                            await step.process(work, ctx)
                    except DuplicateMessage as dup:
                        outcomes.append((p, dup))
                        continue
                    works.append((p, work, ctx))
                await session.flush()
                for p, work, ctx in works:
                    for step in self._link:
                        await step.process(work, ctx)
                    outcomes.append((p, work))
        except Exception as exc:
            raise _BatchFailed(exc) from exc
        self.stats["batches"] += 1
        self._on_commit()
        for p, outcome in outcomes:
            if p.future.done():
                continue
            if isinstance(outcome, DuplicateMessage):
                self.stats["duplicates"] += 1
                m = outcome.message
                p.future.set_result(IngestResult(m.id, m.conversation_id, m.contact_id, duplicate=True))
            else:
                self.stats["ingested"] += 1
                p.future.set_result(_result(outcome))


class _BatchFailed(UmsgError):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(repr(cause))
        self.cause = cause


def _result(work: Work) -> IngestResult:
    assert work.message is not None and work.conversation is not None and work.contact is not None
    return IngestResult(
        message_id=work.message.id, conversation_id=work.conversation.id, contact_id=work.contact.id,
        duplicate=False, queue_item_id=work.queue_item.id if work.queue_item is not None else None,
        route=work.decision.route if work.decision else None,
        conversion_errors=tuple(work.prepared.conversion_errors))

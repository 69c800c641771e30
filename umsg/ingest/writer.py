"""Group commit: one writer task runs the transactional steps for many messages at once.

Callers hand over a prepared message and wait; the writer takes whatever has
queued up (up to `batch_max`), reads what the batch needs in bulk, runs the
steps for each message in memory, writes all rows with one statement per
table (`persist`), runs the rare ORM work (`followup`: the messages' effects such as an
opt-out or a delivery report, and route actions), commits
once, and only then wakes the callers. On SQLite the batch's BEGIN IMMEDIATE
rides with its first read and, when no ORM action runs, COMMIT with its last
write (`Bulk`), so a batch costs three round trips to the driver's thread, not five. A small
message's blobs (`Prepared.inline`) are rows of the same transaction, so no row outlives its
bytes and they cost no fsync of their own; a large one's were written before it was handed
over. The batch is optimistic: if any
message fails, nothing of it is committed and the messages are committed one
by one, so only the bad one fails; a commit that fails answers its callers
with a transient error, so none acknowledges to its peer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from storage.bulk import Bulk
from storage.db import HeldConnection, SessionFactory
from storage.types import utcnow
from umsg.config import IngestSettings
from umsg.errors import TransientError, UmsgError
from umsg.events.log import EventLog
from umsg.ingest import followup, persist
from umsg.ingest.batch import BatchState, Want
from umsg.ingest.prepare import Prepared
from umsg.ingest.preread import PreReader
from umsg.ingest.rows import Work
from umsg.ingest.steps import Ctx, DuplicateMessage, Step
from umsg.model import Inbound, IngestResult
from umsg.routes.book import RouteBook

log = logging.getLogger(__name__)

MAX_RACE_RETRIES = 3


@dataclass
class _Pending:
    prepared: Prepared
    project_id: int
    future: asyncio.Future[IngestResult]
    attempts: int = 0


class GroupWriter:
    def __init__(self, sessions: SessionFactory, steps: Sequence[Step], routes: RouteBook,
                 events: EventLog, settings: IngestSettings, on_commit: Callable[[], None],
                 after_commit: Callable[[Sequence[Inbound]], None] | None = None) -> None:
        self._sessions = sessions
        self._steps = tuple(steps)
        self._routes = routes
        self._events = events
        self._settings = settings
        self._on_commit = on_commit
        self._after_commit = after_commit  # a failpoint of crash tests (umsg.app.failpoints); None in service
        self._reader = PreReader()
        self._bulk = Bulk()
        self._conn = HeldConnection(sessions, "the ingest writer")
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
        await self._conn.drop()

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
        committed = False
        try:
            conn = await self._conn.get()
            async with conn.begin():
                session = self._sessions(bind=conn, autoflush=False)
                try:
                    committed = await self._run_steps(session, conn, batch, outcomes)
                finally:
                    await session.close()  # leaves the connection's transaction alone
                if committed:
                    # Durable already (COMMIT went with the rows): answer now, not after the
                    # transaction's bookkeeping, whose COMMIT finds nothing left to do.
                    self._answer(outcomes)
        except Exception as exc:
            await self._conn.drop(only_if_broken=True)
            if committed:  # the rows are durable and their callers answered; only the bookkeeping failed
                log.warning("closing a committed ingest transaction failed: %r", exc)
                await self._conn.drop()
                return
            raise _BatchFailed(exc) from exc
        if not committed:
            self._answer(outcomes)

    def _answer(self, outcomes: list[tuple[_Pending, Work | DuplicateMessage]]) -> None:
        """The batch is committed: wake its callers."""
        self.stats["batches"] += 1
        self._on_commit()
        if self._after_commit is not None:
            self._after_commit([p.prepared.inbound for p, _ in outcomes])
        for p, outcome in outcomes:
            if p.future.done():
                continue
            if isinstance(outcome, DuplicateMessage):
                self.stats["duplicates"] += 1
                p.future.set_result(_duplicate(outcome))
            else:
                self.stats["ingested"] += 1
                p.future.set_result(_result(outcome))


    async def _run_steps(self, session: AsyncSession, conn: AsyncConnection, batch: list[_Pending],
                         outcomes: list[tuple[_Pending, Work | DuplicateMessage]]) -> bool:
        """Read, decide and write the rows of `batch` inside the transaction `conn.begin()` opened.

        The first read takes SQLite's write lock (BEGIN IMMEDIATE queued with it).
        Returns True when the transaction is committed already: on SQLite, when
        no route action needs the ORM, COMMIT is queued behind the row writes.
        """
        state = BatchState(utcnow())
        await state.load(conn, self._reader, self._bulk, [_want(p) for p in batch], begin=True)
        state.ids.install(session)  # the rows effects and route actions add through the ORM
        for pid in {p.project_id for p in batch}:
            state.tables[pid] = await self._routes.table_for(session, pid)
        works: list[Work] = []
        for p in batch:
            work = Work(p.prepared, p.project_id)
            ctx = Ctx(p.project_id, state, state.tables[p.project_id])
            try:
                for step in self._steps:
                    step.process(work, ctx)
            except DuplicateMessage as dup:
                outcomes.append((p, dup))
                continue
            works.append(work)
            outcomes.append((p, work))
        orm = [w for w in works if w.needs_orm]
        if not orm:
            return await persist.write(conn, self._bulk, state.ids, works, state.now, commit=True)
        await persist.write(conn, self._bulk, state.ids, works, state.now)
        for work in orm:
            await followup.run(session, self._events, work, state.now, self._routes.channels)
        await session.flush()
        return False


class _BatchFailed(UmsgError):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(repr(cause))
        self.cause = cause


def _want(p: _Pending) -> Want:
    inbound = p.prepared.inbound
    return Want(p.project_id, inbound.channel, inbound.dedupe_key, inbound.sender.kind.value,
                p.prepared.sender_value, len(p.prepared.blobs), inbound.thread.refs, inbound.thread.own,
                inbound.thread.conversation_token, inbound.thread.sticky)


def _duplicate(dup: DuplicateMessage) -> IngestResult:
    m = dup.message
    if isinstance(m, Work):  # the first copy was in the same batch
        assert m.message_id is not None and m.conversation is not None and m.contact is not None
        assert m.conversation.id is not None and m.contact.id is not None
        return IngestResult(m.message_id, m.conversation.id, m.contact.id, duplicate=True)
    return IngestResult(m.id, m.conversation_id, m.contact_id, duplicate=True)


def _result(work: Work) -> IngestResult:
    assert work.message_id is not None and work.conversation is not None and work.contact is not None
    assert work.conversation.id is not None and work.contact.id is not None
    return IngestResult(
        message_id=work.message_id, conversation_id=work.conversation.id, contact_id=work.contact.id,
        duplicate=False, queue_item_id=work.queue_item_id,
        route=work.decision.route if work.decision else None,
        conversion_errors=tuple(work.prepared.conversion_errors))

"""The ingest's writer: the transactional steps for many messages at once, in one transaction.

Callers hand over a prepared message and wait (`umsg.group_commit.GroupCommit` queues them,
bounds how many may wait, and wakes each after its batch committed). A batch of up to
`batch_max` messages reads what it needs in bulk, runs the steps for each message in memory,
writes all rows with one statement per table (`persist`), runs the rare ORM work (`followup`:
the messages' effects such as an opt-out or a delivery report, and route actions) and
commits once. On SQLite the batch's BEGIN IMMEDIATE rides with its first read and, when no
ORM action runs, COMMIT with its last write (`Bulk`), so a batch costs three round trips to
the driver's thread, not five. A small message's blobs (`Prepared.inline`) are rows of the
same transaction, so no row outlives its bytes and they cost no fsync of their own; a large
one's were written before it was handed over. The batch is optimistic: if any message fails,
nothing of it is committed and the messages are committed one by one, so only the bad one
fails (a lost race on a unique key is run again); a commit that fails answers its callers
with a transient error, so none acknowledges to its peer.
"""

from __future__ import annotations

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
from umsg.group_commit import GroupCommit
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


class GroupWriter:
    def __init__(self, sessions: SessionFactory, steps: Sequence[Step], routes: RouteBook,
                 events: EventLog, settings: IngestSettings, on_commit: Callable[[], None],
                 after_commit: Callable[[Sequence[Inbound]], None] | None = None) -> None:
        self._sessions = sessions
        self._steps = tuple(steps)
        self._routes = routes
        self._events = events
        self._on_commit = on_commit
        self._after_commit = after_commit  # a failpoint of crash tests (umsg.app.failpoints); None in service
        self._reader = PreReader()
        self._bulk = Bulk()
        self._conn = HeldConnection(sessions, "the ingest writer")
        self._group: GroupCommit[_Pending, IngestResult] = GroupCommit(
            self._commit, name="ingest", batch_max=settings.batch_max, max_pending=settings.max_pending,
            gather=settings.batch_wait_ms / 1000 if settings.batch_wait_ms else None, on_error=self._failed)
        self.stats = {"ingested": 0, "duplicates": 0, "failed": 0, "batches": 0}

    async def aclose(self) -> None:
        """Let accepted work commit, then give back the connection."""
        await self._group.drain()
        await self._conn.drop()

    async def submit(self, prepared: Prepared, project_id: int) -> IngestResult:
        return await self._group.submit(_Pending(prepared, project_id))

    def _failed(self, p: _Pending, cause: Exception, attempts: int) -> Exception | None:
        """What the caller of a message that failed on its own hears (None: run it again)."""
        if isinstance(cause, IntegrityError) and attempts <= MAX_RACE_RETRIES:
            # Another process inserted the same key (message, identity) first; a rerun sees it.
            return None
        self.stats["failed"] += 1
        if not isinstance(cause, UmsgError):
            log.warning("ingest failed: dedupe_key=%s error=%r", p.prepared.inbound.dedupe_key, cause)
        if isinstance(cause, (DBAPIError, OSError, TimeoutError)):
            return TransientError(f"the store did not commit: {cause}")
        return cause

    async def _commit(self, batch: Sequence[_Pending]) -> list[IngestResult]:
        """Run one transaction for `batch`; the callers' results once it committed.

        Raises (nothing committed) when any message of the batch failed.
        """
        outcomes: list[Work | DuplicateMessage] = []
        committed = False
        try:
            conn = await self._conn.get()
            async with conn.begin():
                session = self._sessions(bind=conn, autoflush=False)
                try:
                    committed = await self._run_steps(session, conn, batch, outcomes)
                finally:
                    await session.close()  # leaves the connection's transaction alone
        except Exception as exc:
            await self._conn.drop(only_if_broken=True)
            if not committed:
                raise
            # The rows are durable (COMMIT went with them); only closing the transaction failed.
            log.warning("closing a committed ingest transaction failed: %r", exc)
            await self._conn.drop()
        return self._answers(batch, outcomes)

    def _answers(self, batch: Sequence[_Pending], outcomes: list[Work | DuplicateMessage]) -> list[IngestResult]:
        """The batch is committed: count it and say what each caller hears."""
        self.stats["batches"] += 1
        self._on_commit()
        if self._after_commit is not None:
            self._after_commit([p.prepared.inbound for p in batch])
        results = []
        for outcome in outcomes:
            if isinstance(outcome, DuplicateMessage):
                self.stats["duplicates"] += 1
                results.append(_duplicate(outcome))
            else:
                self.stats["ingested"] += 1
                results.append(_result(outcome))
        return results

    async def _run_steps(self, session: AsyncSession, conn: AsyncConnection, batch: Sequence[_Pending],
                         outcomes: list[Work | DuplicateMessage]) -> bool:
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
                outcomes.append(dup)
                continue
            works.append(work)
            outcomes.append(work)
        orm = [w for w in works if w.needs_orm]
        if not orm:
            return await persist.write(conn, self._bulk, state.ids, works, state.now, commit=True)
        await persist.write(conn, self._bulk, state.ids, works, state.now)
        for work in orm:
            await followup.run(session, self._events, work, state.now, self._routes.channels)
        await session.flush()
        return False


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

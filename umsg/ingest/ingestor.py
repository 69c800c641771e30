"""`Ingestor.ingest(inbound)`: the ingest sink handed to every channel adapter."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

from sqlalchemy import select

from converters.registry import ConverterRegistry
from storage.blobs import BlobStore
from storage.db import SessionFactory
from storage.models import Project
from umsg.config import IngestSettings
from umsg.errors import PermanentError
from umsg.events.log import EventLog
from umsg.ingest.prepare import conversion_jobs, make_pool, prepare, runs_inline, validate
from umsg.ingest.steps import STEPS, Step, find_duplicate
from umsg.ingest.writer import GroupWriter
from umsg.model import Inbound, IngestResult
from umsg.queue import Queue
from umsg.routes.book import RouteBook

log = logging.getLogger(__name__)


class Ingestor:
    """Stores every inbound message exactly once and puts it where an agent will see it."""

    def __init__(self, sessions: SessionFactory, readers: SessionFactory, blobs: BlobStore,
                 converters: ConverterRegistry, routes: RouteBook, events: EventLog, queue: Queue,
                 settings: IngestSettings, steps: Sequence[Step] = STEPS,
                 after_commit: Callable[[Sequence[Inbound]], None] | None = None) -> None:
        self._sessions = sessions
        self._readers = readers
        self._blobs = blobs
        self._converters = converters
        self.routes = routes
        self._events = events
        self._queue = queue
        self._settings = settings
        self._projects: dict[str, int] = {}
        self._pool: Executor | None = None
        # The queue's rows are written by the writer in bulk (persist), with the same columns and event.
        self._writer = GroupWriter(sessions, steps, routes, events, settings, events.notify, after_commit)

    @property
    def stats(self) -> dict[str, int]:
        return dict(self._writer.stats)

    async def start(self) -> None:
        if self._pool is None:
            self._pool = make_pool(self._settings.converter_workers)

    async def aclose(self) -> None:
        await self._writer.aclose()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)

    async def project_id(self, slug: str) -> int:
        pid = self._projects.get(slug)
        if pid is None:
            async with self._readers() as s:
                pid = await s.scalar(select(Project.id).where(Project.slug == slug))
            if pid is None:
                raise PermanentError(f"unknown project '{slug}'")
            self._projects[slug] = pid
        return pid

    async def ingest(self, inbound: Inbound) -> IngestResult:
        """Store `inbound` durably and route it; return only after the commit.

        A retry of a message already stored returns the stored one with
        `duplicate=True` and changes nothing.
        """
        sender = validate(inbound, self._settings)  # refuse bad input before any I/O
        project_id = await self.project_id(inbound.project)
        jobs = conversion_jobs(inbound, self._converters)
        if jobs and not runs_inline(inbound, jobs):
            # A retry of a message with heavy conversions would redo that work before
            # the writer spots the duplicate: answer it early. Small conversions cost
            # less than this extra read, so they skip it. The unique key still
            # guards the race inside the transaction.
            async with self._readers() as s:
                existing = await find_duplicate(s, project_id, inbound.channel, inbound.dedupe_key)
            if existing is not None:
                self._writer.stats["duplicates"] += 1
                return IngestResult(existing.id, existing.conversation_id, existing.contact_id, duplicate=True)
        prepared = await prepare(inbound, sender, self._blobs, jobs, self._pool)
        return await self._writer.submit(prepared, project_id)

"""Wiring of the core: one object that owns the store, the pipeline and the queue.

Nothing here is global: every component receives what it needs from `Core`,
and tests build as many independent cores as they like.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from converters.registry import ConverterRegistry, default_converters
from storage.blob_rows import read_blob_row
from storage.blobs import BlobStore
from storage.db import SessionFactory, create_engine, read_session_factory, session_factory
from storage.migrate import upgrade
from storage.models import Project
from umsg.channel_jobs import ChannelJobs
from umsg.channel_state import ChannelStateStore, StoredMessages
from umsg.chat_support import ChatSupport
from umsg.config import Settings
from umsg.events.log import EventLog
from umsg.ingest.ingestor import Ingestor
from umsg.instances import ChannelInstances
from umsg.model import Inbound
from umsg.outbound.outbox import Outbox
from umsg.outbound.reports import DeliveryReports
from umsg.queue import Queue
from umsg.router.service import RouterService
from umsg.routes.book import RouteBook
from umsg.services import ChannelServices

log = logging.getLogger(__name__)


@dataclass
class Core:
    settings: Settings
    engine: AsyncEngine
    sessions: SessionFactory
    readers: SessionFactory
    blobs: BlobStore
    converters: ConverterRegistry
    routes: RouteBook
    events: EventLog
    queue: Queue
    ingest: Ingestor
    instance_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")
    router: RouterService = field(init=False)
    outbox: Outbox = field(init=False)
    reports: DeliveryReports = field(init=False)
    # The configured channel instances (name, type, identity kind), from the composition root.
    channels: ChannelInstances = field(init=False)

    @classmethod
    async def open(cls, settings: Settings, migrate: bool | None = None, *,
                   after_commit: Callable[[Sequence[Inbound]], None] | None = None,
                   channels: ChannelInstances | None = None) -> Core:
        """Connect to the store (migrating it when configured to) and build every component.

        `channels` are the configured channel instances (`umsg.app.serve` collects them from the
        adapters); without them the core knows only the adapter type names (umsg/instances.py).

        `after_commit` is called after each ingest commit (a crash test's failpoint)."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        url = settings.database_url
        engine = create_engine(url, schema=settings.database.schema_name, pool_size=settings.database.pool_size)
        if settings.database.auto_migrate if migrate is None else migrate:
            await upgrade(engine, url, settings.database.schema_name)
        sessions = session_factory(engine)
        readers = read_session_factory(engine)
        blobs = BlobStore(settings.blob_dir, inline=functools.partial(read_blob_row, readers))
        converters = default_converters(settings.converters)
        channels = channels if channels is not None else ChannelInstances()
        # Costs and caps are keyed by instance, as queue items are; a type's entry covers its instances.
        settings = settings.model_copy(update={"router": settings.router.for_instances(
            {i.name: i.type for i in channels.all()})})
        routes = RouteBook.from_settings(settings.routes, settings.project, channels=channels)
        events = EventLog(sessions, readers)
        queue = Queue(sessions, events, settings.queue, readers=readers)
        ingest = Ingestor(sessions, readers, blobs, converters, routes, events, queue, settings.ingest,
                          after_commit=after_commit)
        core = cls(settings, engine, sessions, readers, blobs, converters, routes, events, queue, ingest)
        core.router = RouterService(sessions, readers, events, engine, settings.router,
                                    schema=settings.database.schema_name)
        core.outbox = Outbox(sessions, events, blobs=blobs, channels=channels)
        core.channels = channels
        core.reports = DeliveryReports(sessions, events)
        if settings.instance_id:
            core.instance_id = settings.instance_id
        await core.ensure_project(settings.project)
        return core

    async def ensure_project(self, slug: str, name: str | None = None) -> int:
        """Return the id of project `slug`, creating it on first use."""
        async with self.sessions() as s:
            pid = await s.scalar(select(Project.id).where(Project.slug == slug))
            if pid is not None:
                return pid
            p = Project(slug=slug, name=name or slug)
            s.add(p)
            try:
                await s.commit()
            except Exception:  # another process created it first
                await s.rollback()
                pid = await s.scalar(select(Project.id).where(Project.slug == slug))
                if pid is None:
                    raise
                return pid
            return p.id

    def channel_services(self) -> ChannelServices:
        """What channel adapters may use of the core (see umsg/services.py)."""
        return ChannelServices(
            blobs=self.blobs, routes=self.routes,
            events=self.events, outbox=self.outbox, reports=self.reports,
            jobs=ChannelJobs(self.sessions, self.readers),
            state=ChannelStateStore(self.sessions, self.readers), messages=StoredMessages(self.readers),
            chat=ChatSupport(self.sessions, self.readers, self.events),
            public_url=self.settings.http.public_url or "", default_project=self.settings.project,
            channels=self.channels,
        )

    async def start(self) -> None:
        await self.ingest.start()

    async def aclose(self) -> None:
        await self.ingest.aclose()
        await self.reports.aclose()
        await self.engine.dispose()

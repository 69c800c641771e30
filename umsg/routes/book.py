"""Every project's route table, from the TOML configuration and the store, reloaded live.

A table saved through the API (storage.models.StoredRouteTable) overrides the
configured one for its project; a project with neither gets the built-in
default only. The ingest asks `table_for(session, project_id)` for each
message; the answer is cached and the stored version re-read at most every
`recheck_seconds` (one indexed single-row query), so a table saved by another
process is in use here within that time, and one saved by this process at
once (`save` drops the cache entry after the caller commits).
Saving is optimistic: the caller names the version it read, and a stale
version is a Conflict (HTTP 409).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Project, StoredRouteTable
from storage.types import utcnow
from umsg.errors import ConfigError, Conflict
from umsg.events.log import add_event
from umsg.instances import ChannelInstances
from umsg.routes.build import build_route, dump_route, parse_table, tables_by_project
from umsg.routes.settings import RouteSettings
from umsg.routes.table import RouteTable

log = logging.getLogger(__name__)

ROUTES_UPDATED = "routes.updated"


@dataclass(frozen=True)
class Effective:
    """What a project routes by right now, and where it came from."""

    project: str
    table: RouteTable
    version: int  # 0 while no table is stored
    source: str  # "stored" | "config" | "builtin"
    routes: list[dict[str, Any]]  # as written (JSON form), without the implicit default


@dataclass
class _Cached:
    slug: str
    version: int | None
    table: RouteTable
    checked_at: float


class RouteBook:
    """Per-project route tables; construct one per Core (no global state)."""

    def __init__(self, configured: Mapping[str, Sequence[RouteSettings]], default_project: str, *,
                 recheck_seconds: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 channels: ChannelInstances | None = None) -> None:
        self.default_project = default_project
        # The configured channel instances routes name (filters, forward targets).
        self.channels = channels if channels is not None else ChannelInstances()
        self._configured = {slug: list(rs) for slug, rs in configured.items()}
        self._tables = tables_by_project([r for rs in configured.values() for r in rs], default_project)
        self.recheck_seconds = recheck_seconds
        self.clock = clock
        self._cache: dict[int, _Cached] = {}

    @classmethod
    def from_settings(cls, routes: Sequence[RouteSettings], default_project: str, *,
                      channels: ChannelInstances | None = None) -> RouteBook:
        """The book of the configuration's `[[routes]]`; a route naming no project is the default one's."""
        grouped: dict[str, list[RouteSettings]] = {}
        for rs in routes:
            grouped.setdefault(rs.project or default_project, []).append(rs)
        return cls(grouped, default_project, channels=channels)

    def configured(self, slug: str) -> RouteTable:
        """The table of the TOML configuration for project `slug` (the built-in default if none)."""
        return self._tables.get(slug) or RouteTable([])

    # -- reading -----------------------------------------------------------------------------

    async def table_for(self, session: AsyncSession, project_id: int) -> RouteTable:
        """The table to route by for `project_id`, re-checking the stored version when due."""
        cached = self._cache.get(project_id)
        now = self.clock()
        if cached is not None and now - cached.checked_at < self.recheck_seconds:
            return cached.table
        version = await session.scalar(
            select(StoredRouteTable.version).where(StoredRouteTable.project_id == project_id))
        if cached is not None and cached.version == version:
            cached.checked_at = now
            return cached.table
        slug = cached.slug if cached is not None else await self._slug(session, project_id)
        table = await self._load(session, project_id, slug) if version is not None else self.configured(slug)
        self._cache[project_id] = _Cached(slug, version, table, now)
        return table

    async def _slug(self, session: AsyncSession, project_id: int) -> str:
        slug = await session.scalar(select(Project.slug).where(Project.id == project_id))
        return slug or ""

    async def _load(self, session: AsyncSession, project_id: int, slug: str) -> RouteTable:
        row = await session.scalar(select(StoredRouteTable).where(StoredRouteTable.project_id == project_id))
        if row is None:
            return self.configured(slug)
        routes, problems = parse_table(row.routes, slug)
        if problems:
            # Saved tables were validated; this means the rules changed under a stored table.
            # Routing on the configured table beats refusing every message.
            log.error("stored route table of %s (version %s) is no longer valid: %s; using the configured "
                      "one", slug, row.version, "; ".join(f"{k}: {r}" for k, r in problems))
            return self.configured(slug)
        return RouteTable([build_route(r) for r in routes], version=row.version, source="stored")

    async def effective(self, session: AsyncSession, project_id: int, slug: str) -> Effective:
        """The table in force for a project, read now (no cache): for the API and the CLI."""
        row = await session.scalar(select(StoredRouteTable).where(StoredRouteTable.project_id == project_id))
        if row is not None:
            table = await self._load(session, project_id, slug)
            if table.source == "stored":
                return Effective(slug, table, row.version, "stored", list(row.routes))
        configured = self._configured.get(slug, [])
        source = "config" if configured else "builtin"
        version = row.version if row is not None else 0
        return Effective(slug, self.configured(slug), version, source, [dump_route(r) for r in configured])

    # -- writing -----------------------------------------------------------------------------

    async def save(self, session: AsyncSession, project_id: int, slug: str, raw: Sequence[Mapping[str, Any]],
                   expected_version: int, actor: str) -> int:
        """Validate and store a project's table in the caller's transaction; returns the new version.

        Raises ConfigError (keys name the routes) for an invalid table and Conflict when
        `expected_version` is not the stored one (0: nothing stored yet). Call `forget`
        after the commit so this process routes by the new table at once.
        """
        routes, problems = parse_table(raw, slug)
        if problems:
            raise ConfigError(problems)
        data = [dump_route(r) for r in routes]
        now = utcnow()
        current = await session.scalar(
            select(StoredRouteTable.version).where(StoredRouteTable.project_id == project_id))
        if (current or 0) != expected_version:
            raise Conflict(f"the route table of {slug!r} is at version {current or 0}, not "
                           f"{expected_version}; reload it and apply your change again")
        if current is None:
            # A concurrent first save hits the unique project_id: an IntegrityError (409).
            session.add(StoredRouteTable(project_id=project_id, version=1, routes=data, updated_at=now,
                                         updated_by=actor))
            new_version = 1
        else:
            result = await session.execute(
                update(StoredRouteTable)
                .where(StoredRouteTable.project_id == project_id,
                       StoredRouteTable.version == expected_version)
                .values(version=expected_version + 1, routes=data, updated_at=now, updated_by=actor))
            if int(cast(CursorResult[Any], result).rowcount) != 1:
                raise Conflict(f"the route table of {slug!r} changed meanwhile; reload it and try again")
            new_version = expected_version + 1
        add_event(session, project_id, ROUTES_UPDATED,
                  {"project": slug, "version": new_version, "updated_by": actor, "routes": len(data)})
        return new_version

    def forget(self, project_id: int) -> None:
        """Drop the cached table so the next message re-reads it (after a save committed)."""
        self._cache.pop(project_id, None)

"""A project's route table as the web API reads, replaces and tests it.

The caller (umsg.web.api.routes) parses, authorises and serialises; this module runs the
queries and the write, over the process's `RouteBook` (umsg.routes.book), which owns the
tables, their validation and their cache. A saved table commits with its `routes.updated`
event; the book then forgets its copy so this process routes by the new table at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select

from storage.db import SessionFactory
from storage.models import Project
from umsg.errors import ConfigError, NotFound
from umsg.events.log import EventLog
from umsg.routes.book import Effective, RouteBook
from umsg.routes.build import build_route, parse_table
from umsg.routes.filters import Sample
from umsg.routes.probe import contact_attributes
from umsg.routes.table import Explanation, RouteTable


@dataclass(frozen=True)
class ProjectRef:
    """A project the caller may see, by id and slug (the tables' problems name the slug)."""

    id: int
    slug: str


@dataclass(frozen=True)
class Traced:
    """Which route a sample takes, and which table said so."""

    explanation: Explanation  # its `sample` is the one judged (attributes filled in)
    version: int | None  # None for a candidate table
    source: str  # "stored" | "config" | "builtin" | "candidate"


class RouteTables:
    """Reads, saves and tests of projects' route tables for the web API."""

    def __init__(self, book: RouteBook, sessions: SessionFactory, readers: SessionFactory,
                 events: EventLog) -> None:
        self.book = book
        self.sessions = sessions
        self.readers = readers
        self.events = events

    async def project(self, slug: str, sees: Callable[[int], bool]) -> ProjectRef:
        """The project named `slug`; NotFound when there is none or `sees` refuses it."""
        async with self.readers() as s:
            pid = await s.scalar(select(Project.id).where(Project.slug == slug))
        if pid is None or not sees(pid):
            raise NotFound(f"project {slug!r} not found")
        return ProjectRef(pid, slug)

    async def effective(self, project: ProjectRef) -> Effective:
        """The table in force for the project, read now."""
        async with self.readers() as s:
            return await self.book.effective(s, project.id, project.slug)

    async def save(self, project: ProjectRef, routes: Sequence[Mapping[str, Any]], expected_version: int,
                   *, by: str) -> tuple[int, Effective]:
        """Replace the project's table; returns the new version and the table now in force.

        Raises ConfigError (keys name the routes) for an invalid table and Conflict when
        `expected_version` is not the stored one (0: nothing stored yet).
        """
        async with self.sessions() as s:
            version = await self.book.save(s, project.id, project.slug, routes, expected_version, by)
            await s.commit()
        self.book.forget(project.id)
        self.events.notify()
        return version, await self.effective(project)

    async def trace(self, project: ProjectRef, sample: Sample, *,
                    candidate: Sequence[Mapping[str, Any]] | None = None,
                    own_attributes: bool = True) -> Traced:
        """Route `sample` through the table in force, or through `candidate` when given.

        Without `own_attributes` the sample is judged with the attributes of the contact that
        owns its sender in the project (none for a stranger). An invalid candidate raises
        ConfigError whose keys name its routes.
        """
        async with self.readers() as s:
            if not own_attributes:
                sample = replace(sample, attributes=await contact_attributes(s, project.id, sample.sender))
            if candidate is not None:
                parsed, problems = parse_table(candidate, project.slug)
                if problems:
                    raise ConfigError(problems)
                table, version, source = RouteTable(build_route(r) for r in parsed), None, "candidate"
            else:
                eff = await self.book.effective(s, project.id, project.slug)
                table, version, source = eff.table, eff.version, eff.source
        return Traced(table.trace(sample), version, source)

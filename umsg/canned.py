"""Canned responses and wrap-up codes as the web API reads and changes them.

The caller (umsg.web.api.canned) parses, authorises and serialises; this module runs the
SQL. Listings take the caller's `project_ids` (None: every project). Creating one names its
project by slug, which must pass the caller's `sees`; changing or deleting one by id calls the
caller's `guard` with its project id right after the load, in the same transaction.
Neither kind emits events: the inbox reads them when it opens.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import SessionFactory
from storage.models import CannedResponse, Project, WrapupCode
from umsg.errors import Conflict, NotFound, PermanentError

# Raises (NotFound, usually) when the caller may not see an object of this project.
Guard = Callable[[int | None], None]


class UnknownProject(PermanentError):
    """A new canned response or wrap-up code names a project that does not exist (or is not seen)."""

    def __init__(self, slug: str) -> None:
        self.slug = slug
        super().__init__(f"unknown project '{slug}'")


def wrapup_codes_query(project_ids: Collection[int] | None, *, per_project: bool = False) -> Select[WrapupCode]:
    """The wrap-up codes of `project_ids` (None: all), by code, or by project then code.

    Public so the sign-in read model (umsg.signin) lists them in its own transaction.
    """
    stmt = select(WrapupCode).order_by(
        *((WrapupCode.project_id, WrapupCode.code) if per_project else (WrapupCode.code,))
    )
    if project_ids is not None:
        stmt = stmt.where(WrapupCode.project_id.in_(sorted(project_ids)))
    return stmt


class CannedResponses:
    """Reads and changes of canned responses for the web API."""

    def __init__(self, sessions: SessionFactory, readers: SessionFactory) -> None:
        self.sessions = sessions
        self.readers = readers

    async def all(self, project_ids: Collection[int] | None) -> list[CannedResponse]:
        """Every canned response of `project_ids` (None: all), by title then id."""
        stmt = select(CannedResponse).order_by(CannedResponse.title, CannedResponse.id)
        if project_ids is not None:
            stmt = stmt.where(CannedResponse.project_id.in_(sorted(project_ids)))
        async with self.readers() as s:
            return list((await s.scalars(stmt)).all())

    async def create(
        self, project: str, title: str, body: str, sees: Callable[[int | None], bool], *, by: str
    ) -> CannedResponse:
        """A new canned response; UnknownProject, or Conflict for a title the project already has."""
        async with self.sessions() as s:
            row = CannedResponse(project_id=await _project_id(s, project, sees), title=title, body=body,
                                 updated_by=by)
            s.add(row)
            await _commit_unique(s, row, f"a canned response titled {title!r} already exists")
        return row

    async def update(
        self, canned_id: int, guard: Guard, *, title: str | None, body: str | None, by: str
    ) -> CannedResponse:
        """Set the given title and body (None: keep) and who changed it last; Conflict for a title in use."""
        async with self.sessions() as s:
            row = await _load_canned(s, canned_id, guard)
            if title is not None:
                row.title = title
            if body is not None:
                row.body = body
            row.updated_by = by
            await _commit_unique(s, row, f"a canned response titled {title!r} already exists")
        return row

    async def delete(self, canned_id: int, guard: Guard) -> None:
        """Delete one; NotFound when it does not exist, whatever `guard` raises when hidden."""
        async with self.sessions() as s:
            await s.delete(await _load_canned(s, canned_id, guard))
            await s.commit()


class WrapupCodes:
    """Reads and changes of wrap-up codes for the web API."""

    def __init__(self, sessions: SessionFactory, readers: SessionFactory) -> None:
        self.sessions = sessions
        self.readers = readers

    async def all(self, project_ids: Collection[int] | None) -> list[WrapupCode]:
        """Every wrap-up code of `project_ids` (None: all), by code."""
        async with self.readers() as s:
            return list((await s.scalars(wrapup_codes_query(project_ids))).all())

    async def create(self, project: str, code: str, label: str, sees: Callable[[int | None], bool]) -> WrapupCode:
        """A new wrap-up code; UnknownProject, or Conflict for a code the project already has."""
        async with self.sessions() as s:
            row = WrapupCode(project_id=await _project_id(s, project, sees), code=code, label=label)
            s.add(row)
            await _commit_unique(s, row, f"wrap-up code {code!r} already exists")
        return row

    async def delete(self, code_id: int, guard: Guard) -> None:
        """Delete one; NotFound when it does not exist, whatever `guard` raises when hidden."""
        async with self.sessions() as s:
            row = await s.get(WrapupCode, code_id)
            if row is None:
                raise NotFound(f"wrap-up code {code_id} not found")
            guard(row.project_id)
            await s.delete(row)
            await s.commit()


async def _project_id(s: AsyncSession, slug: str, sees: Callable[[int | None], bool]) -> int:
    pid = await s.scalar(select(Project.id).where(Project.slug == slug))
    if pid is None or not sees(pid):
        raise UnknownProject(slug)
    return int(pid)


async def _load_canned(s: AsyncSession, canned_id: int, guard: Guard) -> CannedResponse:
    row = await s.get(CannedResponse, canned_id)
    if row is None:
        raise NotFound(f"canned response {canned_id} not found")
    guard(row.project_id)
    return row


async def _commit_unique(s: AsyncSession, row: object, conflict: str) -> None:
    """Commit and reload `row`; Conflict(`conflict`) when a unique key (title, code) is taken."""
    try:
        await s.commit()
    except IntegrityError as exc:
        raise Conflict(conflict) from exc
    await s.refresh(row)

"""Canned responses and wrap-up codes: every agent reads them, staff manage them.

Canned bodies are templates with `{{contact.name}}`, `{{agent.name}}`... left in
place; the inbox fills them in when the agent inserts one (into a text field,
never as markup), so the stored text is what an admin wrote.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import CannedResponse, Project, WrapupCode
from umsg.errors import Conflict, NotFound
from umsg.tokens import Principal
from umsg.web import serialize
from umsg.web.auth import actor, ensure_visible, scoped
from umsg.web.endpoints import Ctx, json_ok
from umsg.web.errors import invalid
from umsg.web.schemas import Body, Slug


class CannedIn(Body):
    project: Slug
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=50_000)


class CannedPatch(Body):
    title: str | None = Field(default=None, min_length=1, max_length=200)
    body: str | None = Field(default=None, min_length=1, max_length=50_000)


class WrapupIn(Body):
    project: Slug
    code: str = Field(pattern=r"^[A-Za-z0-9._-]{1,100}$")
    label: str = Field(min_length=1, max_length=200)


def _canned(c: CannedResponse) -> dict[str, Any]:
    return {"id": c.id, "project_id": c.project_id, "title": c.title, "body": c.body,
            "updated_by": c.updated_by, "updated_at": serialize.ts(c.updated_at)}


def _wrapup(w: WrapupCode) -> dict[str, Any]:
    return {"id": w.id, "project_id": w.project_id, "code": w.code, "label": w.label}


async def _project_id(s: AsyncSession, principal: Principal, slug: str) -> int:
    pid = await s.scalar(select(Project.id).where(Project.slug == slug))
    if pid is None or not principal.sees(pid):
        raise invalid([{"field": "body.project", "message": f"unknown project '{slug}'"}])
    return int(pid)


async def list_canned(ctx: Ctx) -> web.StreamResponse:
    stmt = scoped(select(CannedResponse).order_by(CannedResponse.title, CannedResponse.id),
                  CannedResponse.project_id, ctx.me)
    async with ctx.core.readers() as s:
        rows = (await s.scalars(stmt)).all()
    return json_ok({"items": [_canned(c) for c in rows]})


async def create_canned(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(CannedIn)
    async with ctx.core.sessions() as s:
        pid = await _project_id(s, ctx.me, body.project)
        row = CannedResponse(project_id=pid, title=body.title, body=body.body, updated_by=actor(ctx.me))
        s.add(row)
        try:
            await s.commit()
        except IntegrityError as exc:
            raise Conflict(f"a canned response titled {body.title!r} already exists") from exc
        await s.refresh(row)
    return json_ok(_canned(row), status=201)


async def _load_canned(s: AsyncSession, ctx: Ctx) -> CannedResponse:
    ident = ctx.path_id("canned response")
    row = await s.get(CannedResponse, ident)
    if row is None:
        raise NotFound(f"canned response {ident} not found")
    ensure_visible(ctx.me, row.project_id, "canned response", ident)
    return row


async def patch_canned(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(CannedPatch)
    async with ctx.core.sessions() as s:
        row = await _load_canned(s, ctx)
        if body.title is not None:
            row.title = body.title
        if body.body is not None:
            row.body = body.body
        row.updated_by = actor(ctx.me)
        try:
            await s.commit()
        except IntegrityError as exc:
            raise Conflict(f"a canned response titled {body.title!r} already exists") from exc
        await s.refresh(row)
    return json_ok(_canned(row))


async def delete_canned(ctx: Ctx) -> web.StreamResponse:
    async with ctx.core.sessions() as s:
        await s.delete(await _load_canned(s, ctx))
        await s.commit()
    return web.Response(status=204)


async def list_wrapups(ctx: Ctx) -> web.StreamResponse:
    stmt = scoped(select(WrapupCode).order_by(WrapupCode.code), WrapupCode.project_id, ctx.me)
    async with ctx.core.readers() as s:
        rows = (await s.scalars(stmt)).all()
    return json_ok({"items": [_wrapup(w) for w in rows]})


async def create_wrapup(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(WrapupIn)
    async with ctx.core.sessions() as s:
        pid = await _project_id(s, ctx.me, body.project)
        row = WrapupCode(project_id=pid, code=body.code, label=body.label)
        s.add(row)
        try:
            await s.commit()
        except IntegrityError as exc:
            raise Conflict(f"wrap-up code {body.code!r} already exists") from exc
        await s.refresh(row)
    return json_ok(_wrapup(row), status=201)


async def delete_wrapup(ctx: Ctx) -> web.StreamResponse:
    ident = ctx.path_id("wrap-up code")
    async with ctx.core.sessions() as s:
        row = await s.get(WrapupCode, ident)
        if row is None:
            raise NotFound(f"wrap-up code {ident} not found")
        ensure_visible(ctx.me, row.project_id, "wrap-up code", ident)
        await s.delete(row)
        await s.commit()
    return web.Response(status=204)

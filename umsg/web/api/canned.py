"""Canned responses and wrap-up codes: every agent reads them, staff manage them.

Canned bodies are templates with `{{contact.name}}`, `{{agent.name}}`... left in
place; the inbox fills them in when the agent inserts one (into a text field,
never as markup), so the stored text is what an admin wrote.

The queries and writes are `umsg.canned` (`CannedResponses`, `WrapupCodes`); this module
parses, authorises (`ensure_visible`, the caller's projects) and serialises.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field

from storage.models import CannedResponse, WrapupCode
from umsg.canned import CannedResponses, Guard, UnknownProject, WrapupCodes
from umsg.tokens import Principal
from umsg.web import serialize
from umsg.web.auth import actor, ensure_visible
from umsg.web.endpoints import Ctx, json_ok
from umsg.web.errors import HttpProblem, invalid
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


def _responses(ctx: Ctx) -> CannedResponses:
    return CannedResponses(ctx.core.sessions, ctx.core.readers)


def _codes(ctx: Ctx) -> WrapupCodes:
    return WrapupCodes(ctx.core.sessions, ctx.core.readers)


def _visible_to(principal: Principal, kind: str, ident: int) -> Guard:
    def guard(project_id: int | None) -> None:
        ensure_visible(principal, project_id, kind, ident)
    return guard


def _unknown_project(exc: UnknownProject) -> HttpProblem:
    return invalid([{"field": "body.project", "message": str(exc)}])


def _canned(c: CannedResponse) -> dict[str, Any]:
    return {"id": c.id, "project_id": c.project_id, "title": c.title, "body": c.body,
            "updated_by": c.updated_by, "updated_at": serialize.ts(c.updated_at)}


def _wrapup(w: WrapupCode) -> dict[str, Any]:
    return {"id": w.id, "project_id": w.project_id, "code": w.code, "label": w.label}


async def list_canned(ctx: Ctx) -> web.StreamResponse:
    rows = await _responses(ctx).all(ctx.me.project_ids)
    return json_ok({"items": [_canned(c) for c in rows]})


async def create_canned(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(CannedIn)
    try:
        row = await _responses(ctx).create(body.project, body.title, body.body, ctx.me.sees, by=actor(ctx.me))
    except UnknownProject as exc:
        raise _unknown_project(exc) from exc
    return json_ok(_canned(row), status=201)


async def patch_canned(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(CannedPatch)
    ident = ctx.path_id("canned response")
    row = await _responses(ctx).update(ident, _visible_to(ctx.me, "canned response", ident),
                                       title=body.title, body=body.body, by=actor(ctx.me))
    return json_ok(_canned(row))


async def delete_canned(ctx: Ctx) -> web.StreamResponse:
    ident = ctx.path_id("canned response")
    await _responses(ctx).delete(ident, _visible_to(ctx.me, "canned response", ident))
    return web.Response(status=204)


async def list_wrapups(ctx: Ctx) -> web.StreamResponse:
    rows = await _codes(ctx).all(ctx.me.project_ids)
    return json_ok({"items": [_wrapup(w) for w in rows]})


async def create_wrapup(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(WrapupIn)
    try:
        row = await _codes(ctx).create(body.project, body.code, body.label, ctx.me.sees)
    except UnknownProject as exc:
        raise _unknown_project(exc) from exc
    return json_ok(_wrapup(row), status=201)


async def delete_wrapup(ctx: Ctx) -> web.StreamResponse:
    ident = ctx.path_id("wrap-up code")
    await _codes(ctx).delete(ident, _visible_to(ctx.me, "wrap-up code", ident))
    return web.Response(status=204)

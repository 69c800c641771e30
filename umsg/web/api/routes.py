"""Channel routes over HTTP: read a project's table, replace it, and test a sample against it.

`PUT` is optimistic: the caller names the version it read (`If-Match: "3"`
or `"version": 3` in the body; 0 while nothing is stored). A stale version is
a 409, an invalid table a 422 whose fields name the offending routes, e.g.
`body.routes[3] (sales-de)`. A saved table is used by this process's next
message at once and by every other process within a couple of seconds
(umsg.routes.book), without a restart. The queries and the write are
`umsg.routes.admin.RouteTables`; this module parses, authorises and serialises.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from umsg.errors import ConfigError
from umsg.routes.admin import ProjectRef, RouteTables
from umsg.routes.probe import make_sample
from umsg.web.auth import actor
from umsg.web.endpoints import ADMIN, API, STAFF, Ctx, Endpoint, json_ok
from umsg.web.errors import HttpProblem, bad_request, invalid

SLUG = r"^[a-z0-9][a-z0-9_-]{0,63}$"
MAX_ROUTES = 1000


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RoutesQuery(_In):
    project: str | None = Field(default=None, pattern=SLUG,
                                description="project slug (default: the service's)")


class RoutesPut(_In):
    """A project's whole route table, in order; the last route may be a catch-all default."""

    project: str | None = Field(default=None, pattern=SLUG)
    version: int | None = Field(default=None, ge=0, description="the version read (0: none stored yet)")
    routes: list[dict[str, Any]] = Field(max_length=MAX_ROUTES)


class RouteTestIn(_In):
    """A sample item; `routes` tests a candidate table instead of the one in force."""

    project: str | None = Field(default=None, pattern=SLUG)
    channel: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    sender: str = Field(alias="from", min_length=1, max_length=320)
    to: str | list[str] = Field(default_factory=list)
    subject: str | None = Field(default=None, max_length=2000)
    text: str | None = Field(default=None, max_length=1_000_000)
    meta: dict[str, Any] = Field(default_factory=dict)
    attributes: dict[str, Any] | None = Field(
        default=None, description="contact attributes; default: those of the contact that owns the sender")
    at: AwareDatetime | None = Field(default=None, description="arrival time (default: now)")
    routes: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_ROUTES)


def _tables(ctx: Ctx) -> RouteTables:
    return RouteTables(ctx.core.routes, ctx.core.sessions, ctx.core.readers, ctx.core.events)


async def _project(ctx: Ctx, slug: str | None) -> ProjectRef:
    return await _tables(ctx).project(slug or ctx.core.settings.project, ctx.me.sees)


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


def _if_match(request: web.Request) -> int | None:
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    text = raw.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise bad_request(f"If-Match must be a route table version such as \"3\", not {raw!r}")
    return int(text)


def _fields(problems: list[tuple[str, str]], prefix: str = "body") -> list[dict[str, str]]:
    return [{"field": f"{prefix}.{key}" if key else prefix, "message": reason} for key, reason in problems]


async def get_routes(ctx: Ctx) -> web.StreamResponse:
    q = ctx.query_as(RoutesQuery)
    project = await _project(ctx, q.project)
    eff = await _tables(ctx).effective(project)
    body = {"project": project.slug, "version": eff.version, "source": eff.source, "routes": eff.routes,
            "implicit_default": eff.table.routes[-1].builtin, "order": list(eff.table.names())}
    return web.json_response(body, headers=_etag(eff.version))


async def put_routes(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(RoutesPut)
    project = await _project(ctx, body.project)
    header = _if_match(ctx.request)
    if header is not None and body.version is not None and header != body.version:
        raise bad_request(f"If-Match ({header}) and body.version ({body.version}) disagree")
    expected = header if header is not None else body.version
    if expected is None:
        raise HttpProblem(428, "precondition_required", "name the version you read: If-Match: \"N\" "
                          "or \"version\": N (0 when none is stored)")
    try:
        version, eff = await _tables(ctx).save(project, body.routes, expected, by=actor(ctx.me))
    except ConfigError as exc:
        raise invalid(_fields(exc.problems)) from exc
    saved = {"project": project.slug, "version": version, "source": eff.source, "routes": eff.routes}
    return web.json_response(saved, headers=_etag(version))


async def test_routes(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(RouteTestIn)
    project = await _project(ctx, body.project)
    sample = make_sample(channel=body.channel, sender=body.sender, to=body.to, at=body.at,
                         subject=body.subject, text=body.text, meta=body.meta, attributes=body.attributes,
                         default_region=ctx.core.settings.ingest.default_region, channels=ctx.core.channels)
    try:
        traced = await _tables(ctx).trace(project, sample, candidate=body.routes,
                                          own_attributes=body.attributes is not None)
    except ConfigError as exc:
        raise invalid(_fields(exc.problems)) from exc
    out = traced.explanation.to_dict()
    out.update(project=project.slug, version=traced.version, source=traced.source,
               sender=traced.explanation.sample.sender)
    return json_ok(out)


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", f"{API}/routes", get_routes, "A project's channel routes, in order", "routes",
             roles=STAFF, query=RoutesQuery, responses={200: "the table in force (ETag: its version)",
                                                         404: "no such project for the caller"}),
    Endpoint("PUT", f"{API}/routes", put_routes, "Replace a project's channel routes", "routes", roles=ADMIN,
             body=RoutesPut, responses={200: "saved; the new version", 404: "no such project for the caller",
                                        409: "the table changed since the version given",
                                        422: "an invalid table; the fields name the routes",
                                        428: "no version given (If-Match or body.version)"},
             description="Optimistic: send the version you read as If-Match or body.version. Routes that an "
             "earlier route always wins over are refused. Takes effect without a restart."),
    Endpoint("POST", f"{API}/routes/test", test_routes, "Explain which route a sample item takes", "routes",
             roles=STAFF, body=RouteTestIn, responses={200: "the matching route and, per filter, why each "
                                                          "earlier route did not match",
                                                       404: "no such project for the caller"}),
)

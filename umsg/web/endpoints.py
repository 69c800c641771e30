"""The declarative route table: one `Endpoint` per operation.

The same tuple registers the aiohttp routes, enforces roles, parses bodies
and query strings, and generates the OpenAPI document (umsg.web.openapi), so
the document cannot drift from what the server does. Handlers receive a
`Ctx` with the core, the caller and the already-validated input.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute
from pydantic import BaseModel

from umsg.tokens import Principal
from umsg.web.errors import forbidden, unauthorized
from umsg.web.keys import CORE, PRINCIPAL
from umsg.web.parsing import decode_json, parse_id, validate, validate_query

if TYPE_CHECKING:
    from umsg.core import Core

M = TypeVar("M", bound=BaseModel)

API = "/api/v1"
ALL_ROLES: frozenset[str] = frozenset({"admin", "supervisor", "agent"})
STAFF: frozenset[str] = frozenset({"admin", "supervisor"})
ADMIN: frozenset[str] = frozenset({"admin"})

PUBLIC_ROUTES: web.AppKey[set[AbstractRoute]] = web.AppKey("umsg_public_routes")


@dataclass
class Ctx:
    """What a handler gets: the request, the core, the caller and validated input."""

    request: web.Request
    core: Core
    principal: Principal | None
    raw: bytes = b""
    body: BaseModel | None = None
    query: BaseModel | None = None

    @property
    def me(self) -> Principal:
        if self.principal is None:  # only public endpoints run without one
            raise unauthorized("this endpoint needs a bearer token")
        return self.principal

    def body_as(self, model: type[M]) -> M:
        if not isinstance(self.body, model):
            raise TypeError(f"endpoint declares no {model.__name__} body")
        return self.body

    def query_as(self, model: type[M]) -> M:
        if not isinstance(self.query, model):
            raise TypeError(f"endpoint declares no {model.__name__} query")
        return self.query

    def path_id(self, kind: str, name: str = "id") -> int:
        return parse_id(self.request.match_info[name], kind)


HandlerFn = Callable[[Ctx], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Endpoint:
    """One operation: where it lives, who may call it, what it takes and answers."""

    method: str
    path: str
    handler: HandlerFn
    summary: str
    tag: str
    roles: frozenset[str] = ALL_ROLES
    auth: bool = True
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    responses: Mapping[int, str] = field(default_factory=lambda: {200: "OK"})
    media_type: str = "application/json"
    description: str = ""

    @property
    def operation_id(self) -> str:
        return self.handler.__name__.lstrip("_")


ENDPOINTS: web.AppKey[tuple[Endpoint, ...]] = web.AppKey("umsg_endpoints")


def _adapt(ep: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        principal = request.get(PRINCIPAL)
        if ep.auth:
            if principal is None:
                raise unauthorized("this endpoint needs a bearer token")
            if principal.role not in ep.roles:
                need = " or ".join(sorted(ep.roles))
                raise forbidden(
                    f"{ep.method} {ep.path} needs role {need}; this token has role {principal.role}"
                )
        ctx = Ctx(request=request, core=request.app[CORE], principal=principal)
        if ep.query is not None:
            ctx.query = validate_query(ep.query, request.query)
        if ep.body is not None:
            # read() enforces client_max_size and raises 413 past it.
            ctx.raw = await request.read()
            ctx.body = validate(ep.body, decode_json(ctx.raw))
        return await ep.handler(ctx)

    handle.__name__ = ep.operation_id
    return handle


def register(app: web.Application, endpoints: tuple[Endpoint, ...]) -> None:
    """Add every endpoint to the router; a repeated operation id is a programming error."""
    seen: set[str] = set()
    public: set[AbstractRoute] = set()
    for ep in endpoints:
        if ep.operation_id in seen:
            raise ValueError(f"duplicate operation id {ep.operation_id}")
        seen.add(ep.operation_id)
        route = app.router.add_route(ep.method, ep.path, _adapt(ep), name=ep.operation_id)
        if not ep.auth:
            public.add(route)
    app[PUBLIC_ROUTES] = public


def json_ok(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)

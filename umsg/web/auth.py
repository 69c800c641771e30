"""Bearer-token authentication for the `/api/` routes, and project scoping helpers.

The token comes in `Authorization: Bearer ...`; only the events websocket
also accepts `?access_token=`, because browsers cannot set headers on a
websocket. Requests that match no route are left alone so they get their
404/405 rather than a 401 for a path that does not exist.
"""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler
from sqlalchemy import Select

from umsg.errors import NotFound
from umsg.tokens import Principal, authenticate
from umsg.web.endpoints import PUBLIC_ROUTES
from umsg.web.errors import unauthorized
from umsg.web.keys import CORE, PRINCIPAL

WS_PATH = "/api/v1/events"

S = TypeVar("S", bound=Select[Any])


def _token_from(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise unauthorized("the Authorization header must be 'Bearer <token>'", invalid_token=True)
        return value.strip()
    if "access_token" in request.query:
        if request.path != WS_PATH:
            raise unauthorized(
                "access_token in the query string is accepted only on the websocket; "
                "send 'Authorization: Bearer <token>'"
            )
        return request.query["access_token"]
    return None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Attach the caller's Principal to every matched `/api/` request, or answer 401."""
    match = request.match_info
    if (
        not request.path.startswith("/api/")
        or match.http_exception is not None
        or match.route in request.app[PUBLIC_ROUTES]
    ):
        return await handler(request)
    token = _token_from(request)
    if token is None:
        raise unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    principal = await authenticate(request.app[CORE].sessions, token)
    if principal is None:
        raise unauthorized("the bearer token is unknown or revoked, or has expired", invalid_token=True)
    request[PRINCIPAL] = principal
    return await handler(request)


def scoped(stmt: S, column: Any, principal: Principal) -> S:
    """Restrict a query to the caller's projects (no-op for callers who see all)."""
    if principal.project_ids is None:
        return stmt
    return stmt.where(column.in_(sorted(principal.project_ids)))


def ensure_visible(principal: Principal, project_id: int | None, kind: str, ident: int) -> None:
    """An object in a project the caller does not belong to does not exist for them."""
    if not principal.sees(project_id):
        raise NotFound(f"{kind} {ident} not found")


def actor(principal: Principal) -> str:
    """How audit rows and events name the caller."""
    if principal.agent_id is not None:
        return f"agent:{principal.agent_id}"
    return f"token:{principal.token_id}"

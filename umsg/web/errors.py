"""Every failure becomes one JSON shape a person can act on.

`{"error": {"status": N, "code": "...", "message": "...", "request_id": "..."}}`
(validation failures add `fields`). The middleware maps the gateway's own
errors (umsg.errors), aiohttp's HTTP exceptions (unknown route, wrong method,
oversize body) and anything unexpected; the last is logged with the request
id and answered without internals, so nothing a client sends can surface a
traceback.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from sqlalchemy import exc as sa_exc

from umsg.errors import Conflict, NotFound, PermanentError, TransientError, UmsgError
from umsg.outbound.authority import OutboundRefused
from umsg.web.keys import CORE, REQUEST_ID

log = logging.getLogger(__name__)

# How long a client should wait before retrying after a transient failure.
RETRY_AFTER_SECONDS = 5
# Headers of aiohttp's own exceptions that carry meaning for the client.
_KEEP_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")


class HttpProblem(UmsgError):
    """An error the web layer raises with its HTTP status and a stable code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        fields: Sequence[Mapping[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.fields = list(fields or [])


def unauthorized(message: str, *, invalid_token: bool = False) -> HttpProblem:
    challenge = 'Bearer realm="umsg"'
    if invalid_token:
        challenge += ', error="invalid_token"'
    return HttpProblem(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


def forbidden(message: str) -> HttpProblem:
    return HttpProblem(403, "forbidden", message)


def bad_request(message: str) -> HttpProblem:
    return HttpProblem(400, "bad_request", message)


def invalid(fields: Sequence[Mapping[str, str]]) -> HttpProblem:
    """422 naming every field that failed validation."""
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
    if len(fields) > 5:
        summary += f"; and {len(fields) - 5} more"
    return HttpProblem(422, "validation_failed", f"invalid request: {summary}", fields=fields)


def error_response(
    request: web.Request,
    status: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    fields: Sequence[Mapping[str, str]] | None = None,
) -> web.Response:
    body: dict[str, Any] = {"status": status, "code": code, "message": message}
    if fields:
        body["fields"] = list(fields)
    rid = request.get(REQUEST_ID)
    if rid:
        body["request_id"] = rid
    return web.json_response({"error": body}, status=status, headers=dict(headers or {}))


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> web.Response:
    headers = {k: exc.headers[k] for k in _KEEP_HEADERS if k in exc.headers}
    if exc.status == 404:
        msg = f"no such resource: {request.method} {request.path}"
        if request.path.startswith("/api/"):
            msg += " (the routes are listed in /api/v1/openapi.json)"
        return error_response(request, 404, "not_found", msg, headers=headers)
    if exc.status == 405:
        allowed = headers.get("Allow", "")
        msg = f"{request.method} is not allowed on {request.path}" + (f"; use {allowed}" if allowed else "")
        return error_response(request, 405, "method_not_allowed", msg, headers=headers)
    if exc.status == 413:
        limit = request.app[CORE].settings.http.max_body_bytes
        msg = f"request body is larger than the limit of {limit} bytes"
        return error_response(request, 413, "payload_too_large", msg, headers=headers)
    code = (exc.reason or "error").lower().replace(" ", "_").replace("-", "_")
    return error_response(request, exc.status, code, exc.text or exc.reason, headers=headers)


def _from_umsg_error(request: web.Request, exc: UmsgError) -> web.Response | None:
    message = str(exc) or exc.__class__.__name__
    if isinstance(exc, HttpProblem):
        return error_response(
            request, exc.status, exc.code, exc.message, headers=exc.headers, fields=exc.fields
        )
    if isinstance(exc, NotFound):
        return error_response(request, 404, "not_found", message)
    if isinstance(exc, Conflict):
        return error_response(request, 409, "conflict", message)
    if isinstance(exc, OutboundRefused):
        # The outbound authority: the caller may not send this (another project's channel,
        # an address that is not the contact's, a sender that is not the channel's).
        return error_response(request, 403, "forbidden", message)
    if isinstance(exc, PermanentError):
        return error_response(request, 422, "rejected", message)
    if isinstance(exc, TransientError):
        return _unavailable(request, message)
    return None


def _unavailable(request: web.Request, message: str) -> web.Response:
    return error_response(
        request,
        503,
        "unavailable",
        f"{message} (temporary; retry in {RETRY_AFTER_SECONDS} s)",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every exception into the JSON error shape and tag responses with a request id."""
    # Our own id, never the client's: it is what the log line is keyed by.
    rid = uuid.uuid4().hex[:16]
    request[REQUEST_ID] = rid
    resp: web.StreamResponse
    try:
        resp = await handler(request)
    except asyncio.CancelledError:
        raise
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        resp = _from_http_exception(request, exc)
    except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError, ConnectionError) as exc:
        # Lost connection, lock timeout, exhausted pool: the store, not the request, is at fault.
        log.warning("request %s: store unavailable: %s", rid, exc)
        resp = _unavailable(request, "the store is unavailable")
    except sa_exc.IntegrityError as exc:
        # A concurrent change took the same unique name or removed a referenced row.
        log.warning("request %s: integrity error: %s", rid, exc)
        resp = error_response(
            request, 409, "conflict", "the change conflicts with the current data; reload and retry"
        )
    except sa_exc.DataError as exc:
        # Validation should have caught it; if not, it is still the input's fault, not a 500.
        log.warning("request %s: value rejected by the store: %s", rid, exc)
        resp = error_response(request, 422, "rejected", "a value is out of range or too long for the store")
    except UmsgError as exc:
        mapped = _from_umsg_error(request, exc)
        if mapped is None:
            log.exception("request %s: %s %s failed", rid, request.method, request.path)
            mapped = _internal(request, rid)
        resp = mapped
    except Exception:
        log.exception("request %s: %s %s failed unexpectedly", rid, request.method, request.path)
        resp = _internal(request, rid)
    if not resp.prepared:
        resp.headers["X-Request-Id"] = rid
    return resp


def _internal(request: web.Request, rid: str) -> web.Response:
    return error_response(
        request,
        500,
        "internal",
        f"the server failed to handle this request; the operators can find it by request id {rid}",
    )

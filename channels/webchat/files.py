"""Files over HTTP: the visitor's upload (`POST upload`) and downloads of chat attachments
(`GET file/<part id>`), both authenticated by the visitor token, plus CORS for allowed pages.

Upload: the raw file is the body, its media type the `Content-Type`; query `client_id`
(the message's client id, so a retried upload is not stored twice) and `name` (file name);
header `X-Umsg-Visitor: <token>`. Answers 201 with the same JSON as the socket's `ack`,
413 over `max_upload_bytes`, 415 for a type outside `upload_types`, 401 for a bad token.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web

from channels.webchat.ids import CLIENT_ID_RE, safe_filename
from channels.webchat.inbound import Visitor, to_inbound
from channels.webchat.limits import RateLimited
from channels.webchat.runtime import ChatRuntime, client_address
from umsg.errors import PermanentError
from umsg.model import InboundPart

TOKEN_HEADER = "X-Umsg-Visitor"
_CHUNK = 64 * 1024
# Part ids are 64-bit row ids: a longer number is no id of ours (and would overflow the query).
_MAX_PART_ID = 2**63 - 1


def _problem(status: int, code: str, message: str, request: web.Request, rt: ChatRuntime) -> web.Response:
    return web.json_response({"type": "error", "code": code, "message": message}, status=status,
                             headers=cors_headers(request, rt))


def cors_headers(request: web.Request, rt: ChatRuntime) -> dict[str, str]:
    origin = request.headers.get("Origin")
    if origin is None or not rt.origin_ok(request):
        return {}
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
            "Access-Control-Allow-Headers": f"Content-Type, {TOKEN_HEADER}",
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS", "Access-Control-Max-Age": "600"}


async def preflight(rt: ChatRuntime, request: web.Request) -> web.StreamResponse:
    if not rt.origin_ok(request):
        raise web.HTTPForbidden(text="this page's origin may not use the chat")
    return web.Response(status=204, headers=cors_headers(request, rt))


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is longer than `limit` (never buffered beyond it)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks, size = [], 0
    while chunk := await request.content.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def upload(rt: ChatRuntime, request: web.Request) -> web.StreamResponse:
    if not rt.origin_ok(request):
        raise web.HTTPForbidden(text="this page's origin may not use the chat")
    vid = rt.visitor_from(request.headers.get(TOKEN_HEADER))
    if vid is None:
        return _problem(401, "bad_token", f"send the visitor token in {TOKEN_HEADER}", request, rt)
    client_id = request.query.get("client_id", "")
    if not CLIENT_ID_RE.match(client_id):
        return _problem(400, "invalid", "client_id must be 1-64 letters, digits, - or _", request, rt)
    try:
        rt.gates.upload.check(rt.refusals, visitor=vid, address=client_address(request))
    except RateLimited as exc:
        wait = max(1, round(exc.retry_after + 0.5))
        resp = _problem(429, "rate_limited", f"too many uploads; try again in {wait} s", request, rt)
        resp.headers["Retry-After"] = str(wait)
        return resp
    media_type = (request.content_type or "application/octet-stream").lower()
    if not rt.settings.upload_allowed(media_type):
        allowed = ", ".join(rt.settings.upload_types)
        return _problem(415, "type", f"files of type {media_type} are not accepted (allowed: {allowed})", request, rt)
    limit = rt.settings.max_upload_bytes
    data = await _read_limited(request, limit)
    if data is None:
        return _problem(413, "too_large", f"files are limited to {limit} bytes", request, rt)
    if not data:
        return _problem(400, "empty", "the file is empty", request, rt)
    name = safe_filename(request.query.get("name"))
    contact = await rt.store.contact(vid)
    visitor = Visitor(vid, contact.name if contact else None, contact.email if contact else None)
    part = InboundPart(media_type=media_type, data=data, filename=name)
    inbound = to_inbound(visitor, client_id=client_id, text=None, channel=rt.channel, scope=rt.scope,
                         project=rt.settings.project, part=part)
    try:
        result = await rt.ingest(inbound)
    except PermanentError as exc:
        return _problem(422, "rejected", str(exc), request, rt)
    rt.hub.watch(vid, [result.conversation_id])
    frame = await rt.store.message(result.message_id)
    if frame is not None and not result.duplicate:
        await rt.hub.to_visitor(vid, frame)
    ack: dict[str, Any] = {"type": "ack", "client_id": client_id, "id": result.message_id,
                           "conversation_id": result.conversation_id, "duplicate": result.duplicate,
                           "message": frame}
    return web.json_response(ack, status=201, headers=cors_headers(request, rt))


async def download(rt: ChatRuntime, request: web.Request) -> web.StreamResponse:
    """A chat attachment for the visitor whose conversation it is in (token in `?token=`)."""
    vid = rt.visitor_from(request.query.get("token"))
    digits = request.match_info["part"]
    # Bounded before int(): a huge digit string is no id of ours, and converting it costs CPU.
    part_id = int(digits) if 0 < len(digits) <= 19 else 0
    if not 0 < part_id <= _MAX_PART_ID:
        raise web.HTTPNotFound()
    contact = await rt.store.contact(vid) if vid else None
    part = await rt.store.visitor_part(part_id, contact.contact_id) if contact else None
    if part is None:
        raise web.HTTPNotFound()
    try:
        data = await rt.services.blobs.get(part.sha256)
    except FileNotFoundError:
        raise web.HTTPNotFound() from None
    name = safe_filename(part.filename)
    ascii_name = name.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
    headers = {
        # Never rendered as a page of our origin: downloaded, not sniffed, sandboxed if opened.
        "Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "Cache-Control": "private, max-age=300",
    }
    return web.Response(body=data, content_type=part.media_type, headers=headers)

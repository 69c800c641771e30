"""Messages: submitting through the built-in `api` channel, reading one, fetching part content.

Reads go through `umsg.conversations.Conversations`; a submission goes to ingest.
"""

from __future__ import annotations

import mimetypes
import re
from functools import partial
from urllib.parse import quote

from aiohttp import web

from umsg.conversations import Conversations
from umsg.errors import NotFound
from umsg.model import Address, Inbound, InboundPart, ThreadHints
from umsg.web import serialize
from umsg.web.auth import ensure_visible
from umsg.web.endpoints import Ctx, json_ok
from umsg.web.errors import forbidden
from umsg.web.schemas import MessageIn

_SAFE_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(;[ -~]*)?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _conversations(ctx: Ctx) -> Conversations:
    return Conversations(ctx.core.sessions, ctx.core.events, ctx.core.readers)


async def post_message(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(MessageIn)
    me = ctx.me
    project = body.project or ctx.core.settings.project
    if me.project_ids is not None:
        pid = await _conversations(ctx).project_id(project)
        if pid is None or pid not in me.project_ids:
            raise NotFound(f"project '{project}' not found")
    instance = ctx.core.channels.get(body.channel)
    if instance is not None and not instance.serves(project):
        # Its replies would leave through another project's channel, which the outbound
        # authority refuses: do not let such a conversation begin.
        raise forbidden(f"channel '{body.channel}' does not serve project '{project}'")
    inbound = Inbound(
        channel=body.channel,
        sender=Address(kind=body.sender.kind, value=body.sender.value, name=body.sender.name),
        recipients=tuple(body.to),
        dedupe_key=body.dedupe_key,
        # The exact bytes the client sent are the raw original we keep.
        raw=ctx.raw,
        raw_media_type="application/json",
        subject=body.subject,
        text=body.text,
        html=body.html,
        parts=tuple(
            InboundPart(media_type=a.media_type, data=a.data_base64, filename=a.filename)
            for a in body.attachments
        ),
        thread=ThreadHints(
            own=tuple(body.thread.own),
            refs=tuple(body.thread.refs),
            conversation_token=body.thread.conversation_token,
            sticky=body.thread.sticky,
        ),
        project=project,
        meta=dict(body.meta),
    )
    # ingest returns only after its transaction committed, so a 201 is a durable ack.
    result = await ctx.core.ingest.ingest(inbound)
    data = {
        "message_id": result.message_id,
        "conversation_id": result.conversation_id,
        "contact_id": result.contact_id,
        "duplicate": result.duplicate,
        "queue_item_id": result.queue_item_id,
        "route": result.route,
        "conversion_errors": list(result.conversion_errors),
    }
    return json_ok(data, status=200 if result.duplicate else 201)


async def get_message(ctx: Ctx) -> web.StreamResponse:
    message_id = ctx.path_id("message")
    guard = partial(ensure_visible, ctx.me, kind="message", ident=message_id)
    msg, parts = await _conversations(ctx).message(message_id, guard)
    return json_ok(serialize.message(msg, parts))


def content_disposition(filename: str | None, part_id: int, media_type: str) -> str:
    """`attachment` with an ASCII fallback name and the exact name in RFC 6266 `filename*`."""
    if filename:
        name = _CONTROL.sub("", filename).replace("/", "_").replace("\\", "_").strip() or f"part-{part_id}"
    else:
        ext = mimetypes.guess_extension(media_type.split(";", 1)[0].strip()) or ".bin"
        name = f"part-{part_id}{ext}"
    fallback = name.encode("ascii", "replace").decode("ascii").replace('"', "'").replace("?", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


async def get_part_content(ctx: Ctx) -> web.StreamResponse:
    part_id = ctx.path_id("part")
    part = await _conversations(ctx).part(part_id, partial(ensure_visible, ctx.me, kind="part", ident=part_id))
    try:
        path = await ctx.core.blobs.local_path(part.sha256)
    except FileNotFoundError:
        raise NotFound(f"the content of part {part_id} is missing from the blob store") from None
    media_type = part.media_type if _SAFE_MEDIA_TYPE.match(part.media_type) else "application/octet-stream"
    headers = {
        "Content-Type": media_type,
        "Content-Disposition": content_disposition(part.filename, part.id, media_type),
        # Customer-supplied HTML or SVG must not run as our origin if opened directly.
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
    }
    return web.FileResponse(path, headers=headers)

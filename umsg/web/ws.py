"""The live event feed: a websocket streaming the event log to agents' browsers.

A client connects to `/api/v1/events?after=N` and first receives every event
after N it may see (so a reconnect resumes without gaps), in id order, then
live ones. With `batch=true` every frame is a JSON array of the events that
were ready together (oldest first): under load a busy feed then costs one frame
and one socket write per wake-up instead of one per event, which is what the
agents' inbox uses. Events come from the shared log, not from in-process callbacks: every
feed of the process is a subscription to the one reader of `EventLog.subscribe`,
which is woken at once by changes made in this process and polls for those
committed by other processes. Messages from the client: `{"type": "ping"}` is answered with
`{"type": "pong", "last_event_id": ...}`.

Bounded: one signed-in user (an agent, else the token) holds at most `http.max_feeds_per_user`
feeds at once (more answer 429 before the upgrade), a client frame may be at most
`MAX_FRAME_BYTES`, and a client that stops answering the 30 s heartbeat is dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from dataclasses import dataclass

from aiohttp import WSCloseCode, WSMsgType, web

from storage.models import Event
from umsg.events.fanout import Subscription
from umsg.web import serialize
from umsg.web.endpoints import Ctx
from umsg.web.errors import HttpProblem
from umsg.web.schemas import EventsQuery

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
# The client only ever sends pings; anything near this size is abuse, not a ping.
MAX_FRAME_BYTES = 4096
# Each feed's websocket remembers whose it is, so the per-user cap needs no state of its own.
_OWNER: web.ResponseKey[str] = web.ResponseKey("umsg_feed_owner", str)

OPEN_SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("umsg_open_sockets")


@dataclass
class _Feed:
    ws: web.WebSocketResponse
    sub: Subscription
    # Sends come from the pump and from ping replies; one frame at a time.
    lock: asyncio.Lock
    # The pump may be cancelled only while it waits: cancelling a database
    # call midway leaves the driver to close its connection in a stray task.
    waiting: bool = False
    stopping: bool = False
    # Send the events of one wake-up as one JSON array frame.
    batch: bool = False


async def _send(feed: _Feed, data: object) -> None:
    await _send_text(feed, json.dumps(data))


async def _send_text(feed: _Feed, text: str) -> None:
    async with feed.lock:
        await feed.ws.send_str(text)


def _event_text(ev: Event) -> str:
    return json.dumps(serialize.event(ev))


async def _pump(feed: _Feed) -> None:
    try:
        while not (feed.ws.closed or feed.stopping):
            # Usually an in-memory wait; a subscriber behind the shared buffer queries the store.
            feed.waiting = True
            try:
                batch = await feed.sub.next(POLL_SECONDS)
            finally:
                feed.waiting = False
            if feed.batch and batch:
                if feed.stopping:
                    return
                # Each event is serialised once for every socket of the process; only the join is per socket.
                await _send_text(feed, "[" + ",".join(feed.sub.rendered(ev, _event_text) for ev in batch) + "]")
                continue
            for ev in batch:
                if feed.stopping:
                    return
                # Serialised once per event for every socket of the process.
                await _send_text(feed, feed.sub.rendered(ev, _event_text))
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("event feed failed; closing the websocket so the client reconnects")
        await feed.ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"event feed failed; reconnect with after")


async def _stop(feed: _Feed, pump: asyncio.Task[None]) -> None:
    """End the pump; it never outlives the handler, even when the handler is cancelled."""
    feed.stopping = True
    if feed.waiting and not feed.sub.querying:
        pump.cancel()
    try:
        # wait() neither raises the pump's outcome nor cancels the pump if we are cancelled.
        await asyncio.wait({pump})
    except asyncio.CancelledError:
        # The connection went away while the pump is inside a query: let that
        # finish, or the driver tears the connection down in a stray task.
        await asyncio.wait({pump})
        raise
    finally:
        if pump.done() and not pump.cancelled():
            pump.exception()  # a reset connection is expected here; mark it seen


async def _answer(feed: _Feed, raw: str) -> None:
    try:
        data = json.loads(raw)
    except ValueError:
        await _send(feed, {"type": "error", "message": 'messages must be JSON, e.g. {"type": "ping"}'})
        return
    if isinstance(data, dict) and data.get("type") == "ping":
        await _send(feed, {"type": "pong", "last_event_id": feed.sub.cursor})
    else:
        await _send(feed, {"type": "error", "message": 'unknown message; the feed accepts {"type": "ping"}'})


async def events_feed(ctx: Ctx) -> web.StreamResponse:
    q = ctx.query_as(EventsQuery)
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_FRAME_BYTES)
    if not ws.can_prepare(ctx.request).ok:
        raise HttpProblem(
            426,
            "upgrade_required",
            "this endpoint is a websocket; connect with Upgrade: websocket",
            headers={"Upgrade": "websocket"},
        )
    owner = f"agent:{ctx.me.agent_id}" if ctx.me.agent_id is not None else f"token:{ctx.me.token_id}"
    limit = ctx.core.settings.http.max_feeds_per_user
    held = sum(1 for s in ctx.request.app[OPEN_SOCKETS] if not s.closed and s.get(_OWNER) == owner)
    if held >= limit:
        raise HttpProblem(429, "too_many_feeds",
                          f"at most {limit} live event feeds per user; close one (every open tab holds one)",
                          headers={"Retry-After": "5"})
    ws[_OWNER] = owner
    cursor = q.after if q.after is not None else await ctx.core.events.latest_id()
    await ws.prepare(ctx.request)
    ctx.request.app[OPEN_SOCKETS].add(ws)
    sub = await ctx.core.events.subscribe(cursor, ctx.me.project_ids)
    feed = _Feed(ws=ws, sub=sub, lock=asyncio.Lock(), batch=q.batch)
    pump = asyncio.create_task(_pump(feed))
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await _answer(feed, msg.data)
            elif msg.type == WSMsgType.BINARY:
                await _send(feed, {"type": "error", "message": "binary frames are not accepted"})
    except ConnectionResetError:
        pass  # the client vanished mid-reply; the response is already under way, nothing to answer
    finally:
        try:
            await _stop(feed, pump)
        finally:
            await sub.aclose()
    return ws


async def close_sockets(app: web.Application) -> None:
    """On shutdown, tell every client to reconnect elsewhere instead of hanging up silently."""
    sockets = app[OPEN_SOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")

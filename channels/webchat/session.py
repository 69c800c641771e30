"""The customer websocket (`GET /channels/<instance>/ws`): one visitor's tab, frame by frame.

The first frame must be `hello`; it proves (or is given) a visitor identity and gets the
history back. Frames are handled in order; a frame that fails is answered with an `error`
frame and the socket stays usable. A chat line is acknowledged only after the ingest sink
returned, i.e. after the commit; the ack carries the stored message id.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

from aiohttp import WSMsgType, web

from channels.webchat.hub import Connection
from channels.webchat.ids import new_visitor_id, sign_visitor
from channels.webchat.inbound import Visitor, to_inbound
from channels.webchat.limits import RateLimited
from channels.webchat.protocol import (
    MAX_FRAME_BYTES,
    End,
    Hello,
    LeaveMessage,
    Ping,
    Prechat,
    ProtocolError,
    Rate,
    Say,
    Typing,
    parse_frame,
)
from channels.webchat.runtime import ChatRuntime, client_address
from channels.webchat.transcripts import is_proven, link_base, send_confirmation, send_transcript
from umsg.errors import PermanentError
from umsg.model import AddIdentity, ContinueOn, Effect, IdentityKind, IngestResult

log = logging.getLogger(__name__)

# A typing "on" is forwarded at most this often per socket: each one is a small transaction.
TYPING_EVERY_SECONDS = 3.0


# Close codes (RFC 6455 private range): the widget reconnects on any close.
CLOSE_IDLE = 4008


class ChatSession:
    def __init__(self, rt: ChatRuntime, conn: Connection, address: str = "unknown") -> None:
        self.rt = rt
        self.conn = conn
        self.address = address  # the client's address, for the per-address limits
        self.visitor: Visitor | None = None
        self._typing_at = -TYPING_EVERY_SECONDS
        self._typing_on = False
        # The email last recorded on the contact, so it is written once, not with every line.
        self._email_saved: str | None = None

    async def handle(self, raw: str) -> None:
        try:
            frame = parse_frame(raw, self.rt.settings.max_text_chars)
            if isinstance(frame, Ping):
                await self.conn.send({"type": "pong"})
            elif isinstance(frame, Hello):
                await self.hello(frame)
            elif self.visitor is None:
                raise ProtocolError("hello_first", 'send {"type": "hello"} first', getattr(frame, "client_id", None))
            elif isinstance(frame, Say):
                await self.say(frame)
            elif isinstance(frame, Prechat):
                await self.prechat(frame)
            elif isinstance(frame, Typing):
                await self.typing(frame)
            elif isinstance(frame, LeaveMessage):
                await self.leave_message(frame)
            elif isinstance(frame, Rate):
                await self.rate(frame)
            elif isinstance(frame, End):
                await self.end(frame)
        except ProtocolError as exc:
            await self.conn.send(exc.frame())
        except Exception:
            # A bug must not end the visitor's socket or leak a traceback into it; it is logged.
            log.exception("web chat: handling a frame failed")
            await self.conn.send({"type": "error", "code": "internal", "message": "that did not work; try again"})

    def _limit(self, gate: str, client_id: str | None = None, recipient: str | None = None) -> None:
        """Spend one token of `gate` for this visitor and address, or refuse with `rate_limited`."""
        assert self.visitor is not None
        try:
            getattr(self.rt.gates, gate).check(self.rt.refusals, visitor=self.visitor.visitor_id,
                                               address=self.address, recipient=recipient)
        except RateLimited as exc:
            raise ProtocolError("rate_limited", f"too many requests ({exc.reason.replace('_', ' per ')}); "
                                f"try again in {max(1, round(exc.retry_after + 0.5))} s", client_id,
                                retry_after=exc.retry_after) from None

    # -- frames ----------------------------------------------------------------------------

    async def hello(self, frame: Hello) -> None:
        rt = self.rt
        if self.visitor is not None:
            raise ProtocolError("hello_twice", "this socket already said hello")
        vid = rt.visitor_from(frame.token) if frame.token else None
        if vid is None:
            vid = new_visitor_id()  # a new visitor, or a token we did not sign: start afresh
        history: list[dict[str, Any]] = []
        contact = await rt.store.contact(vid)
        meta = {"page": frame.page} if frame.page else {}
        self.visitor = Visitor(vid, contact.name if contact else None, contact.email if contact else None, meta)
        self.conn.visitor_id = vid
        self._email_saved = self.visitor.email
        conv_ids: list[int] = []
        if contact is not None:
            self.conn.contact_id = contact.contact_id
            history, conv_ids = await rt.store.history(contact.contact_id, rt.settings.history_limit)
            if conv_ids:
                self.conn.conversation_id = conv_ids[-1]
        rt.hub.add(self.conn)
        rt.hub.watch(vid, conv_ids)
        s = rt.settings
        await self.conn.send({
            "type": "welcome",
            "visitor_id": vid,
            "token": sign_visitor(s.secret.get_secret_value(), rt.scope, vid),
            "status": await rt.status(),
            "contact": {"name": self.visitor.name, "email": self.visitor.email},
            "conversation_id": self.conn.conversation_id,
            "features": {"prechat": s.prechat_form, "transcript": s.transcript and link_base(rt) is not None,
                         "rating": s.rating,
                         "upload": {"max_bytes": s.max_upload_bytes, "types": s.upload_types},
                         "max_text_chars": s.max_text_chars, "title": s.title},
            "history": history,
        })

    async def prechat(self, frame: Prechat) -> None:
        assert self.visitor is not None
        self._limit("message")  # it may write an identity
        self.visitor = replace(self.visitor, name=frame.name or self.visitor.name,
                               email=frame.email or self.visitor.email)
        if self.conn.contact_id is not None and frame.email:
            await self.rt.store.remember_email(self.conn.contact_id, frame.email, frame.name)
            self._email_saved = frame.email
        await self.conn.send({"type": "ok", "for": "prechat"})

    async def say(self, frame: Say) -> None:
        self._limit("message", frame.client_id)
        result = await self._ingest(frame.client_id, frame.text)
        await self._acked(frame.client_id, frame.text, result)

    async def leave_message(self, frame: LeaveMessage) -> None:
        """Offline: store the message, keep the email, and let the conversation go on by email."""
        assert self.visitor is not None
        self._limit("message", frame.client_id)
        self.visitor = replace(self.visitor, email=frame.email, name=frame.name or self.visitor.name)
        # Replies go by email from now on: switched in the message's own transaction.
        result = await self._ingest(frame.client_id, frame.text, {"webchat_offline": True},
                                    (ContinueOn(self.rt.email_channel, "webchat_offline"),))
        await self._acked(frame.client_id, frame.text, result)

    async def typing(self, frame: Typing) -> None:
        conv = self.conn.conversation_id
        if conv is None:
            return  # nobody can be watching a conversation that does not exist yet
        now = asyncio.get_running_loop().time()
        if frame.on == self._typing_on and not frame.on:
            return
        if frame.on and now - self._typing_at < TYPING_EVERY_SECONDS:
            # Also after an "off": toggling on/off cannot write more than twice per interval.
            return
        self._typing_on = frame.on
        if frame.on:
            self._typing_at = now
        await self.rt.store.typing(conv, frame.on)

    async def rate(self, frame: Rate) -> None:
        if not self.rt.settings.rating:
            raise ProtocolError("disabled", "ratings are not enabled on this chat")
        conv = self._conversation()
        self._limit("message")
        await self.rt.store.rate(conv, frame.score, frame.comment, self.rt.clock())
        await self.conn.send({"type": "ok", "for": "rate"})

    async def end(self, frame: End) -> None:
        """The visitor ends the chat. With `transcript`, a proven address gets the transcript;
        a new one first gets a confirmation link (channels/webchat/transcripts.py)."""
        assert self.visitor is not None
        rt, sent, confirm = self.rt, False, False
        if frame.transcript:
            if not rt.settings.transcript or link_base(rt) is None:
                raise ProtocolError("disabled", "transcripts are not enabled on this chat")
            email = self.visitor.email
            if not email:
                raise ProtocolError("no_email", "give an email address (prechat) to receive a transcript")
            conv = self._conversation()
            contact = self.conn.contact_id
            if contact is None:
                raise ProtocolError("no_conversation", "there is no conversation yet: send a message first")
            self._limit("transcript", recipient=email.strip().lower())
            try:
                if await is_proven(rt, contact, email):
                    await send_transcript(rt, conv, email)
                    sent = True
                else:
                    await send_confirmation(rt, conv, contact, email)
                    confirm = True
            except PermanentError as exc:
                raise ProtocolError("rejected", str(exc)) from None
        answer: dict[str, Any] = {"type": "ok", "for": "end", "transcript": sent}
        if confirm:
            answer["confirm"] = self.visitor.email
        await self.conn.send(answer)

    # -- helpers ---------------------------------------------------------------------------

    def _conversation(self) -> int:
        if self.conn.conversation_id is None:
            raise ProtocolError("no_conversation", "there is no conversation yet: send a message first")
        return self.conn.conversation_id

    async def _ingest(self, client_id: str, text: str, meta: dict[str, Any] | None = None,
                      effects: tuple[Effect, ...] = ()) -> IngestResult:
        assert self.visitor is not None
        rt, email = self.rt, self.visitor.email
        if email and self._email_saved != email:
            # The visitor's email joins their contact with this message, in its transaction.
            effects = (*effects, AddIdentity(IdentityKind.EMAIL, email, self.visitor.name))
        inbound = to_inbound(self.visitor, client_id=client_id, text=text, channel=rt.channel, scope=rt.scope,
                             project=rt.settings.project, meta=meta, effects=effects)
        try:
            result = await rt.ingest(inbound)
            self._email_saved = email or self._email_saved
            return result
        except PermanentError as exc:
            raise ProtocolError("rejected", str(exc), client_id) from None
        except Exception as exc:
            # Not stored: the client keeps the message and resends it with the same client id.
            log.warning("web chat ingest failed; the client will retry: %s", exc)
            raise ProtocolError("retry", "not stored yet; send it again with the same client_id", client_id) \
                from None

    async def _acked(self, client_id: str, text: str, result: IngestResult) -> None:
        """After the commit: ack this socket, show the line in the visitor's other tabs."""
        assert self.visitor is not None
        rt, conn = self.rt, self.conn
        conn.contact_id, conn.conversation_id = result.contact_id, result.conversation_id
        rt.hub.watch(self.visitor.visitor_id, [result.conversation_id])
        await conn.send({"type": "ack", "client_id": client_id, "id": result.message_id,
                         "conversation_id": result.conversation_id, "duplicate": result.duplicate})
        if not result.duplicate:
            echo = {"type": "message", "id": result.message_id, "conversation_id": result.conversation_id,
                    "client_id": client_id, "direction": "in", "text": text, "author": None,
                    "at": rt.clock().isoformat(), "files": []}
            await rt.hub.to_visitor(self.visitor.visitor_id, echo, skip=conn)


async def chat_socket(rt: ChatRuntime, request: web.Request) -> web.StreamResponse:
    if not rt.origin_ok(request):
        raise web.HTTPForbidden(text="this page's origin may not use the chat")
    address = client_address(request)
    lim = rt.settings.limits
    try:
        rt.gates.connect.check(rt.refusals, address=address)
    except RateLimited as exc:
        raise web.HTTPTooManyRequests(text="too many chat connections from this address; try again later",
                                      headers={"Retry-After": str(max(1, round(exc.retry_after + 0.5)))}) from None
    if not rt.sockets.opened(address, lim.sockets_per_address):
        rt.refusals["sockets_address"] += 1
        raise web.HTTPTooManyRequests(text="too many open chat sockets from this address",
                                      headers={"Retry-After": "60"})
    try:
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_FRAME_BYTES)
        if not ws.can_prepare(request).ok:
            raise web.HTTPUpgradeRequired(headers={"Upgrade": "websocket"}, text="connect with Upgrade: websocket")
        await ws.prepare(request)
        conn = Connection(ws)
        session = ChatSession(rt, conn, address)
        try:
            await _frames(session, ws, lim.idle_timeout_seconds)
        except ConnectionResetError:
            pass
        finally:
            rt.hub.remove(conn)
        return ws
    finally:
        rt.sockets.closed(address)


async def _frames(session: ChatSession, ws: web.WebSocketResponse, idle: float) -> None:
    """Handle frames in order until the socket closes or says nothing for `idle` seconds."""
    while not ws.closed:
        try:
            msg = await ws.receive(timeout=idle)
        except TimeoutError:
            session.rt.refusals["idle"] += 1
            await ws.close(code=CLOSE_IDLE, message=b"idle")
            return
        if msg.type == WSMsgType.TEXT:
            await session.handle(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await session.conn.send({"type": "error", "code": "binary", "message": "send JSON text frames"})
        elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return

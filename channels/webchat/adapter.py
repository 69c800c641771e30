"""The web chat adapter: serves the widget and the customer socket, pushes agents' replies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Sequence
from importlib import resources
from typing import ClassVar

from aiohttp import web

from channels.base import Capabilities, ChannelAdapter, ChannelRef, InboundSink, Limits
from channels.webchat.files import download, preflight, upload
from channels.webchat.limits import LimitsCollector, SocketCount
from channels.webchat.notices import NoticeFollower
from channels.webchat.runtime import ChatRuntime
from channels.webchat.session import chat_socket
from channels.webchat.settings import WebchatSettings
from channels.webchat.store import ChatStore
from channels.webchat.transcripts import confirm_page, confirm_post
from umsg.errors import ConfigError, PermanentError, TransientError
from umsg.model import DeliveryResult, DeliveryStatus, IdentityKind, Outbound
from umsg.services import ChannelServices

log = logging.getLogger(__name__)

_ASSETS = {"widget.js": "text/javascript", "widget.css": "text/css"}


def _asset(name: str) -> bytes:
    return resources.files("channels.webchat").joinpath("static", name).read_bytes()


class WebchatChannel(ChannelAdapter[WebchatSettings]):
    name: ClassVar[str] = "webchat"
    capabilities: ClassVar[Capabilities] = Capabilities(attachments=True, threading=True, realtime=True)
    limits: ClassVar[Limits] = Limits(max_text_chars=4000, max_attachments=1,
                                      max_attachment_bytes=25 * 1024 * 1024)
    Settings: ClassVar[type[WebchatSettings]] = WebchatSettings
    identity_kind: ClassVar[IdentityKind | None] = IdentityKind.CHAT

    def __init__(self, instance_name: str, settings: WebchatSettings) -> None:
        super().__init__(instance_name, settings)
        self._rt: ChatRuntime | None = None
        self._assets = {name: _asset(name) for name in _ASSETS}
        self._stop = asyncio.Event()
        self._follower: asyncio.Task[None] | None = None
        # Made here, not at bind: the web app registers the metrics before or after binding.
        self._refusals: Counter[str] = Counter()
        self._sockets = SocketCount()

    @property
    def runtime(self) -> ChatRuntime:
        if self._rt is None:
            raise TransientError(f"web chat {self.instance_name!r} is not bound to the core yet")
        return self._rt

    def channel_refs(self) -> list[ChannelRef]:
        # Without an email instance, offline follow-ups stay on the chat: not a problem.
        return [ChannelRef("email_channel", self.settings.email_channel, kind=IdentityKind.EMAIL, required=False)]

    def _email_channel(self, services: ChannelServices) -> str:
        """Where offline follow-ups and transcripts go: `email_channel`, else the one email
        instance; with none configured the conversation stays on this chat."""
        if self.settings.email_channel is not None:
            return self.settings.email_channel
        found = services.channels.answering(IdentityKind.EMAIL) if services.channels else ["email"]
        if len(found) > 1:
            raise ConfigError([(f"channels.{self.instance_name}.email_channel",
                                f"several email channels are configured ({', '.join(found)}): name one")])
        return found[0] if found else self.channel

    def bind(self, services: ChannelServices) -> None:
        email_channel = self._email_channel(services)
        store = ChatStore(services.chat, channel=self.channel, project=self.settings.project,
                          instance=self.instance_name)
        self._rt = ChatRuntime(settings=self.settings, scope=self.instance_name, channel=self.channel,
                               email_channel=email_channel, store=store, services=services,
                               refusals=self._refusals, sockets=self._sockets)

    def metrics_collector(self) -> LimitsCollector:
        """Refusals by reason and open sockets, for the web app's metrics registry."""
        return LimitsCollector(self.instance_name, self._refusals, self._sockets)

    def web_routes(self) -> Sequence[web.RouteDef]:
        def rt() -> ChatRuntime:
            return self.runtime

        async def asset(request: web.Request) -> web.StreamResponse:
            name = request.match_info["name"]
            if name not in _ASSETS:
                raise web.HTTPNotFound()
            # Widget assets are public and the same for every page that embeds them.
            return web.Response(body=self._assets[name], content_type=_ASSETS[name],
                                headers={"Cache-Control": "public, max-age=300",
                                         "Access-Control-Allow-Origin": "*",
                                         "X-Content-Type-Options": "nosniff"})

        async def ws(request: web.Request) -> web.StreamResponse:
            return await chat_socket(rt(), request)

        async def post_upload(request: web.Request) -> web.StreamResponse:
            return await upload(rt(), request)

        async def options_upload(request: web.Request) -> web.StreamResponse:
            return await preflight(rt(), request)

        async def get_file(request: web.Request) -> web.StreamResponse:
            return await download(rt(), request)

        async def get_transcript(request: web.Request) -> web.StreamResponse:
            return await confirm_page(rt(), request)

        async def post_transcript(request: web.Request) -> web.StreamResponse:
            return await confirm_post(rt(), request)

        return (
            web.get("/{name:widget\\.(?:js|css)}", asset),
            web.get("/transcript", get_transcript),
            web.post("/transcript", post_transcript),
            web.get("/ws", ws),
            web.post("/upload", post_upload),
            web.options("/upload", options_upload),
            web.get("/file/{part:\\d+}", get_file),
        )

    async def start(self, sink: InboundSink) -> None:
        rt = self.runtime
        rt.sink = sink
        self._stop.clear()
        follower = NoticeFollower(rt.services, rt.store, rt.hub)
        self._follower = asyncio.create_task(follower.run(self._stop), name=f"webchat-notices-{self.instance_name}")

    async def send(self, outbound: Outbound) -> DeliveryResult:
        """Push the reply to the visitor's open sockets: DELIVERED if one took it, else ACCEPTED
        (the visitor sees it in the history on their next page load)."""
        rt = self.runtime
        vid = outbound.recipient
        if not vid.startswith("v_"):
            raise PermanentError(f"{vid!r} is not a web chat visitor id")
        conv = outbound.meta.get("conversation_id")
        if not rt.hub.connections(vid):
            return DeliveryResult(DeliveryStatus.ACCEPTED, detail="visitor offline; shown on their next visit")
        if isinstance(conv, int):
            rt.hub.watch(vid, [conv])
        frame = await rt.store.message(outbound.message_id)
        if frame is None:
            frame = {"type": "message", "id": outbound.message_id, "conversation_id": conv, "client_id": None,
                     "direction": "out", "text": outbound.text, "author": None, "at": rt.clock().isoformat(),
                     "files": []}
        sent = await rt.hub.to_visitor(vid, frame)
        if sent:
            return DeliveryResult(DeliveryStatus.DELIVERED, detail=f"pushed to {sent} open chat window(s)")
        return DeliveryResult(DeliveryStatus.ACCEPTED, detail="visitor offline; shown on their next visit")

    async def aclose(self) -> None:
        self._stop.set()
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._follower
            self._follower = None
        if self._rt is not None:
            await self._rt.hub.close_all()
            self._rt.sink = None

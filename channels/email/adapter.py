"""The email adapter: SMTP listener and IMAP mailbox in, relay out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, ClassVar

from channels.base import Capabilities, ChannelAdapter, InboundSink, Limits, Listener
from channels.email.compose import compose, sender_address
from channels.email.imap_poller import ImapPoller
from channels.email.settings import EmailSettings, email_url_fields
from channels.email.smtp_sender import send_via_relay
from channels.email.smtp_server import Handler, Parser, start_server
from umsg.errors import PermanentError, TransientError
from umsg.model import DeliveryResult, IdentityKind, Outbound

if TYPE_CHECKING:
    from umsg.channel_state import ChannelStateStore
    from umsg.services import ChannelServices

log = logging.getLogger(__name__)


class EmailChannel(ChannelAdapter[EmailSettings]):
    name: ClassVar[str] = "email"
    capabilities: ClassVar[Capabilities] = Capabilities(
        html=True, subject=True, attachments=True, delivery_receipts=True, threading=True)
    limits: ClassVar[Limits] = Limits(max_message_bytes=25 * 1024 * 1024)
    Settings: ClassVar[type[EmailSettings]] = EmailSettings
    url_schemes: ClassVar[tuple[str, ...]] = ("email",)
    identity_kind: ClassVar[IdentityKind | None] = IdentityKind.EMAIL
    legacy_channel_name: ClassVar[str | None] = "email"

    def __init__(self, instance_name: str, settings: EmailSettings) -> None:
        super().__init__(instance_name, settings)
        self._state: ChannelStateStore | None = None
        self._sink: InboundSink | None = None
        self._server: asyncio.Server | None = None
        self.handler: Handler | None = None
        self._parser: Parser | None = None
        self.poller: ImapPoller | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def url_fields(cls, url: str) -> dict[str, Any]:
        return email_url_fields(url)

    def listeners(self) -> list[Listener]:
        s = self.settings
        return [Listener("tcp", s.listen_host, s.listen_port)] if s.listen is not None else []

    def claims(self) -> list[str]:
        # Our Message-IDs and reply+TOKEN@ addresses are in the domain: mail to it threads back
        # through whichever instance receives it, so two instances must not share one.
        own = f"@{self.settings.domain}"
        return [f"mail domain {self.settings.domain}",
                *(f"mail address {a}" for a in self.settings.owned if a != own)]

    def bind(self, services: ChannelServices) -> None:
        """Keep the channel state store: the IMAP mailbox checkpoints in it (before `start`)."""
        self._state = services.state

    @property
    def port(self) -> int | None:
        """The port the SMTP listener is bound to (useful with port 0)."""
        if self._server is None or not self._server.sockets:
            return None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, sink: InboundSink) -> None:
        self._sink = sink
        self._stop.clear()
        if self.settings.listen is not None:
            self._parser = Parser(self.settings, self.channel)
            self.handler = Handler(self.settings, self.channel, sink, self._parser.parse)
            self._server = await start_server(self.settings, self.handler)
            log.info("email channel %s listening for SMTP on port %s", self.instance_name, self.port)
        if self.settings.imap is not None:
            if self._state is None:
                raise TransientError("the IMAP mailbox needs the core's services: call bind() before start()")
            self.poller = ImapPoller(self.settings, self.channel, sink, self._state)
            task = asyncio.create_task(self.poller.run(self._stop), name=f"imap-{self.instance_name}")
            self._tasks.append(task)

    async def send(self, outbound: Outbound) -> DeliveryResult:
        if not self.settings.relay:
            raise PermanentError(f"email channel {self.instance_name!r} has no relay configured")
        msg = compose(outbound, self.settings)
        return await send_via_relay(
            msg, self.settings.relay, sender=sender_address(outbound, self.settings),
            recipient=outbound.recipient, timeout_seconds=self.settings.relay_timeout_seconds)

    async def aclose(self) -> None:
        self._stop.set()
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            # Sessions in DATA finish (their 250 follows the commit); idle ones are closed.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 10)
        if self._parser is not None:
            parser, self._parser = self._parser, None
            await parser.aclose()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            try:
                await asyncio.wait_for(task, self.settings.imap_timeout_seconds)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
            except Exception:  # noqa: BLE001
                log.exception("imap task ended with an error")
        self._sink = None

"""What the socket, upload and file handlers of one chat instance share (kept on the adapter).

Everything of the core it uses comes from `ChannelServices` (umsg/services.py): the queries
through `store` (over `services.chat`), the outbox for transcripts and the blob store for
downloads (`services.outbox`, `services.blobs`), the event log for live notices
(`services.events`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web

from channels.base import InboundSink
from channels.webchat.hub import Hub
from channels.webchat.ids import verify_visitor
from channels.webchat.limits import Gate, RateLimiter, SocketCount
from channels.webchat.settings import ChatLimits, WebchatSettings
from channels.webchat.store import ChatStore
from umsg.errors import TransientError
from umsg.model import Inbound, IngestResult
from umsg.services import ChannelServices


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Gates:
    """The rate limits of one instance, built from its settings."""

    message: Gate
    upload: Gate
    transcript: Gate
    connect: Gate

    @classmethod
    def from_limits(cls, lim: ChatLimits) -> Gates:
        minute, hour = 60.0, 3600.0
        return cls(
            message=Gate("message", {"visitor": RateLimiter(lim.messages_per_minute, minute),
                                     "address": RateLimiter(lim.messages_per_minute_per_address, minute)}),
            upload=Gate("upload", {"visitor": RateLimiter(lim.uploads_per_hour, hour),
                                   "address": RateLimiter(lim.uploads_per_hour_per_address, hour)}),
            transcript=Gate("transcript", {
                "visitor": RateLimiter(lim.transcripts_per_hour, hour),
                "address": RateLimiter(lim.transcripts_per_hour_per_address, hour),
                "recipient": RateLimiter(lim.transcripts_per_hour_per_recipient, hour)}),
            connect=Gate("connect", {"address": RateLimiter(lim.connects_per_minute_per_address, minute)}),
        )


def client_address(request: web.Request) -> str:
    """The peer's address (forwarding headers are not trusted: anyone can write them)."""
    return request.remote or "unknown"


@dataclass
class ChatRuntime:
    settings: WebchatSettings
    scope: str  # the channel instance name: signs tokens, names thread keys
    channel: str  # the channel messages carry: the instance name
    email_channel: str  # the instance offline follow-ups and transcripts go out on
    store: ChatStore
    services: ChannelServices
    hub: Hub = field(default_factory=Hub)
    sink: InboundSink | None = None
    clock: Callable[[], datetime] = _utcnow
    gates: Gates = field(init=False)
    # Refusals by reason (`<action>_<scope>`, `sockets`, `idle`): the metrics read them.
    refusals: Counter[str] = field(default_factory=Counter)
    sockets: SocketCount = field(default_factory=SocketCount)

    def __post_init__(self) -> None:
        self.gates = Gates.from_limits(self.settings.limits)

    async def ingest(self, inbound: Inbound) -> IngestResult:
        if self.sink is None:
            raise TransientError(f"web chat {self.scope!r} is not started")
        return await self.sink(inbound)

    def visitor_from(self, token: object) -> str | None:
        return verify_visitor(self.settings.secret.get_secret_value(), self.scope, token)

    def origin_ok(self, request: web.Request) -> bool:
        own = f"{request.scheme}://{request.host}"
        return self.settings.origin_allowed(request.headers.get("Origin"), own)

    async def status(self) -> dict[str, object]:
        """Can someone answer now? `reason`: open, closed (outside hours) or no_agent."""
        hours = self.settings.hours
        if hours is not None and not hours.calendar().is_open(self.clock()):
            return {"online": False, "reason": "closed"}
        if self.settings.offline_when_no_agent and not await self.store.agents_available():
            return {"online": False, "reason": "no_agent"}
        return {"online": True, "reason": "open"}

"""Bounded HTTP connections: a total and a per-client-address cap in front of aiohttp.

aiohttp accepts every connection the kernel hands it and keeps it as long as the client
likes, so a few thousand idle sockets exhaust the process's descriptors and take every
listener down with it. `GuardedSite` serves the same runner through a thin protocol
wrapper that counts connections per listener:

- over `per_peer` from one address: answered `503` and closed at once;
- at `total`: the oldest connection with no request in progress (idle keep-alive, never
  sent a request, or still dribbling its head) is closed to make room, so an idle flood
  cannot lock out a client that wants to talk; when every connection is busy the newcomer
  gets `503`.

Idle and header time-outs are aiohttp's own `keepalive_timeout` (passed by the runner):
since 3.10 it also closes a connection that never completes its first request head.

`QuietProtocolErrors` is the runner's server logger: a malformed request is answered 400 by
aiohttp and logged at debug, instead of an error with a traceback per request (which let any
client write a traceback into the log with a few bytes).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger(__name__)
_ServerLog = logging.LoggerAdapter[logging.Logger]

_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 5\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 26\r\n\r\ntoo many connections, wait")
# Share of the open-file limit the HTTP listener may use by default: the store, the other
# listeners, blobs and worker pipes need the rest.
_AUTO_SHARE = 4
_AUTO_MAX = 4096


def default_total(configured: int | None) -> int:
    """The configured cap, or a quarter of this process's open-file limit (at most 4096)."""
    if configured is not None:
        return configured
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return _AUTO_MAX
    return max(16, min(_AUTO_MAX, soft // _AUTO_SHARE))


class ConnectionLimits:
    """Open connections of one listener, in all and per client address (no global state)."""

    def __init__(self, total: int, per_peer: int) -> None:
        self.total = total
        self.per_peer = per_peer
        self.peers: dict[str, int] = {}
        # Insertion order is age: eviction looks for the oldest idle one first.
        self.open: OrderedDict[_Guarded, None] = OrderedDict()
        self.refused = 0
        self.evicted = 0

    def admit(self, conn: _Guarded) -> bool:
        if self.peers.get(conn.host, 0) >= self.per_peer:
            return False
        if len(self.open) >= self.total and not self._evict_idle():
            return False
        self.peers[conn.host] = self.peers.get(conn.host, 0) + 1
        self.open[conn] = None
        return True

    def release(self, conn: _Guarded) -> None:
        if conn not in self.open:
            return  # never admitted, or already evicted
        del self.open[conn]
        held = self.peers.get(conn.host, 0) - 1
        if held > 0:
            self.peers[conn.host] = held
        else:
            self.peers.pop(conn.host, None)

    def _evict_idle(self) -> bool:
        for conn in self.open:
            if conn.idle():
                # Forget it now, so the slot is free before its connection_lost arrives.
                self.release(conn)
                conn.evict()
                self.evicted += 1
                return True
        return False


class _Guarded(asyncio.Protocol):
    """Passes everything to aiohttp's protocol once the connection is admitted."""

    def __init__(self, inner: asyncio.Protocol, limits: ConnectionLimits) -> None:
        self.inner = inner
        self.limits = limits
        self.host = ""
        self.transport: asyncio.Transport | None = None
        self.admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.host = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if not self.limits.admit(self):
            self.limits.refused += 1
            transport.write(_REFUSAL)
            transport.close()
            return
        self.admitted = True
        self.inner.connection_made(transport)

    def idle(self) -> bool:
        # aiohttp's flag for "a handler is running" (3.x); when it is missing, count as busy.
        return self.admitted and not bool(getattr(self.inner, "_request_in_progress", True))

    def evict(self) -> None:
        self.admitted = False
        if self.transport is not None:
            self.transport.close()
            self.inner.connection_lost(None)

    def data_received(self, data: bytes) -> None:
        if self.admitted:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.admitted:
            self.admitted = False
            self.limits.release(self)
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()


class GuardedSite(web.TCPSite):
    """`web.TCPSite` whose connections pass `ConnectionLimits` before aiohttp sees them."""

    def __init__(self, runner: web.AppRunner, host: str | None, port: int, limits: ConnectionLimits) -> None:
        super().__init__(runner, host, port)
        self.limits = limits

    async def start(self) -> None:
        # What TCPSite.start does, with the runner's protocol factory wrapped (aiohttp 3.x keeps
        # the listener in `_server`, which `stop()` closes).
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        limits = self.limits
        factory: Callable[[], Any] = server

        def guarded() -> asyncio.Protocol:
            return _Guarded(factory(), limits)

        self._server = await asyncio.get_running_loop().create_server(
            guarded, self._host, self._port, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port)


class QuietProtocolErrors(_ServerLog):
    """aiohttp's server logger, with the client's protocol errors (its 400s) at debug."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        super().__init__(logger or logging.getLogger("aiohttp.server"), {})

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self.debug(msg, *args, **kwargs)  # the client's fault, already answered 400
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)

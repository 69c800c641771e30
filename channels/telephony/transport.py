"""SIP over UDP and TCP: listeners that hand each message (with where it came from) to a handler.

UDP: one datagram is one message. TCP: messages are framed by the blank line after the headers
and Content-Length; a connection that sends an oversized or unframeable head is closed. Neither
listener ever dies because of what a peer sends: the handler's exceptions are logged and the
next message is read.

Accepted TCP connections are bounded (`TcpLimits`): in all and per client address (over
either, the connection is closed at once), a fresh connection must deliver its first message
within `first_message_seconds`, a message once begun must be complete within
`message_seconds`, and a connection silent for `idle_seconds` (longer than any call, since
in-dialog requests and responses travel on it) is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from channels.telephony.sipmsg import MAX_BODY_BYTES, MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """Where a message came from, and how to answer it (UDP: to that address; TCP: that connection)."""

    proto: str  # "udp" | "tcp"
    addr: tuple[str, int]
    send: Callable[[bytes], None]
    local: tuple[str, int]
    # Ends a TCP connection we opened for outgoing requests (None: not ours to close).
    close: Callable[[], None] | None = None

    @property
    def reliable(self) -> bool:
        return self.proto == "tcp"


Handler = Callable[[bytes, Source], None]


@dataclass(frozen=True)
class TcpLimits:
    """Bounds on accepted SIP-over-TCP connections (connections we open are not counted)."""

    max_connections: int = 256
    max_per_peer: int = 32
    first_message_seconds: float = 30.0
    message_seconds: float = 30.0
    idle_seconds: float = 3600.0


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        transport = self.transport
        if transport is None:
            return
        local = transport.get_extra_info("sockname")

        def send(payload: bytes, _a: tuple[str, int] = (addr[0], addr[1])) -> None:
            if not transport.is_closing():
                transport.sendto(payload, _a)

        try:
            self.handler(data, Source("udp", (addr[0], addr[1]), send, (local[0], local[1])))
        except Exception:  # noqa: BLE001 - one bad datagram must not stop the listener
            log.exception("SIP handler failed on a datagram from %s", addr)


_ANY_PORT_ATTEMPTS = 20


class SipListeners:
    """The UDP socket and TCP server of one SIP front door."""

    def __init__(self, handler: Handler, limits: TcpLimits | None = None) -> None:
        self.handler = handler
        self.limits = limits or TcpLimits()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._accepted = 0
        self._peers: dict[str, int] = {}
        self.refused = 0

    async def start(self, host: str, port: int, *, tcp: bool = True) -> None:
        loop = asyncio.get_running_loop()
        # With port 0 the number UDP got may already be taken over TCP (another socket's
        # ephemeral port): then try a fresh pair rather than fail the listener.
        attempts = _ANY_PORT_ATTEMPTS if port == 0 else 1
        for attempt in range(attempts):
            transport, _p = await loop.create_datagram_endpoint(lambda: _Udp(self.handler), local_addr=(host, port))
            self._udp = transport
            if not tcp:
                return
            try:
                # The same port number over TCP (0 means: whatever UDP got).
                self._tcp = await asyncio.start_server(self._serve_tcp, host, self.udp_port)
                return
            except OSError as exc:
                transport.close()
                self._udp = None
                if exc.errno != errno.EADDRINUSE or attempt == attempts - 1:
                    raise

    @property
    def udp_port(self) -> int:
        assert self._udp is not None
        return int(self._udp.get_extra_info("sockname")[1])

    @property
    def tcp_port(self) -> int | None:
        if self._tcp is None or not self._tcp.sockets:
            return None
        return int(self._tcp.sockets[0].getsockname()[1])

    def udp_source(self, addr: tuple[str, int]) -> Source:
        """A `Source` for sending from our UDP socket to `addr` (requests we originate)."""
        transport = self._udp
        assert transport is not None
        local = transport.get_extra_info("sockname")

        def send(payload: bytes) -> None:
            if not transport.is_closing():
                transport.sendto(payload, addr)

        return Source("udp", addr, send, (local[0], local[1]))

    async def connect_tcp(self, addr: tuple[str, int]) -> Source:
        """Open a TCP connection to `addr` for requests we originate; what the peer sends back on
        it reaches the handler like any message on an accepted connection."""
        reader, writer = await asyncio.open_connection(addr[0], addr[1])
        opened: asyncio.Future[Source] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._stream(reader, writer, opened))
        self._conns.add(task)
        task.add_done_callback(self._conns.discard)
        return await opened

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        limits = self.limits
        if self._accepted >= limits.max_connections or self._peers.get(host, 0) >= limits.max_per_peer:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:  # a flood must not flood the log
                log.warning("SIP TCP connection refused: over the connection limit",
                            extra={"kv": {"peer": host, "refused": self.refused}})
            writer.close()
            return
        self._accepted += 1
        self._peers[host] = self._peers.get(host, 0) + 1
        try:
            await self._stream(reader, writer, None, limits)
        finally:
            self._accepted -= 1
            left = self._peers.get(host, 1) - 1
            if left > 0:
                self._peers[host] = left
            else:
                self._peers.pop(host, None)

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      opened: asyncio.Future[Source] | None, limits: TcpLimits | None = None) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        peer = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")

        def send(payload: bytes) -> None:
            if not writer.is_closing():
                writer.write(payload)

        source = Source("tcp", (peer[0], peer[1]), send, (local[0], local[1]),
                        writer.close if opened is not None else None)
        if opened is not None:
            opened.set_result(source)
        waits = (limits.first_message_seconds, limits.message_seconds) if limits else None
        try:
            while True:
                if waits is None:
                    message = await _read_framed(reader)
                else:
                    message = await _read_bounded(reader, *waits)
                    waits = (limits.idle_seconds, limits.message_seconds) if limits else None
                if message is None:
                    break
                try:
                    self.handler(message, source)
                except Exception:  # noqa: BLE001
                    log.exception("SIP handler failed on a TCP message from %s", peer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            log.info("closing SIP TCP connection from %s after a framing error", peer)
        except TimeoutError:
            log.info("closing SIP TCP connection from %s: silent or too slow", peer)
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def aclose(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        for task in list(self._conns):
            task.cancel()
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._tcp.wait_closed(), 5)
            self._tcp = None


async def _read_bounded(reader: asyncio.StreamReader, wait_seconds: float, message_seconds: float) -> bytes | None:
    """`_read_framed` where the first byte must come within `wait_seconds` and the whole
    message within `message_seconds` of it (TimeoutError otherwise)."""
    try:
        first = await asyncio.wait_for(reader.readexactly(1), wait_seconds)
    except asyncio.IncompleteReadError:
        return None
    # Give the byte back so the framing reads one stream (StreamReader has no peek).
    reader._buffer[0:0] = first  # type: ignore[attr-defined]  # noqa: SLF001
    return await asyncio.wait_for(_read_framed(reader), message_seconds)


async def _read_framed(reader: asyncio.StreamReader) -> bytes | None:
    """One message from a stream, or None at a clean end of stream."""
    head = b""
    while not head.strip():  # keep-alive CRLFs between messages
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise
            return None
        if len(head) > MAX_MESSAGE_BYTES:
            raise ValueError("SIP head too large")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            length = int(value.strip() or b"0")
    if length < 0 or length > MAX_BODY_BYTES:
        raise ValueError("bad Content-Length on a stream")
    body = await reader.readexactly(length) if length else b""
    return head + body

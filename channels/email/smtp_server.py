"""Inbound SMTP: an aiosmtpd server on the running event loop, answering only after the commit.

The reply to DATA is the durability promise: `250` is sent only after the
ingest sink returned (its transaction committed), so a crash before it makes
the sending server retry, and the dedupe key makes the retry harmless. Any
failure of ours answers `451 4.3.0` (aiosmtpd's default would be a permanent
500, and the sender would bounce the customer's mail); mail we can never
store answers `554 5.6.0` with the reason. A parse killed at its worker's limits stores the
mail from its headers alone (`unparsed_inbound`: a note for the agent, the raw original
kept). Recipients the channel does not own get `550 5.1.1` at RCPT time, so this is never an open relay. Sessions
beyond `max_sessions`, or beyond `max_sessions_per_peer` from one client address, are turned
away with `421` at connect. Commands that move no mail (NOOP, RSET, VRFY, HELP, EXPN) neither
renew the idle timeout nor may be repeated more than `max_junk_commands` times between two
accepted messages, so a session cannot be held open for ever. AUTH is offered and accepted
only over TLS (after STARTTLS); with no certificate configured it is not offered at all.

Parsing is pure CPU (about half a millisecond for a usual message, far more
for a large one) and the event loop also runs every session and the ingest
commit, so messages above `parse_inline_bytes` are parsed in a small process
pool of the channel's own (`parse_workers`, spawned, closed with the
channel): on a two-core machine the second core parses while the loop's core
talks SMTP and commits. Small messages are parsed on the loop: the worker
round trip would cost them more waiting than the parse itself.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool
from email.utils import formatdate
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, syntax

from channels.base import InboundSink
from channels.email.parse import Envelope as MailEnvelope
from channels.email.parse import to_inbound, unparsed_inbound
from channels.email.settings import EmailSettings
from umsg.errors import PermanentError
from umsg.model import Inbound
from umsg.workers import JobLimitExceeded, JobLimits, process_pool

log = logging.getLogger(__name__)

# Without a pool, a big message is parsed in a thread so other sessions keep moving.
_PARSE_IN_THREAD_BYTES = 512 * 1024
# Parse time follows the MIME structure more than the bytes: a small mail of many parts (1,700
# parts fit in 64 KiB and take ~0.17 s) goes to the worker too, so the loop never stalls on one.
_INLINE_MAX_BOUNDARIES = 64

ParseFn = Callable[[bytes, MailEnvelope], Awaitable[Inbound]]


def parses_inline(raw: bytes, settings: EmailSettings) -> bool:
    """Whether `raw` is cheap enough to parse on the event loop: small, and of few MIME parts."""
    return len(raw) <= settings.parse_inline_bytes and raw.count(b"\n--") <= _INLINE_MAX_BOUNDARIES


class Parser:
    """Turns received bytes into an `Inbound`: in worker processes, or on the loop with none."""

    def __init__(self, settings: EmailSettings, channel: str) -> None:
        self._settings = settings
        self._channel = channel
        # Made now with one process started, so the first big message does not wait for it to boot.
        self._limits = JobLimits(settings.parse_seconds, settings.parse_cpu_seconds)
        self._pool: Executor | None = process_pool(settings.parse_workers, self._limits, warm=1) \
            if settings.parse_workers else None

    def _job(self, raw: bytes, envelope: MailEnvelope) -> functools.partial[Inbound]:
        return functools.partial(to_inbound, raw, channel=self._channel, project=self._settings.project,
                                 own_domain=self._settings.domain, envelope=envelope)

    async def parse(self, raw: bytes, envelope: MailEnvelope) -> Inbound:
        job = self._job(raw, envelope)
        if parses_inline(raw, self._settings):
            return job()
        if self._settings.parse_workers == 0:
            return await asyncio.to_thread(job) if len(raw) > _PARSE_IN_THREAD_BYTES else job()
        if self._pool is None:
            # spawn, not fork: the parent runs threads (aiosqlite, blob writers) that fork would copy mid-lock.
            self._pool = process_pool(self._settings.parse_workers, self._limits)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, job)
        except JobLimitExceeded as exc:
            # Killed at its limit: the same bytes would be again. Store what the headers say,
            # with the raw original, rather than refuse a mail that may be legitimate.
            log.warning("parse of a %d-byte message killed (%s): storing it from its headers", len(raw), exc)
            return unparsed_inbound(raw, str(exc), channel=self._channel, project=self._settings.project,
                                    own_domain=self._settings.domain, envelope=envelope)
        except BrokenProcessPool:
            # A worker died (a message that crashed the parser, or a kill): this message gets 451,
            # and the next one a fresh pool.
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            raise

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)


class _Gate:
    """Counts open sessions of one listener, in all and per client address (one gate per server).

    The total is taken when the connection is accepted (the protocol factory knows no peer);
    the per-address share when the session learns its peer, so that one host cannot hold
    every slot and keep all other senders' mail refused.
    """

    def __init__(self, limit: int, per_peer: int) -> None:
        self.limit = limit
        self.per_peer = per_peer
        self.open = 0
        self.peers: dict[str, int] = {}

    def enter(self) -> bool:
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def enter_peer(self, host: str) -> bool:
        held = self.peers.get(host, 0)
        if held >= self.per_peer:
            return False
        self.peers[host] = held + 1
        return True

    def leave_peer(self, host: str) -> None:
        held = self.peers.get(host, 0) - 1
        if held > 0:
            self.peers[host] = held
        else:
            self.peers.pop(host, None)


class _Refuse(asyncio.Protocol):
    """What a client over the session limit talks to: one 421 line, then the door."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(b"421 4.3.2 Too many sessions, try again later\r\n")
        transport.close()


class _Session(SMTP):
    def __init__(self, handler: Handler, gate: _Gate, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._gate = gate
        self._left = False
        self._peer_host: str | None = None  # set once the per-address share is held
        self._refused = False
        self._junk = 0
        # The idle deadline before the current command's reset, and after it (loop time).
        self._deadline = 0.0
        self._prev_deadline = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None and not self._refused:  # the first call; STARTTLS calls again
            peer = transport.get_extra_info("peername")
            host = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
            if not self._gate.enter_peer(host):
                self._refused = True
                log.info("smtp session refused: too many sessions from one address",
                         extra={"kv": {"peer": host, "limit": self._gate.per_peer}})
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(b"421 4.7.0 Too many sessions from your address, try again later\r\n")
                transport.close()
                return
            self._peer_host = host
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        try:
            if not self._refused:
                super().connection_lost(error)
        finally:
            if not self._left:  # STARTTLS swaps transports; count the session once
                self._left = True
                self._gate.open -= 1
                if self._peer_host is not None:
                    self._gate.leave_peer(self._peer_host)

    def eof_received(self) -> bool | None:
        if self._refused:
            return False
        return super().eof_received()

    # aiosmtpd renews its idle timer before every recognised command. For commands that move
    # no mail (NOOP, RSET, VRFY, HELP, EXPN) the renewal is undone (the deadline stays where
    # the last useful command put it), so NOOP every few minutes cannot hold a slot for ever. `_reset_timeout` is
    # aiosmtpd's own hook (>= 1.4.6); it is the one place every renewal passes through.
    def _reset_timeout(self, duration: float | None = None) -> None:
        super()._reset_timeout(duration)
        self._prev_deadline = self._deadline or self.loop.time() + (duration or self._timeout_duration)
        self._deadline = self.loop.time() + (duration or self._timeout_duration)

    def progressed(self) -> None:
        """A message was accepted: the session earned a fresh allowance of junk commands."""
        self._junk = 0

    async def _junk_command(self) -> bool:
        """Count a command that moves no mail; False when the session must end now."""
        self._deadline = self._prev_deadline
        remaining = self._deadline - self.loop.time()
        self._junk += 1
        if self._junk > self._handler_settings.max_junk_commands or remaining <= 0:
            log.info("smtp session closed: no mail moved", extra={"kv": {"peer": self._peer_host,
                                                                        "commands": self._junk}})
            await self.push("421 4.7.0 Too many commands without mail, closing")
            if self.transport is not None:
                self.transport.close()
            return False
        SMTP._reset_timeout(self, remaining)
        return True

    @property
    def _handler_settings(self) -> EmailSettings:
        handler = self.event_handler
        assert isinstance(handler, Handler)
        return handler.settings

    @syntax('NOOP [ignored]')
    async def smtp_NOOP(self, arg: str) -> None:
        if await self._junk_command():
            await super().smtp_NOOP(arg)

    @syntax('RSET')
    async def smtp_RSET(self, arg: str) -> None:
        if await self._junk_command():
            await super().smtp_RSET(arg)

    @syntax('VRFY <address>')
    async def smtp_VRFY(self, arg: str) -> None:
        if await self._junk_command():
            await super().smtp_VRFY(arg)

    @syntax('HELP [command]')
    async def smtp_HELP(self, arg: str) -> None:
        if await self._junk_command():
            await super().smtp_HELP(arg)

    async def smtp_EXPN(self, arg: str) -> None:
        if await self._junk_command():
            await super().smtp_EXPN(arg)


class Handler:
    """aiosmtpd hooks: recipient policy and DATA into the ingest sink."""

    def __init__(self, settings: EmailSettings, channel: str, sink: InboundSink,
                 parse: ParseFn | None = None) -> None:
        self.settings = settings
        self.channel = channel
        self.sink = sink
        self._parse = parse or Parser(settings.model_copy(update={"parse_workers": 0}), channel).parse
        self.stats = {"accepted": 0, "duplicates": 0, "rejected": 0, "failed": 0}
        self.gate = _Gate(settings.max_sessions, settings.max_sessions_per_peer)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if not self.settings.owns(address):
            return f"550 5.1.1 <{address}>: no such recipient here"
        if len(envelope.rcpt_tos) >= self.settings.max_recipients:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        # RFC 5321 §4.4: the receiving server records the hop; the dedupe key ignores trace headers.
        raw = self._trace(session, envelope) + raw
        try:
            inbound = await self._parse(raw, MailEnvelope(envelope.mail_from or None, tuple(envelope.rcpt_tos)))
            result = await self.sink(inbound)
        except PermanentError as exc:
            self.stats["rejected"] += 1
            log.info("smtp message refused: %s", exc)
            return f"554 5.6.0 {_one_line(str(exc))}"
        except Exception:  # noqa: BLE001 - anything of ours must be a retry, never a bounce
            self.stats["failed"] += 1
            log.exception("smtp ingest failed; answering 451")
            return "451 4.3.0 Temporary failure storing the message, try again later"
        self.stats["duplicates" if result.duplicate else "accepted"] += 1
        if isinstance(server, _Session):
            server.progressed()
        return f"250 2.0.0 OK: stored as message {result.message_id}"


    def _trace(self, session: Session, envelope: Envelope) -> bytes:
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer or "unknown")
        helo = " ".join(str(session.host_name or "unknown").split())[:100]
        tls = "ESMTPS" if session.ssl else "ESMTP"
        rcpt = envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None
        lines = (f"Return-Path: <{envelope.mail_from or ''}>\r\n"
                 f"Received: from {helo} ([{peer}])\r\n\tby {self.settings.domain} (umsg) with {tls}"
                 + (f"\r\n\tfor <{rcpt}>" if rcpt else "") + f"; {formatdate(usegmt=True)}\r\n")
        return lines.encode("utf-8", "replace")


def _one_line(text: str) -> str:
    return " ".join(text.split())[:400]


def _authenticator(settings: EmailSettings) -> Callable[..., AuthResult]:
    def check(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = data.login.decode("utf-8", "replace")
        secret = settings.auth_users.get(login)
        ok = secret is not None and secret.get_secret_value().encode("utf-8") == data.password
        return AuthResult(success=ok, handled=False)

    return check


def tls_context(settings: EmailSettings) -> ssl.SSLContext | None:
    if not settings.tls_cert or not settings.tls_key:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    return ctx


async def start_server(
    settings: EmailSettings, handler: Handler, hostname: str | None = None
) -> asyncio.Server:
    """Listen on `settings.listen` in the running loop; the caller closes the returned server."""
    loop = asyncio.get_running_loop()
    gate = handler.gate
    tls = tls_context(settings)
    # AUTH only over TLS: a password never crosses the wire in the clear. Without a
    # certificate AUTH is not offered at all (and the start says so once).
    auth = bool(settings.auth_users) and tls is not None
    if settings.auth_users and tls is None:
        log.warning("smtp AUTH is not offered: auth_users is set but no tls_cert/tls_key is configured",
                    extra={"kv": {"listen": settings.listen}})

    def factory() -> asyncio.Protocol:
        if not gate.enter():
            return _Refuse()
        return _Session(
            handler,
            gate,
            data_size_limit=settings.max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=hostname or settings.domain,
            ident="umsg ESMTP",
            tls_context=tls,
            require_starttls=False,
            timeout=settings.session_timeout_seconds,
            authenticator=_authenticator(settings) if auth else None,
            auth_require_tls=True,
            loop=loop,
        )

    return await loop.create_server(factory, settings.listen_host, settings.listen_port)

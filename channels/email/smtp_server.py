"""Inbound SMTP: an aiosmtpd server on the running event loop, answering only after the commit.

The reply to DATA is the durability promise: `250` is sent only after the
ingest sink returned (its transaction committed), so a crash before it makes
the sending server retry, and the dedupe key makes the retry harmless. Any
failure of ours answers `451 4.3.0` (aiosmtpd's default would be a permanent
500, and the sender would bounce the customer's mail); mail we can never
store answers `554 5.6.0` with the reason. Recipients the channel does not
own get `550 5.1.1` at RCPT time, so this is never an open relay. Sessions
beyond `max_sessions` are turned away with `421 4.3.2` at connect.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from channels.base import InboundSink
from channels.email.parse import Envelope as MailEnvelope
from channels.email.parse import to_inbound
from channels.email.settings import EmailSettings
from umsg.errors import PermanentError

log = logging.getLogger(__name__)

# Parsing a big message takes milliseconds of CPU; off the loop so other sessions keep moving.
_PARSE_IN_THREAD_BYTES = 512 * 1024


class _Gate:
    """Counts open sessions of one listener (no global state: one gate per server)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def enter(self) -> bool:
        if self.open >= self.limit:
            return False
        self.open += 1
        return True


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

    def connection_lost(self, error: Exception | None) -> None:
        try:
            super().connection_lost(error)
        finally:
            if not self._left:  # STARTTLS swaps transports; count the session once
                self._left = True
                self._gate.open -= 1


class Handler:
    """aiosmtpd hooks: recipient policy and DATA into the ingest sink."""

    def __init__(self, settings: EmailSettings, channel: str, sink: InboundSink) -> None:
        self.settings = settings
        self.channel = channel
        self.sink = sink
        self.stats = {"accepted": 0, "duplicates": 0, "rejected": 0, "failed": 0}
        self.gate = _Gate(settings.max_sessions)

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
            parse = functools.partial(
                to_inbound, raw, channel=self.channel, project=self.settings.project,
                own_domain=self.settings.domain,
                envelope=MailEnvelope(envelope.mail_from or None, tuple(envelope.rcpt_tos)))
            inbound = await asyncio.to_thread(parse) if len(raw) > _PARSE_IN_THREAD_BYTES else parse()
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
    auth = bool(settings.auth_users)

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
            # Without TLS configured, AUTH is only offered when it may go in the clear (loopback tests).
            auth_require_tls=tls is not None,
            loop=loop,
        )

    return await loop.create_server(factory, settings.listen_host, settings.listen_port)

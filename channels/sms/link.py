"""Keeping SMPP connections bound: reconnect with backoff, and picking a connection for a submit.

A channel has `connections` links; each keeps one session bound, reconnecting
after any loss with exponential backoff (reset once a bind succeeds). `submit`
retries one part across reconnects and throttling answers until it is accepted,
refused for good, or `send_timeout_seconds` runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from channels.sms import pdu as P
from channels.sms.pdu import ShortMessage
from channels.sms.session import AcceptedHook, DeliverHandler, SmppSession
from channels.sms.settings import SmppSettings
from umsg.errors import PermanentError, TransientError

log = logging.getLogger(__name__)


class SmppLink:
    """One connection slot of a channel, rebinding whenever its session ends."""

    def __init__(self, settings: SmppSettings, label: str, handler: DeliverHandler,
                 on_accepted: AcceptedHook | None = None) -> None:
        self.settings = settings
        self.label = label
        self._handler = handler
        self._on_accepted = on_accepted
        self.session: SmppSession | None = None
        self.up = asyncio.Event()
        self.binds = 0
        self.last_error = ""

    async def run(self, stop: asyncio.Event) -> None:
        delay = self.settings.reconnect_min_seconds
        while not stop.is_set():
            session = SmppSession(self.settings, self.label, self._handler, self._on_accepted)
            try:
                await session.open()
            except (TransientError, PermanentError) as exc:
                self.last_error = str(exc)
                log.warning("smpp %s: %s; retrying in %.1fs", self.label, exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, self.settings.reconnect_max_seconds)
                continue
            delay = self.settings.reconnect_min_seconds
            self.binds += 1
            self.session = session
            self.up.set()
            stopping = asyncio.create_task(stop.wait())
            ended = asyncio.create_task(session.closed.wait())
            try:
                await asyncio.wait({stopping, ended}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                ended.cancel()
                self.up.clear()
                self.session = None
            if stop.is_set():
                await session.close()
            else:
                self.last_error = session.close_reason
                await session.close()


class SmppPool:
    """The links of one channel, and submitting through whichever is bound."""

    def __init__(self, links: list[SmppLink], settings: SmppSettings) -> None:
        self.links = links
        self.settings = settings
        self._turn = 0

    async def ready(self, deadline: float) -> SmppSession:
        """A bound session (the one with the most free window); TransientError at the deadline."""
        while True:
            live = [link.session for link in self.links
                    if link.session is not None and not link.session.closed.is_set()]
            if live:
                top = max(session.free_window for session in live)
                best = [session for session in live if session.free_window == top]
                self._turn += 1
                return best[self._turn % len(best)]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                errors = "; ".join(link.last_error for link in self.links if link.last_error)
                raise TransientError(f"no SMPP connection is bound{': ' + errors if errors else ''}")
            waits = [asyncio.create_task(link.up.wait()) for link in self.links]
            try:
                await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

    async def submit(self, sm: ShortMessage) -> str:
        """The SMSC's message_id for one accepted submit_sm; retries what may heal."""
        s = self.settings
        deadline = time.monotonic() + s.send_timeout_seconds
        backoff = s.throttle_backoff_seconds
        while True:
            session = await self.ready(deadline)
            try:
                status, message_id = await session.submit(sm)
            except TransientError:
                if time.monotonic() >= deadline:
                    raise
                continue  # the session dropped: the next bound one takes the part
            if status == P.ESME_ROK:
                return message_id
            if status in P.THROTTLING:
                if time.monotonic() + backoff >= deadline:
                    raise TransientError(f"SMSC still throttling: {P.status_name(status)}")
                session.pacer.pause(backoff)
                backoff = min(backoff * 2, s.throttle_backoff_max_seconds)
                continue
            if status in P.TRANSIENT_STATUSES:
                raise TransientError(f"submit_sm refused for now: {P.status_name(status)}")
            raise PermanentError(f"submit_sm refused: {P.status_name(status)}")

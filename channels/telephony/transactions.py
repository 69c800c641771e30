"""SIP transaction timers (RFC 3261 §17): retransmission schedules, the 2xx-until-ACK
retransmitter, the server-side response cache for retransmitted requests, and client
transactions for requests we send (BYE, re-INVITE, INVITE).

Timers: T1 = 0.5 s doubling up to T2 = 4 s; give up after 64·T1 (32 s). Over TCP nothing is
retransmitted but the same overall timeouts apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from channels.telephony.sipmsg import SipMessage


@dataclass(frozen=True)
class Timers:
    t1: float = 0.5
    t2: float = 4.0

    @property
    def timeout(self) -> float:
        return 64 * self.t1


def retransmit_intervals(timers: Timers, *, cap: bool = True) -> list[float]:
    """Waits between successive sends: T1, 2·T1, ... (capped at T2 when `cap`), within 64·T1."""
    out: list[float] = []
    wait, total = timers.t1, 0.0
    while total + wait < timers.timeout:
        out.append(wait)
        total += wait
        wait = min(wait * 2, timers.t2) if cap else wait * 2
    return out


class Retransmitter:
    """Sends a message now and again on the schedule until `stop()` or the schedule runs out.

    `done` completes True when stopped (ACK or final response arrived), False on timeout.
    """

    def __init__(self, send: Callable[[bytes], None], data: bytes, timers: Timers, *,
                 reliable: bool, cap: bool = True) -> None:
        self._send = send
        self._data = data
        self._timers = timers
        self._reliable = reliable
        self._cap = cap
        loop = asyncio.get_running_loop()
        self.done: asyncio.Future[bool] = loop.create_future()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        self._send(self._data)
        waits = [self._timers.timeout] if self._reliable else retransmit_intervals(self._timers, cap=self._cap)
        spent = 0.0
        for wait in waits:
            await asyncio.sleep(wait)
            spent += wait
            if self.done.done():
                return
            if not self._reliable:
                self._send(self._data)
        await asyncio.sleep(max(0.0, self._timers.timeout - spent))
        if not self.done.done():
            self.done.set_result(False)

    def update(self, data: bytes) -> None:
        self._data = data

    def stop(self) -> None:
        if not self.done.done():
            self.done.set_result(True)
        self._task.cancel()

    async def aclose(self) -> None:
        self.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class ResponseCache:
    """The last response per server transaction, re-sent when the request is retransmitted."""

    def __init__(self, timers: Timers, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = timers.timeout
        self._clock = clock
        self._entries: dict[tuple[str, str, str], tuple[float, bytes | None]] = {}

    @staticmethod
    def key(req: SipMessage) -> tuple[str, str, str]:
        method = req.method or ""
        # ACK and CANCEL have their own transactions though they share the INVITE's branch.
        return req.branch or req.call_id, method, str(req.cseq[0])

    def seen(self, req: SipMessage) -> tuple[bool, bytes | None]:
        """(already seen, last response bytes if any)."""
        self._prune()
        entry = self._entries.get(self.key(req))
        return (entry is not None, entry[1] if entry else None)

    def remember(self, req: SipMessage, response: bytes | None) -> None:
        self._entries[self.key(req)] = (self._clock(), response)

    def _prune(self) -> None:
        now = self._clock()
        if len(self._entries) > 64:
            self._entries = {k: v for k, v in self._entries.items() if now - v[0] < self._ttl}

    def __len__(self) -> int:
        return len(self._entries)


class ClientTransactions:
    """Requests we sent, waiting for their final response (matched by Via branch and method)."""

    def __init__(self, timers: Timers) -> None:
        self.timers = timers
        self._pending: dict[tuple[str, str], tuple[asyncio.Future[SipMessage], Retransmitter]] = {}
        self._progress: dict[tuple[str, str], Callable[[SipMessage], None]] = {}

    async def request(self, msg: SipMessage, send: Callable[[bytes], None], *, reliable: bool,
                      provisional: Callable[[SipMessage], None] | None = None,
                      wait_seconds: float | None = None) -> SipMessage:
        """Send and wait for the final response; TimeoutError after 64·T1 without one (INVITE:
        `wait_seconds`, default 180 s). `provisional` sees each 1xx response."""
        key = (msg.branch, msg.method or "")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[SipMessage] = loop.create_future()
        rt = Retransmitter(send, msg.to_bytes(), self.timers, reliable=reliable, cap=msg.method != "INVITE")
        self._pending[key] = (fut, rt)
        if provisional is not None:
            self._progress[key] = provisional
        # INVITE may ring for minutes once a provisional response arrived (Timer C); others 64·T1.
        timeout = wait_seconds
        if timeout is None:
            timeout = 180.0 if msg.method == "INVITE" else self.timers.timeout
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"no final response to {msg.method} within {timeout} s") from exc
        finally:
            self._pending.pop(key, None)
            self._progress.pop(key, None)
            await rt.aclose()

    def response(self, resp: SipMessage) -> bool:
        """Hand a response to its transaction; False when nothing waits for it."""
        key = (resp.branch, resp.cseq[1])
        entry = self._pending.get(key)
        if entry is None:
            return False
        fut, rt = entry
        if resp.status < 200:
            if key[1] == "INVITE":
                rt.stop()  # a provisional response ends INVITE retransmissions (Timer A)
            if (progress := self._progress.get(key)) is not None:
                progress(resp)
            return True
        if not fut.done():
            fut.set_result(resp)
        return True

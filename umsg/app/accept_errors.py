"""Accept errors (EMFILE, ENFILE, ENOBUFS, ENOMEM) logged once per interval, not per attempt.

When the process runs out of descriptors, asyncio's selector loop (3.11, and later versions
alike) does not stop its accept burst at the first failure: every one of the `backlog`
remaining `accept()` calls fails too, each is reported through the loop's exception handler
with a traceback and each schedules one more retry, so the retries multiply and a connection
flood wrote hundreds of megabytes of log (tens of thousands of reports in ten seconds here).

`install` puts two things on the running loop, both undone by the function it returns:

- a stand-in for the listening socket during one accept burst: after the first failure for
  want of resources the rest of the burst sees "would block", so each listener reports once
  and retries once per second (asyncio's own pause), and accepts again as soon as
  descriptors are free;
- an exception handler that lets one accept-failure line through per `interval` seconds (with
  how many were suppressed since) and hands every other report to the handler that was there
  before (or asyncio's default).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 10.0
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

Context = dict[str, Any]
LoopHandler = Callable[[asyncio.AbstractEventLoop, Context], object]


def is_accept_error(context: Context) -> bool:
    """Whether an exception-handler report is asyncio failing to accept for want of resources."""
    if "accept" not in str(context.get("message", "")):
        return False
    exc = context.get("exception")
    return isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS


class AcceptErrorLimiter:
    """A loop exception handler: accept failures at most once per interval, the rest unchanged."""

    def __init__(self, previous: LoopHandler | None, interval: float = DEFAULT_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.previous = previous
        self.interval = interval
        self.clock = clock
        self.suppressed = 0
        self.reported = 0
        self._last: float | None = None

    def __call__(self, loop: asyncio.AbstractEventLoop, context: Context) -> None:
        if not is_accept_error(context):
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = self.clock()
        if self._last is not None and now - self._last < self.interval:
            self.suppressed += 1
            return
        self._last = now
        self.reported += 1
        exc = context.get("exception")
        sock = context.get("socket")
        getsockname = getattr(sock, "getsockname", None)
        where = getsockname() if callable(getsockname) else None
        # One line, no traceback: the cause is the whole story (descriptors ran out).
        log.error("cannot accept connections: out of resources; asyncio retries each second",
                  extra={"kv": {"error": exc.strerror if isinstance(exc, OSError) else exc,
                                "listener": where, "suppressed_since_last": self.suppressed,
                                "next_report_in_s": self.interval}})
        self.suppressed = 0


class _BurstSocket:
    """A listening socket for one accept burst: after one accept() fails for want of resources,
    the rest of the burst is told "would block" (asyncio then ends the burst)."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.exhausted = False

    def accept(self) -> Any:
        if self.exhausted:
            raise BlockingIOError(errno.EAGAIN, "resting until descriptors are free")
        try:
            return self.sock.accept()
        except OSError as exc:
            if exc.errno in _RESOURCE_ERRNOS:
                self.exhausted = True
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


_ACCEPT = "_accept_connection"  # the selector loop's per-burst accept (private, stable since 3.7)


def _guard_bursts(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    original = getattr(loop, _ACCEPT, None)
    if not callable(original):
        return lambda: None  # another loop implementation: it has its own accept path

    def accept_burst(protocol_factory: Any, sock: Any, *args: Any, **kwargs: Any) -> Any:
        real = sock.sock if isinstance(sock, _BurstSocket) else sock
        return original(protocol_factory, _BurstSocket(real), *args, **kwargs)

    setattr(loop, _ACCEPT, accept_burst)

    def restore() -> None:
        if getattr(loop, _ACCEPT, None) is accept_burst:
            delattr(loop, _ACCEPT)

    return restore


def install(loop: asyncio.AbstractEventLoop | None = None,
            interval: float = DEFAULT_INTERVAL_SECONDS) -> Callable[[], None]:
    """Bound accept-failure reports on `loop` (default: the running one); returns the undo."""
    loop = loop or asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(AcceptErrorLimiter(previous, interval))
    unguard = _guard_bursts(loop)

    def restore() -> None:
        unguard()
        loop.set_exception_handler(previous)

    return restore

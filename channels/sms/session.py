"""One SMPP transceiver connection: bind, a window of requests, keepalive, and a clean close.

The read loop answers enquire_link and unbind itself, resolves our requests by
sequence number and hands each deliver_sm to the handler in its own task (so MO
messages commit in groups), answering deliver_sm_resp only with the status the
handler returned after its commit. Bytes that are not a PDU end this session only:
we say generic_nack, close the socket and fail our open requests as transient, so
the link reconnects and the sender retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from channels.sms import pdu as P
from channels.sms.pdu import Pdu, PduError, ShortMessage
from channels.sms.settings import SmppSettings
from umsg.errors import PermanentError, TransientError

log = logging.getLogger(__name__)

# Answers a deliver_sm with the command_status for its deliver_sm_resp, after its commit.
DeliverHandler = Callable[[ShortMessage], Awaitable[int]]
# Told each accepted submit's message_id as its response is read (before any later PDU).
AcceptedHook = Callable[[str], None]

BIND_REFUSALS = frozenset({P.ESME_RINVPASWD, P.ESME_RINVSYSID})


class Pacer:
    """Spaces requests to a rate and holds them back after throttling answers."""

    def __init__(self, rate: float | None) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._paused_until = 0.0

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def wait(self) -> None:
        now = time.monotonic()
        slot = max(now, self._next, self._paused_until)
        self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)


class SmppSession:
    """A bound transceiver; `closed` is set once it can carry nothing more."""

    def __init__(self, settings: SmppSettings, label: str, handler: DeliverHandler,
                 on_accepted: AcceptedHook | None = None) -> None:
        self.settings = settings
        self.label = label
        self._handler = handler
        self._on_accepted = on_accepted
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._seq = 0
        self._pending: dict[int, asyncio.Future[Pdu]] = {}
        self._window = asyncio.Semaphore(settings.window)
        self._inflight_mo = asyncio.Semaphore(settings.max_inflight_mo)
        self._mo_tasks: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_rx = time.monotonic()
        self.pacer = Pacer(settings.rate_limit)
        self.closed = asyncio.Event()
        self.close_reason = ""

    # -- opening ------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and bind; raises TransientError (retry later) or PermanentError (bad credentials)."""
        s = self.settings
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(s.host, s.port), s.connect_timeout_seconds)
        except (OSError, TimeoutError) as exc:
            raise TransientError(f"cannot connect to {s.host}:{s.port}: {exc or type(exc).__name__}") from exc
        self._reader, self._writer = reader, writer
        body = P.bind_body(s.system_id, s.password.get_secret_value(), s.system_type)
        seq = self._next_seq()
        writer.write(Pdu(P.BIND_TRANSCEIVER, seq, body=body).encode())
        try:
            resp = await asyncio.wait_for(self._read_pdu(), s.response_timeout_seconds)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, PduError) as exc:
            self._abort()
            raise TransientError(f"bind to {s.host}:{s.port} failed: {exc or type(exc).__name__}") from exc
        if resp.command_id != P.BIND_TRANSCEIVER_RESP or resp.status != P.ESME_ROK:
            self._abort()
            why = f"bind_transceiver refused: {P.status_name(resp.status)}"
            if resp.status in BIND_REFUSALS:
                raise PermanentError(why)
            raise TransientError(why)
        self._last_rx = time.monotonic()
        self._tasks = [asyncio.create_task(self._read_loop(), name=f"smpp-read-{self.label}"),
                       asyncio.create_task(self._keepalive(), name=f"smpp-keepalive-{self.label}")]
        log.info("smpp %s bound to %s:%s as %s", self.label, s.host, s.port, s.system_id)

    def _next_seq(self) -> int:
        self._seq = self._seq % 0x7FFFFFFF + 1
        return self._seq

    async def _read_pdu(self) -> Pdu:
        assert self._reader is not None
        head = await self._reader.readexactly(4)
        length = P.frame_length(head)
        try:
            # A PDU once begun must arrive whole in time: a header that lies about its length
            # would otherwise stall the session (and every MO message behind it) until the
            # enquire_link noticed.
            async with asyncio.timeout(self.settings.response_timeout_seconds):
                rest = await self._reader.readexactly(length - 4)
        except TimeoutError as exc:
            raise PduError(f"a PDU of {length} bytes did not arrive whole in time") from exc
        return P.decode(head + rest)

    # -- requests -------------------------------------------------------------------------

    @property
    def free_window(self) -> int:
        return self.settings.window - len(self._pending)

    async def request(self, command_id: int, body: bytes = b"") -> Pdu:
        """Send one request inside the window and wait for its response (TransientError if none)."""
        async with self._window:
            if self.closed.is_set():
                raise TransientError(f"smpp session {self.label} is closed: {self.close_reason}")
            seq = self._next_seq()
            fut: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
            self._pending[seq] = fut
            try:
                self._write(Pdu(command_id, seq, body=body))
                try:
                    # A timeout scope, not wait_for: on Python 3.11 wait_for wraps every request in a task.
                    async with asyncio.timeout(self.settings.response_timeout_seconds):
                        return await fut
                except TimeoutError as exc:
                    # The SMSC may or may not have it; a session that stops answering is not trusted.
                    self.shutdown(f"no response to 0x{command_id:08X} in time")
                    raise TransientError(f"smpp {self.label}: no response in time") from exc
            finally:
                self._pending.pop(seq, None)

    async def submit(self, sm: ShortMessage) -> tuple[int, str]:
        """(command_status, message_id) of one submit_sm, paced by the rate limit and throttling."""
        await self.pacer.wait()
        resp = await self.request(P.SUBMIT_SM, sm.encode())
        return resp.status, (P.read_message_id(resp.body) if resp.status == P.ESME_ROK else "")

    def _write(self, pdu: Pdu) -> None:
        if self._writer is None or self._writer.is_closing():
            raise TransientError(f"smpp session {self.label} is closed: {self.close_reason}")
        self._writer.write(pdu.encode())

    # -- the read loop ------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        reason = "closed by the SMSC"
        try:
            while True:
                pdu = await self._read_pdu()
                self._last_rx = time.monotonic()
                if not await self._dispatch(pdu):
                    reason = "unbound by the SMSC"
                    break
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            reason = f"connection lost: {exc or type(exc).__name__}"
        except PduError as exc:
            reason = f"malformed PDU: {exc}"
            log.warning("smpp %s received a malformed PDU (%s); closing this session", self.label, exc)
            with contextlib.suppress(TransientError):
                self._write(Pdu(P.GENERIC_NACK, 0, P.ESME_RINVCMDLEN))
        self.shutdown(reason)

    async def _dispatch(self, pdu: Pdu) -> bool:
        if pdu.is_response:
            if pdu.command_id == P.SUBMIT_SM_RESP and pdu.status == P.ESME_ROK and self._on_accepted is not None:
                self._on_accepted(P.read_message_id(pdu.body))
            fut = self._pending.get(pdu.sequence)
            if fut is not None and not fut.done():
                fut.set_result(pdu)
            return True
        if pdu.command_id == P.ENQUIRE_LINK:
            self._write(Pdu(P.ENQUIRE_LINK_RESP, pdu.sequence))
        elif pdu.command_id == P.UNBIND:
            self._write(Pdu(P.UNBIND_RESP, pdu.sequence))
            return False
        elif pdu.command_id == P.DELIVER_SM:
            sm = ShortMessage.decode(pdu.body)  # PduError ends the session
            await self._inflight_mo.acquire()
            task = asyncio.create_task(self._deliver(pdu.sequence, sm), name=f"smpp-mo-{self.label}")
            self._mo_tasks.add(task)
            task.add_done_callback(self._mo_tasks.discard)
        else:
            self._write(Pdu(P.GENERIC_NACK, pdu.sequence, P.ESME_RINVCMDID))
        return True

    async def _deliver(self, sequence: int, sm: ShortMessage) -> None:
        try:
            try:
                status = await self._handler(sm)
            except Exception:  # noqa: BLE001 - one bad message never stops the session
                log.exception("smpp %s: handling a deliver_sm failed", self.label)
                status = P.ESME_RX_T_APPN
            with contextlib.suppress(TransientError):
                # Closed meanwhile: the SMSC resends, and the dedupe key makes that harmless.
                self._write(Pdu(P.DELIVER_SM_RESP, sequence, status, P.message_id_body("")))
        finally:
            self._inflight_mo.release()

    async def _keepalive(self) -> None:
        interval = self.settings.enquire_link_seconds
        while not self.closed.is_set():
            idle = time.monotonic() - self._last_rx
            if idle < interval:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.closed.wait(), interval - idle)
                continue
            try:
                await self.request(P.ENQUIRE_LINK)
            except TransientError:
                return  # request() already closed the session

    # -- closing ------------------------------------------------------------------------------

    def shutdown(self, reason: str) -> None:
        """Drop the connection now; open requests fail as transient (safe to call twice)."""
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        log.info("smpp %s closed: %s", self.label, reason)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(TransientError(f"smpp {self.label}: {reason}"))
        self._abort()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()

    def _abort(self) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.close()

    async def close(self, grace: float = 5.0) -> None:
        """Unbind politely, let deliver_sm handlers in flight finish, then close."""
        if not self.closed.is_set():
            if self._mo_tasks:
                await asyncio.wait(set(self._mo_tasks), timeout=grace)
            with contextlib.suppress(TransientError, TimeoutError):
                await asyncio.wait_for(self.request(P.UNBIND), min(grace, self.settings.response_timeout_seconds))
            self.shutdown("closed by us")
        for task in list(self._mo_tasks):
            task.cancel()
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 1.0)

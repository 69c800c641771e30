"""A real SMPP 3.4 server peer (`smpp34.Server`) driven from a test, and a TCP proxy for faults.

`Smsc` accepts submit_sm (recording each accepted part), can refuse the next ones with
ESME_RTHROTTLED, hold them unanswered (all, or all after the first N accepted), send
delivery receipts with the id in hex, decimal or the receipted_message_id TLV, push MO
deliver_sm to a bound session, and stop and start again on the same port. `Proxy` sits between our client and the server
and can write arbitrary bytes (a malformed PDU) into one connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import smpp34

from peers.common import free_port


@dataclass
class Submitted:
    session_id: str
    source: str
    destination: str
    data_coding: int
    esm_class: int
    short_message: bytes
    tlvs: dict[int, bytes]
    message_id: str
    registered_delivery: int


@dataclass
class Smsc:
    port: int = field(default_factory=free_port)
    # "hex": submit_sm_resp ids in hex, receipts in decimal; "decimal": the other way round;
    # "tlv": receipts name the id (as given) only in receipted_message_id; None: no receipts.
    receipts: str | None = "hex"
    receipt_stat: str = "DELIVRD"
    throttle_next: int = 0
    hold: bool = False
    # Hold every submit once this many have been accepted (a connection dying mid long message).
    hold_after: int | None = None
    submitted: list[Submitted] = field(default_factory=list)
    throttled: int = 0
    esmes: dict[str, Any] = field(default_factory=dict)
    _server: Any = None
    _task: asyncio.Task[None] | None = None
    _next_id: int = 1000
    _held: list[Any] = field(default_factory=list)
    _side: set[asyncio.Task[Any]] = field(default_factory=set)
    receipt_acks: list[int] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_sessions(self, count: int = 1, seconds: float = 10.0) -> None:
        """Until `count` ESME sessions are bound here (the server reports binds asynchronously)."""
        async with asyncio.timeout(seconds):
            while len(self.esmes) < count:
                self._changed.clear()
                await self._changed.wait()

    async def start(self) -> None:
        self._server = smpp34.Server("127.0.0.1", self.port, system_id="SMSC")
        await self._server.start()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._server, self._task = None, None
        self.esmes.clear()
        self._held.clear()  # never answered: the client must resubmit them

    async def aclose(self) -> None:
        await self.stop()
        for t in list(self._side):
            t.cancel()

    async def _loop(self) -> None:
        while True:
            ev = await self._server.next()
            if isinstance(ev, smpp34.Esme):
                self.esmes[ev.session_id] = ev
                self._changed.set()
            elif isinstance(ev, smpp34.Unbound):
                self.esmes.pop(ev.session_id, None)
                self._changed.set()
            elif isinstance(ev, smpp34.SubmitSmEvent):
                self._on_submit(ev)

    def _on_submit(self, ev: Any) -> None:
        if self.throttle_next > 0:
            self.throttle_next -= 1
            self.throttled += 1
            ev.reject(smpp34.ESME_RTHROTTLED)  # type: ignore[attr-defined]
            return
        if self.hold or (self.hold_after is not None and len(self.submitted) >= self.hold_after):
            self._held.append(ev)
            return
        self._accept(ev)

    def release(self) -> None:
        """Answer the held submits now."""
        self.hold, self.hold_after = False, None
        held, self._held = self._held, []
        for ev in held:
            self._accept(ev)

    def drop_held(self) -> None:
        """Never answer the held submits (their connection is gone) and stop holding new ones."""
        self.hold, self.hold_after = False, None
        self._held.clear()

    def _accept(self, ev: Any) -> None:
        self._next_id += 1
        n = self._next_id
        message_id = f"{n:X}" if self.receipts in ("hex", "tlv", None) else str(n)
        ev.accept(message_id)
        self.submitted.append(Submitted(
            ev.session_id, ev.source_addr, ev.destination_addr, ev.data_coding, ev.esm_class,
            bytes(ev.short_message), {t.tag: bytes(t.value) for t in ev.tlvs}, message_id, ev.registered_delivery))
        if self.receipts and ev.registered_delivery:
            self._spawn(self._receipt(ev.session_id, ev.destination_addr, ev.source_addr, n, message_id))

    def _spawn(self, aw: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(aw)
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    async def _receipt(self, session_id: str, handset: str, us: str, n: int, message_id: str) -> None:
        esme = self.esmes.get(session_id)
        if esme is None:
            return
        stat = self.receipt_stat
        err = "000" if stat == "DELIVRD" else "001"
        tlvs: list[Any] = []
        if self.receipts == "tlv":
            text_id = ""
            tlvs = [smpp34.Tlv(smpp34.TLV_RECEIPTED_MESSAGE_ID, message_id.encode() + b"\0"),  # type: ignore[attr-defined]
                    smpp34.Tlv(smpp34.TLV_MESSAGE_STATE, bytes([2 if stat == "DELIVRD" else 5]))]  # type: ignore[attr-defined]
        elif self.receipts == "hex":
            text_id = f"{n:010d}"  # submit_sm_resp said hex; the receipt says decimal
        else:
            text_id = f"{n:x}"  # submit_sm_resp said decimal; the receipt says hex
        text = (f"id:{text_id} sub:001 dlvrd:{'001' if stat == 'DELIVRD' else '000'} "
                f"submit date:2401011200 done date:2401011201 stat:{stat} err:{err} text:hello")
        resp = await esme.deliver_sm(us, text.encode(), source_addr=handset, esm_class=0x04, tlvs=tlvs)
        self.receipt_acks.append(resp.command_status)

    async def mo(self, short_message: bytes = b"", *, source: str = "447700900123", dest: str = "447700900000",
                 data_coding: int = 0, esm_class: int = 0, tlvs: list[Any] | None = None,
                 session: int = 0) -> int:
        """Push one deliver_sm to a bound session; the command_status of our answer."""
        esme = list(self.esmes.values())[session]
        resp = await esme.deliver_sm(dest, short_message, source_addr=source, source_addr_ton=1,
                                     data_coding=data_coding, esm_class=esm_class, tlvs=tlvs or [])
        return cast(int, resp.command_status)


class Proxy:
    """A TCP relay from a local port to the SMSC; `inject` writes raw bytes into one connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.to_client: list[asyncio.StreamWriter] = []
        self.to_server: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def drop(self) -> None:
        """Go away abruptly: stop listening and cut every connection (no unbind, no answers)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in self.to_client + self.to_server:
            w.transport.abort()
        self.to_client.clear()
        self.to_server.clear()
        for t in list(self._tasks):
            t.cancel()

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        try:
            sreader, swriter = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            cwriter.transport.abort()  # the SMSC behind us is down
            return
        self.to_client.append(cwriter)
        self.to_server.append(swriter)
        for r, w in ((creader, swriter), (sreader, cwriter)):
            task = asyncio.create_task(self._pipe(r, w))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def inject(self, connection: int, data: bytes) -> None:
        self.to_client[connection].write(data)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in self.to_client:
            w.close()
        for t in list(self._tasks):
            t.cancel()


# -- the gateway side of the SMS tests ----------------------------------------------------


@asynccontextmanager
async def running_smsc(**options: Any) -> AsyncIterator[Smsc]:
    smsc = Smsc(**options)
    await smsc.start()
    try:
        yield smsc
    finally:
        await smsc.aclose()


@asynccontextmanager
async def smpp_channel(core: Any, port: int, smsc: Smsc | None = None, *, sink: Any = None,
                       **overrides: Any) -> AsyncIterator[Any]:
    """A started SMPP channel of the core bound to `port` (every connection bound on entry).

    `sink` replaces the core's ingest (the benchmark measures the channel's own share with it).
    """
    from channels.sms import SmppSettings, SmsChannel

    options: dict[str, Any] = {"host": "127.0.0.1", "port": port, "system_id": "umsg", "password": "secret",
                               "source_addr": "447700900000", "reconnect_min_seconds": 0.1,
                               "reconnect_max_seconds": 0.5, "response_timeout_seconds": 5,
                               "throttle_backoff_seconds": 0.05, **overrides}
    channel = SmsChannel("sms", SmppSettings(**options))
    channel.bind(core.channel_services())
    await channel.start(sink or core.ingest.ingest)
    try:
        await channel.wait_bound()
        if smsc is not None:
            await smsc.wait_sessions(channel.settings.connections)
        yield channel
    finally:
        await channel.aclose()


async def eventually(check: Any, what: str, seconds: float = 10.0) -> Any:
    """Await `check()` until it returns something truthy (a condition with a timeout, not a sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)

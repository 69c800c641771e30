"""The SIP front door against hostile callers on real sockets: SIP-over-TCP connections capped
in all and per address, silent and dribbling connections closed, and an INVITE whose 200 is
never ACKed (sipp) ending its call with one log line, no traceback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from peers import sipp
from peers.common import await_until

from channels.telephony.call import Call
from channels.telephony.transactions import Timers
from channels.telephony.transport import TcpLimits
from channels.telephony.uas import ServerConfig, SipServer

LIMITS = TcpLimits(max_connections=12, max_per_peer=4, first_message_seconds=1.0, message_seconds=1.0,
                   idle_seconds=60.0)


class Answerer:
    def __init__(self) -> None:
        self.calls: list[Call] = []

    async def run(self, call: Call) -> None:
        self.calls.append(call)
        await call.answer()
        await call.ended.wait()


@pytest.fixture
async def server() -> AsyncIterator[tuple[SipServer, Answerer]]:
    app = Answerer()
    # Short timers: the 200 is given up on after 64·T1 = 3.2 s instead of 32 s.
    srv = SipServer(ServerConfig("127.0.0.1", 0, tcp_limits=LIMITS), lambda n: app if n == "7" else None,
                    timers=Timers(t1=0.05, t2=0.4))
    await srv.start()
    try:
        yield srv, app
    finally:
        await srv.aclose()


def options(port: int, local: tuple[str, int]) -> bytes:
    return (f"OPTIONS sip:7@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP {local[0]}:{local[1]};branch=z9hG4bK{uuid.uuid4().hex[:12]}\r\n"
            f"From: <sip:probe@{local[0]}>;tag=p1\r\nTo: <sip:7@127.0.0.1>\r\n"
            f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()


async def connect(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True when the server hangs up (EOF or reset) within a generous bound."""
    try:
        return await asyncio.wait_for(reader.read(1), 20) == b""
    except ConnectionError:
        return True


async def answered(port: int, source: str) -> bytes:
    reader, writer = await connect(port, source)
    try:
        writer.write(options(port, writer.get_extra_info("sockname")))
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
    finally:
        writer.close()


async def test_tcp_connections_are_capped_per_address_and_in_all(server: tuple[SipServer, Answerer]) -> None:
    srv, _app = server
    port = srv.tcp_port or 0
    held: list[asyncio.StreamWriter] = []
    try:
        # One host over its share: the first four are kept, the rest closed at once.
        first = [await connect(port, "127.0.0.2") for _ in range(8)]
        held += [w for _r, w in first]
        # A probe from each kept connection keeps it busy past the first-message deadline.
        for _r, w in first[:4]:
            w.write(options(port, w.get_extra_info("sockname")))
        fates = [await closed_by_server(r) for r, _w in first[4:]]
        assert fates == [True] * 4
        for r, _w in first[:4]:
            assert (await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 20)).startswith(b"SIP/2.0 200")
        # Another host is served while the first holds its share.
        assert (await answered(port, "127.0.0.1")).startswith(b"SIP/2.0 200")
        # Fill the listener from more hosts: past 12 in all, even a new host is turned away.
        for host in ("127.0.0.3", "127.0.0.4"):
            for _ in range(4):
                r, w = await connect(port, host)
                held.append(w)
                w.write(options(port, w.get_extra_info("sockname")))
                await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 20)
        late_r, late_w = await connect(port, "127.0.0.5")
        held.append(late_w)
        assert await closed_by_server(late_r)
        assert srv.listeners.refused >= 5
    finally:
        for w in held:
            w.close()


async def test_silent_and_dribbling_tcp_connections_are_closed(server: tuple[SipServer, Answerer]) -> None:
    srv, _app = server
    port = srv.tcp_port or 0
    silent_r, silent_w = await connect(port, "127.0.0.2")
    try:
        assert await closed_by_server(silent_r)  # nothing within first_message_seconds
    finally:
        silent_w.close()
    # A head sent one byte at a time never completes: closed after message_seconds, long
    # before the whole request went out.
    reader, writer = await connect(port, "127.0.0.2")
    request = options(port, writer.get_extra_info("sockname"))
    sent = 0
    with contextlib.suppress(ConnectionError):
        for byte in request:
            if reader.at_eof():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            sent += 1
            with contextlib.suppress(asyncio.TimeoutError):
                if await asyncio.wait_for(reader.read(1), 0.2) == b"":
                    break
    writer.close()
    assert sent < len(request) // 2, (sent, len(request))
    # The listener is fine for everyone else.
    assert (await answered(port, "127.0.0.1")).startswith(b"SIP/2.0 200")


NO_ACK = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="no ack">
  <send retrans="500"><![CDATA[

INVITE sip:7@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:7@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000

]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200"/>
  <recv request="BYE"/>
  <send><![CDATA[

SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
</scenario>
"""


async def test_an_invite_never_acked_ends_quietly(server: tuple[SipServer, Answerer], tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    srv, app = server
    scenario = tmp_path / "no_ack.xml"
    scenario.write_text(NO_ACK)
    caplog.set_level(logging.INFO)
    # -nd: no default behaviours, so sipp ignores our 200's retransmissions instead of hanging up.
    await sipp.run(tmp_path / "sipp", f"127.0.0.1:{srv.port}", "-sf", str(scenario), "-m", "1", "-nd",
                   seconds=30)
    await await_until(lambda: app.calls and app.calls[0].ended.is_set(), "the call to end")
    await await_until(lambda: srv.active_calls == 0, "the call to be forgotten")
    assert app.calls[0].end_reason == "no ACK"
    ours = [r for r in caplog.records if r.name.startswith("channels.")]
    assert not [r for r in ours if r.exc_info], [r.getMessage() for r in ours if r.exc_info]
    ended = [r for r in ours if "no ACK" in r.getMessage()]
    assert len(ended) == 1 and ended[0].levelno == logging.WARNING

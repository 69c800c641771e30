"""The SIP server's answers seen from the wire and from our own outgoing calls: OPTIONS with
Allow, 481 for a BYE outside any dialog, 404 for an unconfigured number, 486 over the call
limit, a session-refresh re-INVITE answered with the current SDP while media keeps flowing,
T.38 negotiated on an outgoing call (in the INVITE, or by our re-INVITE), and a re-INVITE from
the called side."""

from __future__ import annotations

import array
import asyncio
import math
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from channels.telephony import sdp
from channels.telephony.call import Call
from channels.telephony.uac import Busy, Rejected, SipClient
from channels.telephony.uas import ServerConfig, SipServer
from channels.voicemail import VoicemailChannel, VoicemailSettings
from channels.voicemail.audio import to_wav
from storage.models import Message
from umsg.core import Core


def tone(seconds: float, hz: float = 440.0, amplitude: int = 8000) -> bytes:
    samples = array.array("h", (int(amplitude * math.sin(2 * math.pi * hz * i / 8000))
                                for i in range(int(seconds * 8000))))
    return samples.tobytes()


class Holder:
    """Answers (audio, or T.38 when offered; echoing datagrams) and holds until the caller hangs up."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    async def run(self, call: Call) -> None:
        self.calls.append(call)
        if call.offered_t38() is not None:
            udptl = await call.answer_t38()
            while not call.ended.is_set():
                data = await udptl.receive(0.2)
                if data is not None:
                    udptl.send(data)
            return
        await call.answer()
        await call.ended.wait()


@pytest.fixture
async def holder_server() -> AsyncIterator[tuple[SipServer, Holder]]:
    holder = Holder()
    server = SipServer(ServerConfig("127.0.0.1", 0, max_calls=1), lambda n: holder if n == "7" else None)
    await server.start()
    try:
        yield server, holder
    finally:
        await server.aclose()


@pytest.fixture
async def client() -> AsyncIterator[SipClient]:
    c = await SipClient.open()
    try:
        yield c
    finally:
        await c.aclose()


async def exchange(port: int, request: str) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        s.sendto(request.encode(), ("127.0.0.1", port))
        return await asyncio.to_thread(s.recv, 65535)


def request(method: str, port: int, *, to_tag: str = "") -> str:
    tag = f";tag={to_tag}" if to_tag else ""
    return (f"{method} sip:7@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{method}1\r\n"
            f"From: <sip:+15551234@x>;tag=1\r\nTo: <sip:7@127.0.0.1>{tag}\r\nCall-ID: {method}-nowhere\r\n"
            f"CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n")


async def test_options_is_answered_200_with_allow(holder_server: tuple[SipServer, Holder]) -> None:
    server, _ = holder_server
    answer = (await exchange(server.port, request("OPTIONS", server.port))).decode()
    assert answer.startswith("SIP/2.0 200")
    allow = next(line for line in answer.split("\r\n") if line.lower().startswith("allow:"))
    assert {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"} <= {m.strip() for m in allow.split(":", 1)[1].split(",")}


async def test_bye_for_unknown_dialog_is_481(holder_server: tuple[SipServer, Holder]) -> None:
    server, _ = holder_server
    answer = await exchange(server.port, request("BYE", server.port, to_tag="nope"))
    assert answer.startswith(b"SIP/2.0 481")


async def test_unconfigured_number_is_404(holder_server: tuple[SipServer, Holder], client: SipClient) -> None:
    server, _ = holder_server
    with pytest.raises(Rejected) as err:
        await client.call(f"sip:999@127.0.0.1:{server.port}")
    assert err.value.status == 404
    assert server.active_calls == 0


async def test_over_the_call_limit_is_486(holder_server: tuple[SipServer, Holder], client: SipClient) -> None:
    server, holder = holder_server
    first = await client.call(f"sip:7@127.0.0.1:{server.port}")
    with pytest.raises(Busy) as err:
        await client.call(f"sip:7@127.0.0.1:{server.port}")
    assert err.value.status == 486
    await first.hangup()
    await asyncio.wait_for(holder.calls[0].ended.wait(), 5)
    second = await client.call(f"sip:7@127.0.0.1:{server.port}")  # the slot is free again
    await second.hangup()


async def test_t38_outgoing_call_carries_udptl(holder_server: tuple[SipServer, Holder], client: SipClient) -> None:
    server, holder = holder_server
    call = await client.call(f"sip:7@127.0.0.1:{server.port}", t38=True)
    assert call.audio_choice is None and sdp.t38_offered(call.offer) is not None
    udptl = call.datagrams()
    udptl.send(b"\x00\x01t38-datagram")
    assert await udptl.receive(5) == b"\x00\x01t38-datagram"
    await call.hangup()
    assert holder.calls[0].local_sdp is not None and holder.calls[0].local_sdp.first("image") is not None


async def test_reinvite_from_the_called_side_reaches_our_outgoing_call(
        holder_server: tuple[SipServer, Holder], client: SipClient) -> None:
    server, holder = holder_server
    call = await client.call(f"sip:7@127.0.0.1:{server.port}")
    far = holder.calls[0]
    assert far.local_sdp is not None and call.local_sdp is not None
    status, answer = await far.reinvite(far.local_sdp)
    assert status == 200 and answer is not None
    assert answer.first("audio") is not None and answer.to_bytes() == call.local_sdp.to_bytes()
    await far.hangup()  # BYE from the called side ends our call
    await asyncio.wait_for(call.ended.wait(), 5)
    assert call.end_reason == "remote hangup"


async def test_our_reinvite_to_t38_switches_or_is_refused(
        holder_server: tuple[SipServer, Holder], client: SipClient) -> None:
    server, holder = holder_server
    call = await client.call(f"sip:7@127.0.0.1:{server.port}")
    assert call.rtp is not None
    offer = sdp.image_description("127.0.0.1", call.rtp.local_port, sdp.new_session_id())
    assert await call.reinvite(offer) == (488, None)  # no handler on the far side: stay on G.711
    far = holder.calls[0]

    async def accept(theirs: sdp.SessionDescription) -> sdp.SessionDescription:
        assert far.rtp is not None and sdp.t38_offered(theirs) is not None
        return sdp.image_description("127.0.0.1", far.rtp.local_port, sdp.new_session_id())

    far.on_offer = accept
    status, answer = await call.reinvite(offer)
    assert status == 200 and answer is not None and sdp.t38_offered(answer) is not None
    assert call.local_sdp is offer
    await call.hangup()


@pytest.fixture
async def voicemail(core: Core, tmp_path: Path) -> AsyncIterator[VoicemailChannel]:
    greeting = tmp_path / "greeting.wav"
    greeting.write_bytes(to_wav(b"\x00\x00" * 800))
    ch = VoicemailChannel("vm", VoicemailSettings(port=0, mailboxes={
        "200": {"greeting": str(greeting), "beep": False, "min_seconds": 0.5}}))
    ch.bind(core.channel_services())
    await ch.start(core.ingest.ingest)
    try:
        yield ch
    finally:
        await ch.aclose()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_session_refresh_keeps_media_and_recording(
        core: Core, voicemail: VoicemailChannel, client: SipClient, transport: str) -> None:
    # Our own outgoing call into our own voicemail, SIP over UDP or TCP.
    call = await client.call(f"sip:200@127.0.0.1:{voicemail.port};transport={transport}")
    assert call.source.proto == transport
    assert call.local_sdp is not None
    before = call.offer.to_bytes()
    assert await call.play(b"\x00\x00" * 2400 + tone(1.0))
    refresh = sdp.parse(call.local_sdp.to_bytes())
    refresh.version += 1
    status, answer = await call.reinvite(refresh)
    # The current SDP, unchanged (same port, same o= version): media was not touched.
    assert status == 200 and answer is not None and answer.to_bytes() == before
    assert await call.play(tone(1.0))
    await call.hangup()  # the 200 to our BYE comes after the voicemail was committed
    async with core.readers() as s:
        (msg,) = list(await s.scalars(select(Message).where(Message.channel == "vm")))
    meta = msg.flags.get("meta", msg.flags)
    assert "Voicemail from" in (msg.text or "")
    assert abs(meta["duration_seconds"] - 2.0) <= 0.1, meta
    assert meta["rtp"]["lost"] == 0 and meta["rtp"]["received"] >= 110, meta

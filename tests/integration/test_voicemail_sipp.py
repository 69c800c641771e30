"""sipp callers against the voicemail channel: DTMF on the item (uac_pcap, PCMA), concurrent
callers, and malformed SIP that must not hurt the listener."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from peers import sipp
from sqlalchemy import func, select

from channels.voicemail import VoicemailChannel, VoicemailSettings
from channels.voicemail.audio import to_wav
from storage.models import Message
from umsg.core import Core

pytestmark = pytest.mark.slow


@pytest.fixture
async def voicemail(core: Core, tmp_path: Path) -> AsyncIterator[VoicemailChannel]:
    greeting = tmp_path / "greeting.wav"
    # Longer than uac_pcap's 8 s of audio: its DTMF "1" lands during the greeting (a menu choice).
    greeting.write_bytes(to_wav(b"\x00\x00" * 8000 * 10))
    ch = VoicemailChannel("vm", VoicemailSettings(port=0, max_calls=30, mailboxes={
        "service": {"greeting": str(greeting), "beep": False, "min_seconds": 0.5}}))
    ch.bind(core.channel_services())
    await ch.start(core.ingest.ingest)
    try:
        yield ch
    finally:
        await ch.aclose()


async def voicemails(core: Core) -> list[Message]:
    async with core.readers() as s:
        return list(await s.scalars(select(Message).where(Message.channel == "vm")))


async def test_uac_pcap_digit_is_carried_on_the_item(core: Core, voicemail: VoicemailChannel, tmp_path: Path) -> None:
    code, out = await sipp.run(tmp_path / "sipp", f"127.0.0.1:{voicemail.port}", "-sn", "uac_pcap",
                               "-m", "1", "-s", "service")
    assert code == 0, out
    (msg,) = await voicemails(core)
    assert msg.flags.get("dtmf") == "1" or msg.flags.get("meta", {}).get("dtmf") == "1", msg.flags
    assert "missed" in (msg.text or "").lower()  # nothing recorded after the greeting


async def test_malformed_sip_never_hurts_the_listener(core: Core, voicemail: VoicemailChannel, tmp_path: Path) -> None:
    good = (f"INVITE sip:service@127.0.0.1:{voicemail.port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n"
            "From: <sip:a@b>;tag=1\r\nTo: <sip:service@127.0.0.1>\r\nCall-ID: bad-1\r\nCSeq: 1 INVITE\r\n")
    cases = [good.encode()[:50], (good + "Content-Length: 999\r\n\r\nv=0").encode(),
             (good + "CSeq: nonsense\r\n\r\n").encode().replace(b"CSeq: 1 INVITE\r\n", b""),
             (good + "Content-Length: 70000\r\n\r\n").encode() + b"x" * 60000, b"\x00" * 100, b"\r\n\r\n",
             (good + "Broken header without colon\r\n\r\n").encode()]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        answers = []
        for data in cases:
            s.sendto(data, ("127.0.0.1", voicemail.port))
        for data in cases:  # the ones still addressable get 400; the rest are dropped silently
            del data
            try:
                answers.append((await asyncio.to_thread(s.recv, 65535)).split(b"\r\n", 1)[0])
            except TimeoutError:
                break
    assert answers and all(a.startswith(b"SIP/2.0 400") for a in answers), answers
    assert voicemail.server is not None and voicemail.server.stats["malformed"] == len(cases) - 1
    code, out = await sipp.run(tmp_path / "sipp", f"127.0.0.1:{voicemail.port}", "-sn", "uac_pcap",
                               "-m", "1", "-s", "service")
    assert code == 0, out
    assert len(await voicemails(core)) == 1


async def test_twenty_simultaneous_callers_are_all_recorded(
        core: Core, voicemail: VoicemailChannel, tmp_path: Path) -> None:
    code, out = await sipp.run(tmp_path / "sipp", f"127.0.0.1:{voicemail.port}", "-sn", "uac_pcap",
                               "-m", "20", "-l", "20", "-r", "20", "-s", "service", seconds=120)
    assert code == 0, out
    msgs = await voicemails(core)
    assert len(msgs) == 20
    async with core.readers() as s:
        assert await s.scalar(select(func.count(func.distinct(Message.dedupe_key)))) == 20
    assert voicemail.server is not None and voicemail.server.active_calls == 0
    assert all(m.to_addrs == ["service"] for m in msgs)


async def test_call_over_tcp_is_recorded(core: Core, voicemail: VoicemailChannel, tmp_path: Path) -> None:
    # SIP over one TCP connection (`-t t1`); media stays RTP over UDP.
    assert voicemail.server is not None and voicemail.server.tcp_port == voicemail.port
    code, out = await sipp.run(tmp_path / "sipp", f"127.0.0.1:{voicemail.port}", "-sn", "uac_pcap",
                               "-m", "1", "-s", "service", "-t", "t1")
    assert code == 0, out
    (msg,) = await voicemails(core)
    assert msg.to_addrs == ["service"] and msg.dedupe_key.startswith("sip:")
    assert msg.flags.get("dtmf") == "1" or msg.flags.get("meta", {}).get("dtmf") == "1", msg.flags


async def test_cancel_before_answer_gets_487(core: Core, tmp_path: Path) -> None:
    # A mailbox app that never answers: the call stays ringing until the CANCEL.
    hold = tmp_path / "hold.wav"
    hold.write_bytes(to_wav(b"\x00\x00" * 80))
    ch = VoicemailChannel("vm", VoicemailSettings(port=0, mailboxes={"7": {"greeting": str(hold)}}))
    ch.bind(core.channel_services())
    await ch.start(core.ingest.ingest)
    assert ch.server is not None
    ch.server.app_for = lambda number: _Ringer() if number == "7" else None
    sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    head = (f"sip:7@127.0.0.1:{ch.port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKc1\r\n"
            "From: <sip:+15551234@x>;tag=1\r\nTo: <sip:7@127.0.0.1>\r\nCall-ID: cancel-1\r\n")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(10)
            s.sendto(f"INVITE {head}CSeq: 1 INVITE\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}".encode(),
                     ("127.0.0.1", ch.port))
            seen = [(await asyncio.to_thread(s.recv, 65535)).split(b"\r\n", 1)[0] for _ in range(2)]
            assert seen == [b"SIP/2.0 100 Trying", b"SIP/2.0 180 Ringing"]
            s.sendto(f"CANCEL {head}CSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n".encode(), ("127.0.0.1", ch.port))
            got = sorted([(await asyncio.to_thread(s.recv, 65535)).split(b"\r\n", 1)[0] for _ in range(2)])
            assert got == [b"SIP/2.0 200 OK", b"SIP/2.0 487 Request Terminated"]
        assert await voicemails(core) == []
    finally:
        await ch.aclose()


class _Ringer:
    async def run(self, call: Any) -> None:
        await call.ended.wait()

"""baresip calls a mailbox and plays speech until it hangs up: the stored recording matches what
was played (duration within 100 ms, same loudness envelope), an MP3 is derived, and the owner's
email with the playable MP3 reaches a real SMTP receiver."""

from __future__ import annotations

import array
import asyncio
import email
import io
import math
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiosmtpd.controller import Controller
from peers import baresip
from peers.common import free_port
from sqlalchemy import select

from channels.email import EmailChannel, EmailSettings
from channels.voicemail import VoicemailChannel, VoicemailSettings
from channels.voicemail.audio import to_wav, trim_silence
from storage.models import Message, Part
from umsg.core import Core
from umsg.outbound.dispatcher import Dispatcher

pytestmark = pytest.mark.slow
T = TypeVar("T")
THRESHOLD = 400


def pcm_of(wav_bytes: bytes) -> bytes:
    with wave.open(io.BytesIO(wav_bytes)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        return bytes(w.readframes(w.getnframes()))


def envelope(pcm: bytes, window: int = 160) -> list[float]:
    s = array.array("h")
    s.frombytes(pcm)
    return [math.sqrt(sum(x * x for x in s[i: i + window]) / window) for i in range(0, len(s) - window, window)]


def best_correlation(a: list[float], b: list[float], max_lag: int = 10) -> float:
    def corr(x: list[float], y: list[float]) -> float:
        n = min(len(x), len(y))
        x, y = x[:n], y[:n]
        mx, my = sum(x) / n, sum(y) / n
        cov = sum((p - mx) * (q - my) for p, q in zip(x, y, strict=True))
        vx = math.sqrt(sum((p - mx) ** 2 for p in x))
        vy = math.sqrt(sum((q - my) ** 2 for q in y))
        return cov / (vx * vy) if vx and vy else 0.0

    return max(corr(a[lag:], b) if lag >= 0 else corr(a, b[-lag:]) for lag in range(-max_lag, max_lag + 1))


async def poll(core: Core, fetch: Callable[[], Awaitable[T | None]], what: str, seconds: float = 30) -> T:
    """Re-query after each committed event until something is there (the BYE was answered after
    the commit, so it is normally there at once)."""
    async with asyncio.timeout(seconds):
        while (found := await fetch()) is None:
            await core.events.wait(0.5)
    if found is None:
        raise AssertionError(what)
    return found


class Receiver:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(envelope.content)
        return "250 OK"


async def decoded_seconds(data: bytes, tmp: Path) -> float:
    """Decode the MP3 the way a player does (gapless info honoured) and count the samples."""
    path = tmp / "got.mp3"
    path.write_bytes(data)
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-v", "error", "-i", str(path), "-ac", "1", "-ar", "8000", "-f", "s16le", "pipe:1",
        stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    return len(out) / 16000


async def test_baresip_message_is_stored_faithfully_and_mailed(make_settings: Any, tmp_path: Path) -> None:
    core = await Core.open(make_settings(converters=["wav-to-mp3"]))
    await core.start()
    receiver = Receiver()
    smtp = Controller(receiver, hostname="127.0.0.1", port=free_port())
    smtp.start()
    greeting = tmp_path / "greeting.wav"
    greeting.write_bytes(to_wav(b"\x00\x00" * 8000))  # one second: the caller's lead silence covers it
    vm = VoicemailChannel("vm", VoicemailSettings(port=0, mailboxes={"100": {
        "greeting": str(greeting), "beep": False, "owner_email": "owner@acme.test", "min_seconds": 1}}))
    mail = EmailChannel("email", EmailSettings(domain="acme.test", relay=f"smtp://127.0.0.1:{smtp.port}"))
    vm.bind(core.channel_services())
    await vm.start(core.ingest.ingest)
    try:
        played = baresip.make_wav(tmp_path, "Hello, this is Alice. Please call me back about my order, "
                                  "number four two seven. Thank you.", lead_silence=2.0)
        code, out = await baresip.dial(baresip.prepare(tmp_path / "b", played), f"sip:100@127.0.0.1:{vm.port}", 40)
        assert code == 0, out[-2000:]

        async def stored() -> Message | None:
            async with core.readers() as s:
                return await s.scalar(select(Message).where(Message.channel == "vm"))

        msg = await poll(core, stored, "the stored voicemail")
        async with core.readers() as s:
            parts = {p.media_type: p for p in await s.scalars(select(Part).where(Part.message_id == msg.id))}
        assert msg.to_addrs == ["100"] and msg.text and "Voicemail from" in msg.text
        wav_part, mp3_part = parts["audio/wav"], parts["audio/mpeg"]
        assert mp3_part.derived_from_id == wav_part.id
        got = pcm_of(await core.blobs.get(wav_part.sha256))
        want = trim_silence(pcm_of(played.read_bytes()), THRESHOLD)
        got_s, want_s = len(got) / 16000, len(want) / 16000
        assert abs(got_s - want_s) <= 0.1, (got_s, want_s)
        assert best_correlation(envelope(got), envelope(want)) > 0.9

        assert await Dispatcher(core.sessions, core.events, {"email": mail}, "d", blobs=core.blobs).run_once() == 1
        (raw,) = receiver.messages
        note = email.message_from_bytes(raw)
        assert note["To"] == "owner@acme.test" and "Voicemail from" in note["Subject"]
        attached = [p for p in note.walk() if p.get_content_type() == "audio/mpeg"]
        assert len(attached) == 1
        mp3 = attached[0].get_payload(decode=True)
        assert isinstance(mp3, bytes)
        assert abs(await decoded_seconds(mp3, tmp_path) - got_s) <= 0.1
        body = next(p for p in note.walk() if p.get_content_type() == "text/plain").get_payload(decode=True)
        assert isinstance(body, bytes) and b"/inbox/#/conversations/" in body and b"100" in body
    finally:
        await vm.aclose()
        smtp.stop()
        await core.aclose()


async def test_caller_hanging_up_after_one_second_leaves_a_missed_call(make_settings: Any, tmp_path: Path) -> None:
    core = await Core.open(make_settings(converters=["wav-to-mp3"]))
    await core.start()
    greeting = tmp_path / "greeting.wav"
    greeting.write_bytes(to_wav(b"\x00\x00" * 1600))  # 0.2 s, so the caller's second is heard
    vm = VoicemailChannel("vm", VoicemailSettings(port=0, mailboxes={"100": {
        "greeting": str(greeting), "beep": False, "min_seconds": 2, "owner_email": "owner@acme.test"}}))
    vm.bind(core.channel_services())
    await vm.start(core.ingest.ingest)
    try:
        second = tmp_path / "second.wav"  # one second of a loud tone: baresip hangs up at its end
        second.write_bytes(to_wav(array.array("h", (int(8000 * math.sin(2 * math.pi * 440 * i / 8000))
                                                    for i in range(8000))).tobytes()))
        code, out = await baresip.dial(baresip.prepare(tmp_path / "b", second), f"sip:100@127.0.0.1:{vm.port}", 20)
        assert code == 0, out[-2000:]

        async def stored() -> Message | None:
            async with core.readers() as s:
                return await s.scalar(select(Message).where(Message.channel == "vm"))

        msg = await poll(core, stored, "the missed call")
        meta = msg.flags.get("meta", msg.flags)
        assert meta["missed_call"] is True and 0.3 < meta["duration_seconds"] < 1.2, meta
        assert msg.text and msg.text.startswith("Missed call from")
        async with core.readers() as s:
            parts = list(await s.scalars(select(Part.media_type).where(Part.message_id == msg.id)))
        assert "audio/wav" not in parts and "audio/mpeg" not in parts  # a missed call, not a voicemail
    finally:
        await vm.aclose()
        await core.aclose()

"""The voicemail call flow for one mailbox (a `CallApp`).

answer → greeting (DTMF digits pressed during it are the caller's menu choice; `#` skips it)
→ beep → record until the caller hangs up, presses `#`, stays silent for `silence_seconds`,
or reaches `max_seconds` → trim leading/trailing silence → hand the `Recording` to `deliver`
(the adapter stores it and mails the owner). `run` returns only after `deliver` did, so the
BYE from the caller is answered after the commit. A fax calling tone (CNG) heard before
recording ends hands the call to `call.fax_app` when one is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from channels.telephony.call import Call
from channels.telephony.cng import CngDetector
from channels.voicemail.audio import RATE, beep, is_silent, trim_silence
from channels.voicemail.settings import MailboxSettings

POLL_SECONDS = 0.2
# Listen for fax tones during the greeting and this much of the recording.
FAX_LISTEN_SECONDS = 6.0


@dataclass(frozen=True)
class Recording:
    """What a voicemail call left: trimmed audio plus the facts routing and mail need."""

    mailbox: str
    pcm: bytes
    digits: str
    ended_by: str  # hangup | hash | silence | max
    started_at: datetime
    raw_seconds: float
    stats: dict[str, int] = field(default_factory=dict)
    fax_tone: bool = False

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / RATE


Deliver = Callable[[Call, Recording], Awaitable[None]]


class VoicemailApp:
    def __init__(self, mailbox: str, settings: MailboxSettings, greeting: bytes, threshold: int,
                 deliver: Deliver) -> None:
        self.mailbox = mailbox
        self.settings = settings
        self.greeting = greeting
        self.threshold = threshold
        self.deliver = deliver

    async def run(self, call: Call) -> None:
        await call.answer()
        started = datetime.now(UTC)
        prompt_done = asyncio.Event()
        skip = asyncio.Event()
        player = asyncio.create_task(self._prompts(call, skip, prompt_done))
        cng = CngDetector()
        digits: list[str] = []
        recorded = bytearray()
        heard = 0.0
        silent = 0.0
        ended_by = "hangup"
        try:
            while True:
                frame = await call.read_audio(POLL_SECONDS)
                while not call.digits.empty():
                    digit = call.digits.get_nowait()
                    if not prompt_done.is_set():
                        if digit == "#":
                            skip.set()
                        else:
                            digits.append(digit)
                    elif digit == "#":
                        ended_by = "hash"
                if ended_by == "hash":
                    break
                if frame is None:
                    if call.ended.is_set():
                        break
                    if prompt_done.is_set():
                        silent += POLL_SECONDS  # no packets at all: silence suppression
                else:
                    heard += len(frame) / 2 / RATE
                    if heard < FAX_LISTEN_SECONDS + len(self.greeting) / 2 / RATE and cng.feed(frame):
                        if call.fax_app is not None:
                            skip.set()
                            await call.hand_over(call.fax_app)
                            return
                    if not prompt_done.is_set():
                        continue
                    recorded += frame
                    silent = silent + len(frame) / 2 / RATE if is_silent(frame, self.threshold) else 0.0
                if silent >= self.settings.silence_seconds and not call.ended.is_set():
                    ended_by = "silence"
                    break
                if len(recorded) >= self.settings.max_seconds * RATE * 2:
                    ended_by = "max"
                    del recorded[int(self.settings.max_seconds * RATE) * 2:]
                    break
        finally:
            skip.set()
            player.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await player
        stats = call.rtp.stats.__dict__.copy() if call.rtp is not None else {}
        recording = Recording(self.mailbox, trim_silence(bytes(recorded), self.threshold), "".join(digits),
                              ended_by, started, len(recorded) / 2 / RATE, stats, cng.detected)
        await self.deliver(call, recording)

    async def _prompts(self, call: Call, skip: asyncio.Event, done: asyncio.Event) -> None:
        try:
            await call.play(self.greeting, skip)
            if self.settings.beep and not call.ended.is_set():
                await call.play(beep())
        finally:
            done.set()

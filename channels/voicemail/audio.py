"""Audio helpers for voicemail: WAV in and out, the beep, the greeting, silence trimming.

All audio is 16-bit signed little-endian mono PCM at 8 kHz. Greetings at other rates or
widths are converted once when loaded (ffmpeg through an asyncio subprocess).
"""

from __future__ import annotations

import array
import asyncio
import io
import math
import wave
from importlib import resources
from pathlib import Path

from umsg.errors import ConfigError

RATE = 8000
WINDOW = 160  # 20 ms analysis windows for silence


def to_wav(pcm: bytes, rate: int = RATE) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def beep(seconds: float = 0.3, frequency: float = 1000.0, amplitude: int = 8000) -> bytes:
    n = int(seconds * RATE)
    return array.array("h", (int(amplitude * math.sin(2 * math.pi * frequency * i / RATE))
                             for i in range(n))).tobytes()


def _window_peaks(pcm: bytes) -> list[int]:
    samples = array.array("h")
    samples.frombytes(pcm[: len(pcm) // 2 * 2])
    return [max((abs(x) for x in samples[i: i + WINDOW]), default=0) for i in range(0, len(samples), WINDOW)]


def is_silent(pcm: bytes, threshold: int) -> bool:
    return all(p < threshold for p in _window_peaks(pcm))


def trim_silence(pcm: bytes, threshold: int) -> bytes:
    """Drop leading and trailing 20 ms windows whose peak stays under `threshold`."""
    peaks = _window_peaks(pcm)
    loud = [i for i, p in enumerate(peaks) if p >= threshold]
    if not loud:
        return b""
    return pcm[loud[0] * WINDOW * 2: (loud[-1] + 1) * WINDOW * 2]


def default_greeting_path() -> Path:
    return Path(str(resources.files("channels.voicemail") / "default_greeting.wav"))


async def load_greeting(path: str | None) -> bytes:
    """PCM of a greeting file (the shipped default when None)."""
    file = Path(path) if path else default_greeting_path()
    if not file.is_file():
        raise ConfigError([("greeting", f"greeting file {file} does not exist")])
    data = file.read_bytes()
    try:
        with wave.open(io.BytesIO(data)) as w:
            if (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (RATE, 2, 1):
                return bytes(w.readframes(w.getnframes()))
    except (wave.Error, EOFError):
        pass
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(file), "-ac", "1", "-ar", str(RATE),
        "-f", "s16le", "pipe:1", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise ConfigError([("greeting", f"cannot read greeting {file}: {err.decode('utf-8', 'replace')[-200:]}")])
    return out

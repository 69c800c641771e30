"""audio/wav → audio/mpeg: the voicemail recording as an MP3 anyone can play (mono, 32 kbit/s).

ffmpeg (the encoder pydub also uses) is run once per recording, the WAV piped in. The MP3 goes
to a temporary file, not a pipe: only a seekable output gets the LAME/Xing header whose gapless
info lets players drop the encoder's padding (about 0.2 s at 8 kHz), so the MP3 plays exactly as
long as the WAV. The duration goes into the part's meta.
"""

from __future__ import annotations

import io
import subprocess
import tempfile
import wave
from pathlib import Path
from typing import ClassVar

from converters.base import Converted, derived_filename
from umsg.errors import ConversionError

BITRATE = "32k"
TIMEOUT_SECONDS = 120


def wav_duration(data: bytes) -> float:
    try:
        with wave.open(io.BytesIO(data)) as w:
            return int(w.getnframes()) / float(w.getframerate())
    except (wave.Error, EOFError) as exc:
        raise ConversionError(f"not a readable WAV file: {exc}") from exc


def wav_to_mp3(data: bytes, bitrate: str = BITRATE) -> bytes:
    with tempfile.TemporaryDirectory(prefix="umsg-mp3-") as folder:
        out = Path(folder) / "out.mp3"
        cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "wav", "-i", "pipe:0",
               "-ac", "1", "-codec:a", "libmp3lame", "-b:a", bitrate, str(out)]
        try:
            done = subprocess.run(cmd, input=data, capture_output=True, timeout=TIMEOUT_SECONDS, check=False)  # noqa: S603
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConversionError(f"ffmpeg could not run: {exc}") from exc
        if done.returncode != 0 or not out.is_file():
            raise ConversionError(f"ffmpeg failed: {done.stderr.decode('utf-8', 'replace')[-300:]}")
        return out.read_bytes()


class WavToMp3:
    name: ClassVar[str] = "wav-to-mp3"
    accepts: ClassVar[frozenset[str]] = frozenset({"audio/wav", "audio/x-wav", "audio/wave"})
    produces: ClassVar[str] = "audio/mpeg"

    def convert(self, data: bytes, filename: str | None) -> Converted:
        duration = wav_duration(data)
        return Converted(wav_to_mp3(data), "audio/mpeg", derived_filename(filename, "mp3") or "voicemail.mp3",
                         {"duration_seconds": round(duration, 3)})

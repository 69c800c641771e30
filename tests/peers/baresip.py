"""baresip as a real SIP caller: dial a number, play an 8 kHz WAV, hang up at its end."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from peers.common import free_port

SHARED_PEERS = Path(__file__).resolve().parents[3] / "shared" / "peers"


def make_wav(folder: Path, text: str, *, lead_silence: float = 0.0, name: str = "msg8k.wav") -> Path:
    """Speech from espeak-ng as 8 kHz mono 16-bit, optionally preceded by silence."""
    import subprocess

    raw = folder / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True, capture_output=True)
    out = folder / name
    cmd = ["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer", str(out)]
    if lead_silence:
        cmd += ["pad", str(lead_silence), "0.3"]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def prepare(folder: Path, wav: Path) -> Path:
    """A baresip config folder from the shared template, on free ports, playing `wav`."""
    folder.mkdir(parents=True, exist_ok=True)
    rtp = free_port() // 2 * 2
    text = (SHARED_PEERS / "baresip.config").read_text().replace("DIR/msg8k.wav", str(wav))
    text = text.replace("DIR", str(folder)).replace("127.0.0.1:5090", f"127.0.0.1:{free_port()}")
    text = text.replace("30000-30100", f"{rtp}-{rtp + 10}")
    (folder / "config").write_text(text)
    shutil.copy(SHARED_PEERS / "baresip.accounts", folder / "accounts")
    return folder


async def dial(folder: Path, uri: str, seconds: float) -> tuple[int, str]:
    """Dial `uri` and wait until baresip reports the call terminated (at most `seconds`), then
    quit it; (exit code, output)."""
    proc = await asyncio.create_subprocess_exec(
        "baresip", "-f", str(folder), "-e", f"/dial {uri}", "-t", str(int(seconds)),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    out = b""
    try:
        async with asyncio.timeout(seconds + 10):
            while b"terminated" not in out and not proc.stdout.at_eof():
                out += await proc.stdout.read(4096)
    except TimeoutError:
        pass
    if proc.returncode is None:
        proc.terminate()
    rest, _ = await proc.communicate()
    return proc.returncode or 0, (out + rest).decode("utf-8", "replace")

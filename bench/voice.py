"""Voicemail under load: (a) the most simultaneous recorded calls with no lost RTP, (b) WAV→MP3
conversion time against plain ffmpeg.

(a) The voicemail channel (real core, SQLite in WAL in a temp dir, a 1 s greeting and a beep)
answers sipp's `uac_pcap` callers (PCMA audio from /usr/share/sip-tester/g711a.pcap plus an
RFC 4733 "1"); each step starts N calls within one second (`-m N -l N -r N`). A call counts as
lossless when the channel's own counter of received RTP packets (`meta["rtp"]["received"]`)
equals the packets in the pcaps sipp replays; the step holds when every call was recorded and
lossless. Steps go up until one fails; the figure is the largest step that held.

(b) One speech WAV (espeak-ng, repeated to `--mp3-seconds`, 8 kHz mono) converted by
`converters/wav_mp3.py` and by a bare `ffmpeg` command on the same file, interleaved, median
of `--repeats`; the goal is ratio (ours / ffmpeg) <= 1.3.

    python bench/voice.py [--quick] [--steps 10,20,40] [--mp3-seconds 60] [--repeats 5]

Prints one JSON object per step and per converter, then the summary last:
{"name", "value" (calls), "unit", "baseline" (ffmpeg s), "ratio" (MP3 ours/ffmpeg), "params"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from channels.voicemail import VoicemailChannel, VoicemailSettings  # noqa: E402
from channels.voicemail.audio import to_wav  # noqa: E402
from converters.wav_mp3 import WavToMp3  # noqa: E402
from umsg.config import load_settings  # noqa: E402
from umsg.core import Core  # noqa: E402
from umsg.model import Inbound, IngestResult  # noqa: E402

PCAPS = Path("/usr/share/sip-tester")
# What uac_pcap replays per call: the audio file and the DTMF "1" file.
REPLAYED = ("g711a.pcap", "dtmf_2833_1.pcap")


def rtp_packets(path: Path) -> int:
    """UDP datagrams in a classic pcap file (each is one RTP packet sipp sends)."""
    data = path.read_bytes()
    endian = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    count, offset = 0, 24
    while offset + 16 <= len(data):
        incl = struct.unpack(endian + "IIII", data[offset: offset + 16])[2]
        count += 1
        offset += 16 + incl
    return count


def peak(spans: list[tuple[float, float]]) -> int:
    """The most calls in progress at one instant."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    best = now = 0
    for _, step in edges:
        now += step
        best = max(best, now)
    return best


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def sipp_callers(workdir: Path, port: int, calls: int) -> tuple[int, float]:
    """Run `calls` simultaneous uac_pcap calls; (sipp exit code, wall seconds)."""
    link = workdir / "pcap"
    if not link.exists():
        link.symlink_to(PCAPS)
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "sipp", f"127.0.0.1:{port}", "-sn", "uac_pcap", "-s", "service", "-m", str(calls), "-l", str(calls),
        "-r", str(calls), "-rp", "1000", "-i", "127.0.0.1", "-p", str(free_port()), "-mi", "127.0.0.1",
        "-nostdin", "-timeout", "90", "-timeout_error", cwd=workdir,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await proc.wait()
    return proc.returncode or 0, time.perf_counter() - start


async def call_steps(steps: list[int], folder: Path) -> list[dict[str, Any]]:
    expected = sum(rtp_packets(PCAPS / name) for name in REPLAYED)
    settings = load_settings(None, environ={}, overrides={
        "data_dir": str(folder / "data"), "database": {"url": f"sqlite:///{folder / 'umsg.db'}"}})
    core = await Core.open(settings)
    await core.start()
    greeting = folder / "greeting.wav"
    greeting.write_bytes(to_wav(b"\x00\x00" * 8000))
    per_call: list[dict[str, int]] = []
    spans: list[tuple[float, float]] = []  # (answered, recording handed over), epoch seconds

    async def sink(inbound: Inbound) -> IngestResult:
        per_call.append(dict(inbound.meta["rtp"]))
        if inbound.sent_at is not None:
            spans.append((inbound.sent_at.timestamp(), time.time()))
        return await core.ingest.ingest(inbound)

    vm = VoicemailChannel("vm", VoicemailSettings(port=0, max_calls=max(steps) + 10, mailboxes={
        "service": {"greeting": str(greeting), "min_seconds": 0.5}}))
    vm.bind(core.channel_services())
    await vm.start(sink)
    results: list[dict[str, Any]] = []
    try:
        for n in steps:
            per_call.clear()
            spans.clear()
            code, wall = await sipp_callers(folder, vm.port, n)
            short = [c["received"] for c in per_call if c["received"] < expected]
            held = code == 0 and len(per_call) == n and not short
            step = {"name": "voice_calls", "calls": n, "sipp_exit": code, "recorded": len(per_call),
                    "expected_packets_per_call": expected, "calls_short": len(short),
                    "fewest_received": min((c["received"] for c in per_call), default=0),
                    "peak_simultaneous": peak(spans),
                    "jitter_gap_total": sum(c["lost"] for c in per_call), "wall_seconds": round(wall, 1),
                    "held": held}
            print(json.dumps(step), flush=True)
            results.append(step)
            if not held:
                break
    finally:
        await vm.aclose()
        await core.aclose()
    return results


def speech_wav(folder: Path, seconds: float) -> Path:
    raw, one, out = folder / "speech.wav", folder / "one.wav", folder / "speech8k.wav"
    text = ("Hello, this is a message for the support team. I am calling about my order, number four two "
            "seven, which has not arrived yet. Please call me back this afternoon. Thank you.")
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True, capture_output=True)
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer", str(one)],
                   check=True, capture_output=True)
    length = float(subprocess.run(["soxi", "-D", str(one)], check=True, capture_output=True, text=True).stdout)
    repeats = max(0, int(seconds / length + 0.999) - 1)
    subprocess.run(["sox", str(one), str(out), "repeat", str(repeats), "trim", "0", str(seconds)],
                   check=True, capture_output=True)
    return out


def mp3_times(wav: Path, repeats: int) -> dict[str, Any]:
    data = wav.read_bytes()
    converter = WavToMp3()
    ours: list[float] = []
    plain: list[float] = []
    out = wav.with_suffix(".mp3")
    for _ in range(repeats):  # interleaved, so load changes hit both alike
        start = time.perf_counter()
        converter.convert(data, wav.name)
        ours.append(time.perf_counter() - start)
        out.unlink(missing_ok=True)
        start = time.perf_counter()
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(wav), "-ac", "1",
                        "-codec:a", "libmp3lame", "-b:a", "32k", str(out)], check=True)
        plain.append(time.perf_counter() - start)
    result = {"ours_seconds": round(statistics.median(ours), 4), "ffmpeg_seconds": round(statistics.median(plain), 4),
              "wav_seconds": round((len(data) - 44) / 16000, 1), "repeats": repeats}
    result["ratio"] = round(result["ours_seconds"] / result["ffmpeg_seconds"], 3)
    print(json.dumps({"name": "voice_mp3", **result}), flush=True)
    return result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    steps = [int(s) for s in args.steps.split(",")] if args.steps else (
        [10, 25] if args.quick else [10, 20, 40, 80, 120, 160, 200, 250, 300, 400])
    mp3_seconds = args.mp3_seconds or (30 if args.quick else 120)
    with tempfile.TemporaryDirectory(prefix="umsg-bench-voice-") as tmp:
        folder = Path(tmp)
        calls = await call_steps(steps, folder)
        wav = await asyncio.to_thread(speech_wav, folder, mp3_seconds)
        mp3 = await asyncio.to_thread(mp3_times, wav, args.repeats or (3 if args.quick else 7))
    held = [s["calls"] for s in calls if s["held"]]
    return {"name": "voice", "value": max(held, default=0), "unit": "simultaneous calls without RTP loss",
            "baseline": mp3["ffmpeg_seconds"], "ratio": mp3["ratio"],
            "params": {"quick": args.quick, "steps": calls, "mp3": mp3, "cores": 2,
                       "ratio_is": "wav-to-mp3 seconds / plain ffmpeg seconds on the same WAV (goal <= 1.3)",
                       "baseline_is": "plain ffmpeg WAV->MP3 seconds",
                       "jitter_gap_note": "sipp replays the DTMF pcap with its own SSRC and sequence numbers; "
                                          "the jitter buffer counts that jump as a gap, not as lost packets"}}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two small steps and a 30 s WAV, under a minute")
    ap.add_argument("--steps", default="", help="comma-separated simultaneous call counts")
    ap.add_argument("--mp3-seconds", type=float, default=0)
    ap.add_argument("--repeats", type=int, default=0)
    print(json.dumps(asyncio.run(main(ap.parse_args()))), flush=True)

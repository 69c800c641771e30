"""Fax benchmark, part 1: TIFF → PDF against libtiff's `tiff2pdf`, in the same run.

Converts the 12-page ITU test document (`../shared/corpus/fax/itutests.tif`, G3 1D as
published) and the same document as our receiver stores it (G4, made here by a
back-to-back T.38 transfer) with `converters.tiff_pdf` and with `tiff2pdf`.
Times are medians of repeated runs: ours in-process (what the gateway does),
tiff2pdf as the command it is (its start-up is ~1-2 ms of that). Goals: within 2×
tiff2pdf's time and 1.1× its output size. Our converter never re-encodes: on the
G3 original its PDF carries the G3 data (tiff2pdf re-encodes to G4, which is why
its file is smaller there); on the stored G4 form both carry the same G4 data.

Part 2: simultaneous live T.38 receptions. One sipp process places N calls at once
(the shared `uac_t38_pcap.xml`, each replaying the recorded T.38 transmission of itu1)
into one fax channel on a loopback SIP port; a round holds when every call stored a
complete page identical to itu1.tif (`tiffcmp -t`). Counts step up (5, 10, 20, 30, 40;
`--quick`: 4 only) and stop at the first round that fails; the largest that held is
reported against the goal of 30. The receptions go to an in-memory sink (no database),
so the figure is the SIP/UDPTL/SpanDSP side alone.

Usage: python bench/fax.py [--quick] [--repeat N] [--counts 5,10,20]
Prints one JSON object last: {"name","value","unit","baseline","ratio","params"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from channels.fax import FaxChannel, FaxSettings  # noqa: E402
from channels.fax.engine import Transport  # noqa: E402
from channels.fax.loopback import run_pair  # noqa: E402
from channels.telephony.spandsp import SpanDsp  # noqa: E402
from converters.tiff_pdf import TiffToPdf  # noqa: E402
from umsg.model import Inbound, IngestResult  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "fax"
SCENARIO = CORPUS.parents[1] / "peers" / "uac_t38_pcap.xml"
GOAL_CALLS = 30


def _ours(tiff: bytes, repeat: int) -> tuple[float, int]:
    conv = TiffToPdf()
    times, size = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        size = len(conv.convert(tiff, "fax.tif").data)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), size


def _tiff2pdf(src: Path, out: Path, repeat: int) -> tuple[float, int]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(["tiff2pdf", "-o", str(out), str(src)], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out.stat().st_size


def measure(src: Path, tmp: Path, repeat: int) -> dict[str, Any]:
    ours_s, ours_bytes = _ours(src.read_bytes(), repeat)
    base_s, base_bytes = _tiff2pdf(src, tmp / (src.stem + "-t2p.pdf"), repeat)
    return {"ours_ms": round(ours_s * 1000, 3), "tiff2pdf_ms": round(base_s * 1000, 3),
            "time_ratio": round(ours_s / base_s, 3), "ours_bytes": ours_bytes,
            "tiff2pdf_bytes": base_bytes, "size_ratio": round(ours_bytes / base_bytes, 3)}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _same(a: Path, b: Path) -> bool:
    return subprocess.run(["tiffcmp", "-t", str(a), str(b)], capture_output=True, check=False).returncode == 0


async def live_round(calls: int, tmp: Path) -> dict[str, Any]:
    """`calls` simultaneous T.38 receptions; how many stored a page identical to itu1.tif."""
    got: list[Inbound] = []

    async def sink(inbound: Inbound) -> IngestResult:
        got.append(inbound)
        return IngestResult(len(got), len(got), len(got), False)

    fax = FaxChannel("bench", FaxSettings.model_validate({"port": 0, "max_calls": calls + 5, "numbers": {"fax": {}}}))
    await fax.start(sink)
    folder = tmp / f"sipp-{calls}"
    folder.mkdir()
    (folder / "fax_itu1_t38.pcap").write_bytes((CORPUS / "fax_itu1_t38.pcap").read_bytes())
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    try:
        proc = await asyncio.create_subprocess_exec(
            "sipp", f"127.0.0.1:{fax.port}", "-sf", str(SCENARIO), "-m", str(calls), "-l", str(calls),
            "-r", str(calls), "-rp", "1000", "-i", "127.0.0.1", "-p", str(_free_port()), "-mi", "127.0.0.1",
            "-nostdin", "-timeout", "120s", cwd=folder, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        code = await proc.wait()
    finally:
        await fax.aclose()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    intact = 0
    for n, inbound in enumerate(got):
        if inbound.meta.get("result") != "complete" or not inbound.parts:
            continue
        path = folder / f"rx{n}.tif"
        path.write_bytes(inbound.parts[0].data)
        intact += _same(CORPUS / "itu1.tif", path)
    return {"calls": calls, "stored": len(got), "intact": intact, "sipp_exit": code,
            "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "held": intact == calls and code == 0}


async def live(counts: list[int], tmp: Path) -> dict[str, Any]:
    rounds, largest = [], 0
    for calls in counts:
        result = await live_round(calls, tmp)
        rounds.append(result)
        print(f"live T.38 x{calls}: {result}", file=sys.stderr)
        if not result["held"]:
            break
        largest = calls
    return {"largest_held": largest, "goal": GOAL_CALLS, "rounds": rounds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (well under a minute)")
    parser.add_argument("--repeat", type=int, default=0)
    parser.add_argument("--counts", default="", help="simultaneous call counts to step through, e.g. 5,10,20")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",") if c] or ([4] if args.quick else [5, 10, 20, 30, 40])
    repeat = args.repeat or (5 if args.quick else 30)
    with tempfile.TemporaryDirectory(prefix="bench-fax-") as tmp_name:
        tmp = Path(tmp_name)
        g4 = tmp / "itutests-g4.tif"
        transfer = run_pair(SpanDsp.load(), Transport.T38, CORPUS / "itutests.tif", g4)
        if not transfer.received.ok:
            raise SystemExit(f"could not make the G4 copy: {transfer.received.reason}")
        g3_figures = measure(CORPUS / "itutests.tif", tmp, repeat)
        g4_figures = measure(g4, tmp, repeat)
        live_figures = asyncio.run(live(counts, tmp))
    for label, fig in (("itutests.tif (G3 1D)", g3_figures), ("as stored (G4)", g4_figures)):
        print(f"{label:22} ours {fig['ours_ms']:8.2f} ms {fig['ours_bytes']:8d} B | "
              f"tiff2pdf {fig['tiff2pdf_ms']:8.2f} ms {fig['tiff2pdf_bytes']:8d} B | "
              f"time x{fig['time_ratio']} size x{fig['size_ratio']}", file=sys.stderr)
    print(json.dumps({
        "name": "fax_tiff_to_pdf",
        "value": g3_figures["ours_ms"],
        "unit": "ms per 12-page document",
        "baseline": g3_figures["tiff2pdf_ms"],
        "ratio": g3_figures["time_ratio"],
        "params": {"pages": 12, "repeat": repeat, "quick": args.quick,
                   "itutests_g3": g3_figures, "stored_g4": g4_figures,
                   "live_t38_receptions": live_figures},
    }))


if __name__ == "__main__":
    main()

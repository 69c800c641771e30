"""Lossless G3 → G4 transcoding of a fax TIFF, so PDFs made from G3 documents stay small.

G4 (T.6) codes the same bilevel rows in about half the bytes of G3 (T.4 MH/MR). Our receiver
stores G4 already, so this runs only for G3 documents (uploaded, imported, or stored so by
another fax server): libtiff's `tiffcp -c g4` (Debian libtiff-tools) decodes every page and
codes it again as G4, one strip per page, keeping the resolution tags. Bilevel coding is exact,
so no pixel changes. Without tiffcp, Pillow (also libtiff underneath) does the same, slower.
"""

from __future__ import annotations

import io
import subprocess
import tempfile
from pathlib import Path

from PIL import Image, ImageSequence

from umsg.errors import ConversionError

_TIFFCP_SECONDS = 120


def g3_to_g4(data: bytes) -> bytes:
    """The same pages, G4-coded; ConversionError when a page cannot be decoded."""
    try:
        return _with_tiffcp(data)
    except FileNotFoundError:
        return _with_pillow(data)


def _with_tiffcp(data: bytes) -> bytes:
    with tempfile.TemporaryDirectory(prefix="umsg-g4-") as tmp:
        src, dst = Path(tmp) / "in.tif", Path(tmp) / "out.tif"
        src.write_bytes(data)
        # -r -1: one strip per page (G4 restarts its coding at every strip).
        done = subprocess.run(["tiffcp", "-c", "g4", "-r", "-1", str(src), str(dst)],
                              capture_output=True, timeout=_TIFFCP_SECONDS, check=False)
        if done.returncode != 0 or not dst.exists():
            words = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise ConversionError(f"cannot transcode the G3 pages: {words[-1] if words else done.returncode}")
        return dst.read_bytes()


def _with_pillow(data: bytes) -> bytes:
    try:
        with Image.open(io.BytesIO(data)) as img:
            pages = [frame.convert("1") for frame in ImageSequence.Iterator(img)]
            dpi = img.info.get("dpi", (204, 196))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ConversionError(f"cannot decode the G3 pages: {exc}") from exc
    out = io.BytesIO()
    pages[0].save(out, format="TIFF", compression="group4", save_all=True, append_images=pages[1:],
                  dpi=dpi, strip_size=1 << 30)
    return out.getvalue()

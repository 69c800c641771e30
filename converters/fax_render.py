"""Outgoing documents (PDF, images, text, fax TIFFs) → one TIFF-F file to send.

Ghostscript's `tiffg4` device rasterises PDFs at a fax resolution (204×196
"fine" or 204×98 "normal") on A4 or Letter, fitted to the page. Images go
through Pillow into a PDF first, plain text through reportlab, and a TIFF that
is already a fax (bilevel, 1728 pixels wide, 204 dpi across, 98 or 196 down)
through our lossless TIFF → PDF. A cover page (reportlab) is added on request.
Inputs that cannot become a fax page (a colour or 300 dpi TIFF, a corrupt
file, an unknown media type) raise ConversionError saying why.

Synchronous and CPU-bound (runs `gs` as a subprocess): call it from a worker
thread (`asyncio.to_thread`) in async code.
"""

from __future__ import annotations

import io
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from PIL import Image, UnidentifiedImageError
from reportlab.lib.pagesizes import A4, LETTER  # type: ignore[import-untyped]
from reportlab.lib.units import mm  # type: ignore[import-untyped]
from reportlab.pdfgen import canvas  # type: ignore[import-untyped]

from converters.base import Converted, derived_filename
from converters.tiff_pdf import pages_to_pdf, read_fax_tiff
from umsg.errors import ConversionError

FAX_WIDTH = 1728
# Page heights in rows at 196 lines per inch; halved for 98.
_HEIGHT_FINE = {"a4": 2292, "letter": 2156}
GS_TIMEOUT_SECONDS = 120
Paper = Literal["a4", "letter"]


@dataclass(frozen=True)
class CoverPage:
    """What the generated cover page says."""

    to: str
    sender: str
    subject: str = ""
    note: str = ""
    to_name: str = ""
    sender_name: str = ""


@dataclass(frozen=True)
class Document:
    """One piece of the fax: bytes, their media type and an optional file name."""

    data: bytes
    media_type: str
    filename: str | None = None


def _text_pdf(text: str, paper: Paper) -> bytes:
    size = A4 if paper == "a4" else LETTER
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=size)
    width, height = size
    y = height - 20 * mm
    c.setFont("Courier", 11)
    for raw_line in text.splitlines() or [""]:
        # Wrap at the printable width; fax pages have no horizontal scroll.
        line = raw_line.expandtabs(4)
        chunks = [line[i:i + 80] for i in range(0, len(line), 80)] or [""]
        for chunk in chunks:
            if y < 20 * mm:
                c.showPage()
                c.setFont("Courier", 11)
                y = height - 20 * mm
            c.drawString(20 * mm, y, chunk)
            y -= 13
    c.showPage()
    c.save()
    return buf.getvalue()


def cover_pdf(cover: CoverPage, pages: int, paper: Paper) -> bytes:
    """A one-page cover sheet: parties, subject, page count and a note."""
    size = A4 if paper == "a4" else LETTER
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=size)
    width, height = size
    c.setFont("Helvetica-Bold", 28)
    c.drawString(20 * mm, height - 35 * mm, "FAX")
    c.setFont("Helvetica", 13)
    rows = [
        ("To", f"{cover.to_name} {cover.to}".strip()),
        ("From", f"{cover.sender_name} {cover.sender}".strip()),
        ("Subject", cover.subject),
        ("Pages", f"{pages} including this cover"),
    ]
    y = height - 55 * mm
    for label, value in rows:
        c.drawString(20 * mm, y, f"{label}:")
        c.drawString(50 * mm, y, value[:70])
        y -= 9 * mm
    c.line(20 * mm, y, width - 20 * mm, y)
    y -= 10 * mm
    for line in cover.note.splitlines():
        c.drawString(20 * mm, y, line[:85])
        y -= 6 * mm
        if y < 20 * mm:
            break
    c.showPage()
    c.save()
    return buf.getvalue()


def _image_pdf(data: bytes) -> bytes:
    try:
        with Image.open(io.BytesIO(data)) as img:
            frames = []
            for i in range(getattr(img, "n_frames", 1)):
                img.seek(i)
                frames.append(img.convert("L"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ConversionError(f"the image cannot be read: {exc}") from exc
    buf = io.BytesIO()
    frames[0].save(buf, "PDF", save_all=True, append_images=frames[1:], resolution=200.0)
    return buf.getvalue()


def check_fax_tiff(data: bytes) -> None:
    """ConversionError unless `data` is a TIFF a fax machine can take as it is."""
    for n, page in enumerate(read_fax_tiff(data), 1):
        if abs(page.x_dpi - 204) > 8 or not any(abs(page.y_dpi - r) <= 4 for r in (98, 196)):
            raise ConversionError(
                f"page {n} is {page.x_dpi:g}x{page.y_dpi:g} dpi; fax resolutions are 204x98 and 204x196")
        if page.width != FAX_WIDTH:
            raise ConversionError(f"page {n} is {page.width} pixels wide; a fax page is {FAX_WIDTH}")


def _to_pdf(doc: Document, paper: Paper) -> bytes:
    kind = doc.media_type.split(";", 1)[0].strip().lower()
    if kind == "application/pdf":
        if not doc.data.startswith(b"%PDF"):
            raise ConversionError(f"{doc.filename or 'the document'} is not a PDF")
        return doc.data
    if kind in ("image/tiff", "image/tif"):
        check_fax_tiff(doc.data)
        return pages_to_pdf(read_fax_tiff(doc.data))
    if kind.startswith("image/"):
        return _image_pdf(doc.data)
    if kind.startswith("text/plain"):
        return _text_pdf(doc.data.decode("utf-8", "replace"), paper)
    raise ConversionError(f"cannot fax a {kind} document")


def _ghostscript(pdfs: list[Path], out: Path, *, fine: bool, paper: Paper) -> None:
    rows = _HEIGHT_FINE[paper] if fine else _HEIGHT_FINE[paper] // 2
    cmd = ["gs", "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=tiffg4",
           f"-r204x{196 if fine else 98}", f"-g{FAX_WIDTH}x{rows}", "-dPDFFitPage", "-dFIXEDMEDIA",
           f"-sOutputFile={out}", *map(str, pdfs)]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=GS_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConversionError(f"ghostscript could not render the fax: {exc}") from exc
    if proc.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
        detail = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()[-300:]
        raise ConversionError(f"ghostscript could not render the document: {detail or proc.returncode}")


def render_fax(
    docs: list[Document], *, fine: bool = True, paper: Paper = "a4", cover: CoverPage | None = None,
) -> bytes:
    """All `docs` (and a cover page first, if given) as one G4 TIFF-F."""
    if not docs and cover is None:
        raise ConversionError("nothing to fax")
    with tempfile.TemporaryDirectory(prefix="umsg-fax-") as tmp:
        folder = Path(tmp)
        pdfs = []
        for i, doc in enumerate(docs):
            path = folder / f"doc{i}.pdf"
            path.write_bytes(_to_pdf(doc, paper))
            pdfs.append(path)
        out = folder / "fax.tif"
        if cover is not None:
            pages = 0
            if pdfs:
                # The cover states the page count, so the body is rendered (and counted) first.
                _ghostscript(pdfs, out, fine=fine, paper=paper)
                pages = len(read_fax_tiff(out.read_bytes()))
            cover_path = folder / "cover.pdf"
            cover_path.write_bytes(cover_pdf(cover, pages + 1, paper))
            pdfs.insert(0, cover_path)
        _ghostscript(pdfs, out, fine=fine, paper=paper)
        return out.read_bytes()


class FaxRender:
    """The `fax-render` converter: a document in, a fine A4 TIFF-F out."""

    name: ClassVar[str] = "fax-render"
    accepts: ClassVar[frozenset[str]] = frozenset(
        {"application/pdf", "text/plain", "image/png", "image/jpeg", "image/gif", "image/tiff"})
    produces: ClassVar[str] = "image/tiff"

    def convert(self, data: bytes, filename: str | None) -> Converted:
        kind = "text/plain"
        head = data[:8]
        if head.startswith(b"%PDF"):
            kind = "application/pdf"
        elif head[:4] in (b"II*\0", b"MM\0*"):
            kind = "image/tiff"
        elif head.startswith((b"\x89PNG", b"\xff\xd8", b"GIF8")):
            kind = "image/png"
        tiff = render_fax([Document(data, kind, filename)])
        return Converted(tiff, self.produces, derived_filename(filename, "tif") or "fax.tif",
                         {"pages": len(read_fax_tiff(tiff))})

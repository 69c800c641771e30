"""Fax converters: TIFF → PDF (no re-encoding), the page-1 thumbnail, rendering outgoing faxes."""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageChops, TiffImagePlugin

from channels.fax.engine import Transport
from channels.fax.loopback import run_pair
from channels.telephony.spandsp import SpanDsp
from converters.fax_g4 import g3_to_g4
from converters.fax_render import CoverPage, Document, FaxRender, check_fax_tiff, render_fax
from converters.fax_thumb import FaxThumbnail
from converters.registry import default_converters
from converters.tiff_pdf import TiffToPdf, read_fax_tiff
from umsg.errors import ConversionError

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "fax"
ITU1 = CORPUS / "itu1.tif"
ITUTESTS = CORPUS / "itutests.tif"
_REVERSE = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


@pytest.fixture(scope="module")
def g4_itutests(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """itutests.tif as the receiver stores it: G4, least significant bit first."""
    rx = tmp_path_factory.mktemp("g4") / "rx.tif"
    assert run_pair(SpanDsp.load(), Transport.T38, ITUTESTS, rx).received.ok
    return rx.read_bytes()


def strips(tiff: bytes) -> list[bytes]:
    """Each page's strip bytes, read by Pillow (libtiff), not by our reader."""
    out = []
    with Image.open(io.BytesIO(tiff)) as img:
        assert isinstance(img, TiffImagePlugin.TiffImageFile)
        for n in range(img.n_frames):
            img.seek(n)
            offsets, counts = img.tag_v2[273], img.tag_v2[279]
            fill_lsb = img.tag_v2.get(266, 1) == 2
            for off, cnt in zip(offsets, counts, strict=True):
                data = tiff[off:off + cnt]
                out.append(data.translate(_REVERSE) if fill_lsb else data)
    return out


def page_rows(tiff: bytes) -> list[int]:
    with Image.open(io.BytesIO(tiff)) as img:
        assert isinstance(img, TiffImagePlugin.TiffImageFile)
        rows = []
        for n in range(img.n_frames):
            img.seek(n)
            rows.append(img.height)
        return rows


def gs_pages(pdf: Path) -> int:
    out = subprocess.run(["gs", "-q", "-dNODISPLAY", "-dNOSAFER", "-c",
                          f"({pdf}) (r) file runpdfbegin pdfpagecount = quit"],
                         capture_output=True, check=True, text=True).stdout
    return int(out.strip())


def render_page(pdf: Path, page: int, tmp: Path) -> Image.Image:
    out = tmp / f"p{page}.pbm"
    subprocess.run(["gs", "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=pbmraw", "-r204x196",
                    f"-dFirstPage={page}", f"-dLastPage={page}", f"-sOutputFile={out}", str(pdf)], check=True)
    return Image.open(out).convert("L")


def tiff_page(tiff: bytes, page: int) -> Image.Image:
    img = Image.open(io.BytesIO(tiff))
    img.seek(page)
    return img.convert("L")


@pytest.mark.parametrize("source", ["g3", "g4"])
def test_tiff_to_pdf_embeds_the_ccitt_strips_unchanged(source: str, g4_itutests: bytes, tmp_path: Path) -> None:
    tiff = ITUTESTS.read_bytes() if source == "g3" else g4_itutests
    out = TiffToPdf().convert(tiff, "fax.tif")
    assert out.media_type == "application/pdf" and out.filename == "fax.pdf"
    assert out.meta["pages"] == 12
    streams = [out.data[m.end():m.end() + int(m.group(1))]
               for m in re.finditer(rb"/Subtype /Image .*?/Length (\d+) >>\nstream\n", out.data)]
    # G4 strips go in byte for byte (in PDF bit order), nothing re-encoded; G3 pages are first
    # transcoded to G4 losslessly (half the size), then embedded the same way.
    coded = g3_to_g4(tiff) if source == "g3" else tiff
    assert streams == strips(coded)
    assert out.data.count(b"/K -1 ") == 12
    # Width 1728 px at 204 dpi = 609.88 pt; each page's height from its own row count at 196 dpi.
    boxes = re.findall(rb"/MediaBox \[0 0 ([0-9.]+) ([0-9.]+)\]", out.data)
    assert boxes == [(b"609.88", f"{rows * 72 / 196:.2f}".rstrip("0").rstrip(".").encode())
                     for rows in page_rows(tiff)]
    pdf = tmp_path / "out.pdf"
    pdf.write_bytes(out.data)
    assert gs_pages(pdf) == 12
    # Ghostscript draws exactly the pixels libtiff decodes.
    for page in (1, 12):
        assert ImageChops.difference(render_page(pdf, page, tmp_path), tiff_page(tiff, page - 1)).getbbox() is None


def test_pdf_is_smaller_than_the_g3_source_once_stored_as_g4(g4_itutests: bytes) -> None:
    pdf = TiffToPdf().convert(g4_itutests, None).data
    assert len(pdf) < len(g4_itutests) * 1.05


def test_page_size_follows_the_resolution_tags(tmp_path: Path) -> None:
    img = Image.new("1", (2550, 3300), 1)
    buf = io.BytesIO()
    img.save(buf, "TIFF", compression="group4", dpi=(300, 300))
    out = TiffToPdf().convert(buf.getvalue(), "letter.tif")
    assert b"/MediaBox [0 0 612 792]" in out.data and out.meta["x_dpi"] == 300
    normal = render_fax([Document(b"normal resolution", "text/plain")], fine=False)
    pdf = TiffToPdf().convert(normal, None).data
    assert b"/MediaBox [0 0 609.88 841.96]" in pdf  # A4 at 204x98: 1728 x 1146


def colour_tiff() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (100, 100), (200, 10, 10)).save(buf, "TIFF", compression="tiff_lzw")
    return buf.getvalue()


def dpi300_tiff() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (2480, 3508), 1).save(buf, "TIFF", compression="group4", dpi=(300, 300))
    return buf.getvalue()


BAD_TIFFS = {
    "colour": (colour_tiff, "colour or greyscale"),
    "not a tiff": (lambda: b"%PDF-1.4 hello", "not a TIFF"),
    "truncated": (lambda: ITU1.read_bytes()[:20000], "past the end"),
    "bad directory": (lambda: ITU1.read_bytes()[:4] + b"\xff\xff\xff\x00" + ITU1.read_bytes()[8:], "corrupt"),
    "empty": (lambda: b"", "not a TIFF"),
}


@pytest.mark.parametrize("case", list(BAD_TIFFS))
def test_bad_tiffs_are_refused_with_a_reason(case: str) -> None:
    make, reason = BAD_TIFFS[case]
    data = make()
    for conv in (TiffToPdf(), FaxThumbnail()):
        with pytest.raises(ConversionError, match=reason):
            conv.convert(data, "bad.tif")
    with pytest.raises(ConversionError, match=reason):
        render_fax([Document(data, "image/tiff")])


def test_300_dpi_tiff_is_refused_for_sending_but_still_viewable() -> None:
    data = dpi300_tiff()
    with pytest.raises(ConversionError, match="300x300 dpi; fax resolutions are 204x98 and 204x196"):
        render_fax([Document(data, "image/tiff")])
    assert b"/MediaBox" in TiffToPdf().convert(data, None).data


def test_thumbnail_is_a_png_of_page_one_in_paper_proportions(g4_itutests: bytes) -> None:
    out = FaxThumbnail().convert(g4_itutests, "fax.tif")
    assert out.media_type == "image/png" and out.filename == "fax-thumb.png"
    with Image.open(io.BytesIO(out.data)) as img:
        assert img.format == "PNG" and img.width == 240
        assert img.height == round(240 * (2382 / 196) / (1728 / 204))
        # A letter: mostly white paper with some black ink.
        hist = img.convert("L").histogram()
        assert sum(hist[200:]) > 0.8 * sum(hist) and sum(hist[:100]) > 0


def test_render_text_pdf_and_image_to_tiff_f_with_a_cover(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (400, 300), (255, 255, 255)).save(buf, "PNG")
    pdf_doc = TiffToPdf().convert(ITU1.read_bytes(), None).data
    tiff = render_fax([Document(b"Dear customer,\nyour order ships today.", "text/plain"),
                       Document(pdf_doc, "application/pdf"), Document(buf.getvalue(), "image/png"),
                       Document(ITU1.read_bytes(), "image/tiff")],
                      cover=CoverPage(to="+15550199", sender="+15550100", subject="Order"))
    pages = read_fax_tiff(tiff)
    assert len(pages) == 5
    assert all((p.width, p.length, p.compression, round(p.x_dpi), round(p.y_dpi)) == (1728, 2292, 4, 204, 196)
               for p in pages)
    check_fax_tiff(tiff)
    letter = read_fax_tiff(render_fax([Document(b"x", "text/plain")], paper="letter", fine=False))
    assert (letter[0].length, round(letter[0].y_dpi)) == (1078, 98)


def test_rendered_fax_is_accepted_by_a_fax_receiver(tmp_path: Path) -> None:
    src, rx = tmp_path / "send.tif", tmp_path / "rx.tif"
    src.write_bytes(FaxRender().convert(b"A short fax.\nSecond line.", "note.txt").data)
    result = run_pair(SpanDsp.load(), Transport.AUDIO, src, rx)
    assert result.received.ok and result.received.pages == 1
    assert subprocess.run(["tiffcmp", "-t", str(src), str(rx)], check=False).returncode == 0


@pytest.mark.parametrize(("doc", "reason"), [
    (Document(b"%PDF-1.4\n garbage", "application/pdf"), "ghostscript could not render"),
    (Document(b"not a pdf", "application/pdf"), "is not a PDF"),
    (Document(b"\x89PNG broken", "image/png"), "cannot be read"),
    (Document(b"<x/>", "application/zip"), "cannot fax a application/zip"),
])
def test_unrenderable_documents_are_conversion_errors(doc: Document, reason: str) -> None:
    with pytest.raises(ConversionError, match=reason):
        render_fax([doc])


def test_converters_are_registered_by_name() -> None:
    reg = default_converters(["fax-to-pdf", "fax-thumbnail"])
    assert [c.name for c in reg.for_media_type("image/tiff")] == ["fax-to-pdf", "fax-thumbnail"]
    assert "fax-render" in default_converters(["fax-render"]).names

"""image/tiff (fax) → application/pdf, without re-encoding the CCITT data.

Each TIFF page becomes one PDF page whose size comes from the resolution tags;
each strip of the page is embedded as it is, as a CCITTFaxDecode image XObject
(G4 → K=-1, G3 1D → K=0, G3 2D → K=1) and drawn at its place on the page. The
only change to the coded bits is the bit order: TIFF allows least-significant-
bit-first (FillOrder 2, what SpanDSP writes), PDF reads most-significant first,
so such strips are bit-reversed byte by byte. Lossless, small and fast: no pixel
is decoded. G3 documents (not what our receiver stores) are first transcoded to G4
losslessly (`converters/fax_g4.py`), which halves their size.

`read_fax_tiff` (the TIFF reader) is shared with the thumbnail and the renderer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from converters.base import Converted, derived_filename
from converters.fax_g4 import g3_to_g4
from umsg.errors import ConversionError

COMPRESSION_G3 = 3
COMPRESSION_G4 = 4
MAX_PAGES = 1000
_BIT_REVERSE = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}


@dataclass(frozen=True)
class FaxPage:
    """One bilevel CCITT page of a TIFF, with its strips as stored."""

    width: int
    length: int
    x_dpi: float
    y_dpi: float
    compression: int
    t4_options: int
    black_is_1: bool
    lsb_first: bool
    rows_per_strip: int
    strips: tuple[bytes, ...]

    @property
    def k(self) -> int:
        """The PDF CCITTFaxDecode K parameter for this coding."""
        if self.compression == COMPRESSION_G4:
            return -1
        return 1 if self.t4_options & 1 else 0

    def strip_data(self, index: int) -> bytes:
        """Strip `index` in PDF bit order (most significant bit first)."""
        data = self.strips[index]
        return data.translate(_BIT_REVERSE) if self.lsb_first else data


class _Reader:
    def __init__(self, data: bytes) -> None:
        if len(data) < 8 or data[:4] not in (b"II*\0", b"MM\0*"):
            raise ConversionError("not a TIFF file (bad header)")
        self.data = data
        self.e = "<" if data[:2] == b"II" else ">"

    def u16(self, pos: int) -> int:
        return int(struct.unpack_from(self.e + "H", self.data, pos)[0])

    def u32(self, pos: int) -> int:
        return int(struct.unpack_from(self.e + "I", self.data, pos)[0])

    def values(self, entry: int) -> list[float]:
        typ, count = self.u16(entry + 2), self.u32(entry + 4)
        size = _TYPE_SIZES.get(typ)
        if size is None or count > 1_000_000:
            raise ConversionError(f"corrupt TIFF: bad field type {typ} or count {count}")
        pos = entry + 8 if size * count <= 4 else self.u32(entry + 8)
        if pos + size * count > len(self.data):
            raise ConversionError("corrupt TIFF: a field points past the end of the file")
        if typ == 3:
            return list(struct.unpack_from(f"{self.e}{count}H", self.data, pos))
        if typ == 4:
            return list(struct.unpack_from(f"{self.e}{count}I", self.data, pos))
        if typ == 5:
            pairs = struct.unpack_from(f"{self.e}{2 * count}I", self.data, pos)
            return [pairs[i] / pairs[i + 1] if pairs[i + 1] else 0.0 for i in range(0, len(pairs), 2)]
        return list(self.data[pos:pos + count]) if size == 1 else [0.0] * count

    def ifd(self, offset: int) -> tuple[dict[int, list[float]], int]:
        if offset + 2 > len(self.data):
            raise ConversionError("corrupt TIFF: directory offset past the end of the file")
        n = self.u16(offset)
        if offset + 2 + 12 * n + 4 > len(self.data):
            raise ConversionError("corrupt TIFF: truncated directory")
        tags = {self.u16(offset + 2 + 12 * i): self.values(offset + 2 + 12 * i) for i in range(n)}
        return tags, self.u32(offset + 2 + 12 * n)


def _page(reader: _Reader, tags: dict[int, list[float]], number: int) -> FaxPage:
    def one(tag: int, default: float | None = None) -> float:
        vals = tags.get(tag)
        if not vals:
            if default is None:
                raise ConversionError(f"page {number}: required TIFF tag {tag} is missing")
            return default
        return vals[0]

    bits, samples = int(one(258, 1)), int(one(277, 1))
    if bits != 1 or samples != 1:
        raise ConversionError(
            f"page {number} is not a fax page: {samples} sample(s) of {bits} bit(s) per pixel "
            "(colour or greyscale); fax pages are black and white")
    compression = int(one(259, 1))
    if compression not in (COMPRESSION_G3, COMPRESSION_G4):
        raise ConversionError(f"page {number} is not CCITT G3/G4 coded (TIFF compression {compression})")
    if 322 in tags:
        raise ConversionError(f"page {number} is tiled; fax TIFFs are stored in strips")
    width, length = int(one(256)), int(one(257))
    if not (0 < width <= 10_000 and 0 < length <= 100_000):
        raise ConversionError(f"page {number}: implausible size {width}x{length}")
    unit = int(one(296, 2))
    scale = 2.54 if unit == 3 else 1.0
    x_dpi, y_dpi = one(282, 204.0) * scale, one(283, 196.0) * scale
    if not (10 <= x_dpi <= 2400 and 10 <= y_dpi <= 2400):
        raise ConversionError(f"page {number}: implausible resolution {x_dpi:g}x{y_dpi:g} dpi")
    offsets, counts = tags.get(273, []), tags.get(279, [])
    if not offsets or len(offsets) != len(counts):
        raise ConversionError(f"page {number}: strip offsets and byte counts do not match")
    strips = []
    for off, cnt in zip(offsets, counts, strict=True):
        start, end = int(off), int(off) + int(cnt)
        if end > len(reader.data) or cnt <= 0:
            raise ConversionError(f"page {number}: a strip runs past the end of the file (truncated?)")
        strips.append(reader.data[start:end])
    return FaxPage(
        width=width, length=length, x_dpi=x_dpi, y_dpi=y_dpi, compression=compression,
        t4_options=int(one(292, 0)), black_is_1=int(one(262, 0)) == 1,
        lsb_first=int(one(266, 1)) == 2, rows_per_strip=min(int(one(278, length)), length),
        strips=tuple(strips))


def read_fax_tiff(data: bytes) -> list[FaxPage]:
    """The pages of a bilevel CCITT TIFF; ConversionError saying why for anything else."""
    reader = _Reader(data)
    if reader.u16(2) == 43:
        raise ConversionError("BigTIFF is not a fax TIFF")
    pages: list[FaxPage] = []
    seen: set[int] = set()
    offset = reader.u32(4)
    try:
        while offset:
            if offset in seen or len(pages) >= MAX_PAGES:
                raise ConversionError("corrupt TIFF: directory chain loops or is too long")
            seen.add(offset)
            tags, offset = reader.ifd(offset)
            pages.append(_page(reader, tags, len(pages) + 1))
    except struct.error as exc:
        raise ConversionError(f"corrupt TIFF: {exc}") from exc
    if not pages:
        raise ConversionError("the TIFF has no pages")
    return pages


def _num(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


class _PdfWriter:
    """A minimal PDF 1.4 writer: numbered objects, then the xref table."""

    def __init__(self) -> None:
        self.out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        self.offsets: list[int] = []

    def reserve(self) -> int:
        self.offsets.append(0)
        return len(self.offsets)

    def put(self, num: int, body: bytes, stream: bytes | None = None) -> None:
        self.offsets[num - 1] = len(self.out)
        self.out += f"{num} 0 obj\n".encode() + body
        if stream is not None:
            self.out += b"\nstream\n" + stream + b"\nendstream"
        self.out += b"\nendobj\n"

    def finish(self, root: int) -> bytes:
        xref = len(self.out)
        self.out += f"xref\n0 {len(self.offsets) + 1}\n0000000000 65535 f \n".encode()
        for off in self.offsets:
            self.out += f"{off:010d} 00000 n \n".encode()
        self.out += (f"trailer\n<< /Size {len(self.offsets) + 1} /Root {root} 0 R >>\n"
                     f"startxref\n{xref}\n%%EOF\n").encode()
        return bytes(self.out)


def pages_to_pdf(pages: list[FaxPage]) -> bytes:
    """One PDF page per fax page, each strip an image drawn in place."""
    pdf = _PdfWriter()
    catalog, tree = pdf.reserve(), pdf.reserve()
    kids = []
    for page in pages:
        page_num = pdf.reserve()
        kids.append(page_num)
        w_pt, h_pt = page.width * 72 / page.x_dpi, page.length * 72 / page.y_dpi
        names, draws = [], []
        for i in range(len(page.strips)):
            top = i * page.rows_per_strip
            rows = min(page.rows_per_strip, page.length - top)
            if rows <= 0:
                break
            img = pdf.reserve()
            data = page.strip_data(i)
            parms = (f"<< /K {page.k} /Columns {page.width} /Rows {rows}"
                     + (" /BlackIs1 true" if page.black_is_1 else "")
                     + (" /EncodedByteAlign true" if page.k >= 0 and page.t4_options & 4 else "")
                     + " >>")
            pdf.put(img, (f"<< /Type /XObject /Subtype /Image /Width {page.width} /Height {rows} "
                          f"/ColorSpace /DeviceGray /BitsPerComponent 1 /Filter /CCITTFaxDecode "
                          f"/DecodeParms {parms} /Length {len(data)} >>").encode(), data)
            names.append(f"/S{i} {img} 0 R")
            strip_h = rows * 72 / page.y_dpi
            y = h_pt - (top * 72 / page.y_dpi) - strip_h
            draws.append(f"q {_num(w_pt)} 0 0 {_num(strip_h)} 0 {_num(y)} cm /S{i} Do Q")
        content = pdf.reserve()
        body = "\n".join(draws).encode()
        pdf.put(content, f"<< /Length {len(body)} >>".encode(), body)
        pdf.put(page_num, (f"<< /Type /Page /Parent {tree} 0 R /MediaBox [0 0 {_num(w_pt)} {_num(h_pt)}] "
                           f"/Resources << /XObject << {' '.join(names)} >> >> "
                           f"/Contents {content} 0 R >>").encode())
    pdf.put(tree, (f"<< /Type /Pages /Count {len(kids)} /Kids [{' '.join(f'{k} 0 R' for k in kids)}] >>")
            .encode())
    pdf.put(catalog, f"<< /Type /Catalog /Pages {tree} 0 R >>".encode())
    return pdf.finish(catalog)


class TiffToPdf:
    """The `fax-to-pdf` converter."""

    name: ClassVar[str] = "fax-to-pdf"
    accepts: ClassVar[frozenset[str]] = frozenset({"image/tiff", "image/tif"})
    produces: ClassVar[str] = "application/pdf"

    def convert(self, data: bytes, filename: str | None) -> Converted:
        pages = read_fax_tiff(data)
        if any(p.compression == COMPRESSION_G3 for p in pages):
            pages = read_fax_tiff(g3_to_g4(data))
        first = pages[0]
        return Converted(
            pages_to_pdf(pages), self.produces, derived_filename(filename, "pdf") or "fax.pdf",
            {"pages": len(pages), "x_dpi": round(first.x_dpi), "y_dpi": round(first.y_dpi),
             "width": first.width})

"""image/tiff (fax) → image/png: a thumbnail of page 1 for the inbox list.

Pillow (libtiff) decodes the first page; normal-resolution faxes (98 lines per
inch against 204 across) are stretched back to their true proportions so the
thumbnail looks like the paper. Greyscale with antialiasing keeps small text
legible at thumbnail size.
"""

from __future__ import annotations

import io
from typing import ClassVar

from PIL import Image, UnidentifiedImageError

from converters.base import Converted, derived_filename
from converters.tiff_pdf import read_fax_tiff
from umsg.errors import ConversionError

THUMB_WIDTH = 240


def thumbnail_png(data: bytes, width: int = THUMB_WIDTH) -> tuple[bytes, int, int]:
    """PNG bytes of page 1 scaled to `width`, with its size."""
    first = read_fax_tiff(data)[0]  # refuses non-fax TIFFs with a clear reason
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.seek(0)
            page = img.convert("L")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ConversionError(f"page 1 of the fax cannot be decoded: {exc}") from exc
    aspect = (first.length / first.y_dpi) / (first.width / first.x_dpi)
    height = max(1, round(width * aspect))
    thumb = page.resize((width, height), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    thumb.save(out, "PNG", optimize=True)
    return out.getvalue(), width, height


class FaxThumbnail:
    """The `fax-thumbnail` converter."""

    name: ClassVar[str] = "fax-thumbnail"
    accepts: ClassVar[frozenset[str]] = frozenset({"image/tiff", "image/tif"})
    produces: ClassVar[str] = "image/png"

    def convert(self, data: bytes, filename: str | None) -> Converted:
        png, width, height = thumbnail_png(data)
        name = derived_filename(filename, "png")
        return Converted(png, self.produces, name.replace(".png", "-thumb.png") if name else "fax-thumb.png",
                         {"width": width, "height": height, "page": 1})

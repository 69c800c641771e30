"""Page images of stored documents (fax TIFF, PDF) for viewing in the browser, page by page.

TIFF pages are rendered with Pillow in a thread (fax resolutions are not square:
a 204x98 dpi page is stretched to its true aspect); PDF pages with ghostscript as
a subprocess, allowed to read only that one file. Both are scoped like the part
content endpoint: a part of another project does not exist for the caller.
Stored blobs never change (they are named by sha256), so images may be cached.
"""

from __future__ import annotations

import asyncio
import io
from functools import partial
from pathlib import Path

from aiohttp import web
from PIL import Image

from storage.models import Part
from umsg.conversations import Conversations
from umsg.errors import ConversionError, NotFound
from umsg.web.auth import ensure_visible
from umsg.web.endpoints import Ctx, json_ok
from umsg.web.errors import HttpProblem

MAX_WIDTH = 1100
GS_SECONDS = 30.0
TIFF = ("image/tiff", "image/tif")
PDF = ("application/pdf",)


async def _part(ctx: Ctx) -> tuple[Part, Path]:
    part_id = ctx.path_id("part")
    conversations = Conversations(ctx.core.sessions, ctx.core.events, ctx.core.readers)
    part = await conversations.part(part_id, partial(ensure_visible, ctx.me, kind="part", ident=part_id))
    kind = part.media_type.split(";", 1)[0].strip().lower()
    if kind not in TIFF + PDF:
        raise HttpProblem(415, "unsupported_media_type", f"part {part_id} is {kind}, not a TIFF or PDF document")
    try:
        path = await ctx.core.blobs.local_path(part.sha256)
    except FileNotFoundError:
        raise NotFound(f"the content of part {part_id} is missing from the blob store") from None
    return part, path


def _is_pdf(part: Part) -> bool:
    return part.media_type.split(";", 1)[0].strip().lower() in PDF


def _tiff_count(path: Path) -> int:
    with Image.open(path) as im:
        return int(getattr(im, "n_frames", 1))


def _tiff_page(path: Path, page: int) -> bytes:
    with Image.open(path) as im:
        im.seek(page - 1)
        xres, yres = (float(v) for v in im.info.get("dpi", (1, 1)))
        frame = im.convert("L")
        width, height = frame.size
        if xres > 0 and yres > 0 and abs(xres - yres) > 1:
            height = round(height * xres / yres)  # normal-resolution fax: rows are twice as tall
        scale = min(1.0, MAX_WIDTH / width)
        frame = frame.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        frame.save(out, "PNG", optimize=False)
        return out.getvalue()


async def _gs(path: Path, *args: str) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        "gs", "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", f"--permit-file-read={path}", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), GS_SECONDS)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ConversionError(f"ghostscript took longer than {GS_SECONDS:.0f} s") from None
    if proc.returncode != 0:
        raise ConversionError(f"ghostscript failed: {err.decode(errors='replace')[-300:]}")
    return out


async def _pdf_count(path: Path) -> int:
    out = await _gs(path, "-dNODISPLAY", "-c", f"({path}) (r) file runpdfbegin pdfpagecount = quit")
    return int(out.decode().strip().splitlines()[-1])


async def _pdf_page(path: Path, page: int) -> bytes:
    return await _gs(path, "-sDEVICE=pnggray", "-r110", f"-dFirstPage={page}", f"-dLastPage={page}",
                     "-sOutputFile=-", str(path))


async def _count(part: Part, path: Path) -> int:
    if _is_pdf(part):
        return await _pdf_count(path)
    return await asyncio.to_thread(_tiff_count, path)


async def part_pages(ctx: Ctx) -> web.StreamResponse:
    part, path = await _part(ctx)
    return json_ok({"part_id": part.id, "media_type": part.media_type, "pages": await _count(part, path)})


async def part_page_image(ctx: Ctx) -> web.StreamResponse:
    part, path = await _part(ctx)
    raw = ctx.request.match_info["page"]
    count = await _count(part, path)
    page = int(raw) if raw.isascii() and raw.isdigit() else 0
    if not 1 <= page <= count:
        raise NotFound(f"part {part.id} has {count} pages; there is no page {raw!r}")
    png = await (_pdf_page(path, page) if _is_pdf(part) else asyncio.to_thread(_tiff_page, path, page))
    return web.Response(body=png, content_type="image/png",
                        headers={"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"})

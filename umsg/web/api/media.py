"""Page images of stored documents (fax TIFF, PDF) for viewing in the browser, page by page.

TIFF pages are rendered with Pillow in a thread (fax resolutions are not square:
a 204x98 dpi page is stretched to its true aspect); PDF pages with ghostscript as
a subprocess, allowed to read only that one file. Both are scoped like the part
content endpoint: a part of another project does not exist for the caller.
Stored blobs never change (they are named by sha256), so images may be cached.

Rendering is bounded (`PageRenders`, one per web app): at most `concurrent`
renders run at once (the others wait their turn), each within `seconds`
(ghostscript is killed; a Pillow thread keeps its slot until it ends), and
page images, page counts and failures are cached by sha256 and page in a
cache of at most `cache_bytes`. A hostile PDF then costs one slow render,
not one per view, and never more CPUs than the cap.
"""

from __future__ import annotations

import asyncio
import io
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

from aiohttp import web
from PIL import Image

from storage.models import Part
from umsg.conversations import Conversations
from umsg.errors import ConversionError, NotFound, TransientError
from umsg.web.auth import ensure_visible
from umsg.web.endpoints import Ctx, json_ok
from umsg.web.errors import HttpProblem

MAX_WIDTH = 1100
TIFF = ("image/tiff", "image/tif")
PDF = ("application/pdf",)
T = TypeVar("T")


class PageRenders:
    """Renders of one web app: capped in number, limited in time, cached by (sha256, page)."""

    def __init__(self, concurrent: int = 2, seconds: float = 15.0, cache_bytes: int = 64 * 1024 * 1024) -> None:
        self.concurrent = concurrent
        self.seconds = seconds
        self.cache_bytes = cache_bytes
        self._slots = asyncio.Semaphore(concurrent)
        # Least recently used first; a failure is cached too (a stored blob fails the same way again).
        self._cache: OrderedDict[tuple[str, int], bytes | int | ConversionError] = OrderedDict()
        self._size = 0
        # One render per key at a time: a second view of a page being rendered waits for it.
        self._pending: dict[tuple[str, int], asyncio.Future[bytes | int]] = {}
        self.stats = {"renders": 0, "cache_hits": 0, "timeouts": 0, "running": 0, "max_running": 0}

    def _remember(self, key: tuple[str, int], value: bytes | int | ConversionError) -> None:
        cost = len(value) if isinstance(value, bytes) else 64
        if cost > self.cache_bytes:
            return
        self._cache[key] = value
        self._size += cost
        while self._size > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._size -= len(old) if isinstance(old, bytes) else 64

    async def image(self, sha256: str, page: int, render: Callable[[float], Awaitable[bytes]]) -> bytes:
        """Page `page` of the blob `sha256` as an image: cached, or `render(seconds)` in a slot."""
        value = await self._get((sha256, page), render)
        assert isinstance(value, bytes)
        return value

    async def count(self, sha256: str, render: Callable[[float], Awaitable[int]]) -> int:
        """How many pages the blob `sha256` has: cached, or `render(seconds)` in a slot."""
        value = await self._get((sha256, 0), render)
        assert isinstance(value, int)
        return value

    async def _get(self, key: tuple[str, int], render: Callable[[float], Awaitable[bytes | int]]) -> bytes | int:
        if key in self._cache:
            self._cache.move_to_end(key)
            self.stats["cache_hits"] += 1
            hit = self._cache[key]
            if isinstance(hit, ConversionError):
                raise hit
            return hit
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bytes | int] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            value = await self._render(render)
        except ConversionError as exc:
            self._remember(key, exc)
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        except BaseException as exc:
            future.set_exception(TransientError("the render was interrupted; try again"))
            future.exception()
            raise exc
        finally:
            del self._pending[key]
        self._remember(key, value)
        future.set_result(value)
        return value

    async def _render(self, render: Callable[[float], Awaitable[bytes | int]]) -> bytes | int:
        async with self._slots:
            self.stats["renders"] += 1
            self.stats["running"] += 1
            self.stats["max_running"] = max(self.stats["max_running"], self.stats["running"])
            try:
                return await render(self.seconds)
            except ConversionError as exc:
                if "longer than" in str(exc):
                    self.stats["timeouts"] += 1
                raise
            finally:
                self.stats["running"] -= 1


PAGE_RENDERS: web.AppKey[PageRenders] = web.AppKey("umsg_page_renders")


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
        out, err = await proc.communicate()
    except BaseException:
        # Past the limit, or the viewer went away: the render must not run on without anyone.
        if proc.returncode is None:
            proc.kill()
        await asyncio.shield(proc.wait())
        raise
    if proc.returncode != 0:
        raise ConversionError(f"ghostscript failed: {err.decode(errors='replace')[-300:]}")
    return out


async def _limited(seconds: float, work: Callable[[], T]) -> T:
    """`work` in a thread, answered within `seconds`; the thread (which cannot be stopped) keeps the
    caller's render slot until it ends, so the cap on renders holds."""
    task = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        return await asyncio.wait_for(asyncio.shield(task), seconds)
    except TimeoutError:
        await task  # hold the slot; the viewer gets the error below once the thread is done
        raise ConversionError(f"rendering took longer than {seconds:g} s") from None


async def _timed(seconds: float, render: Awaitable[T]) -> T:
    try:
        return await asyncio.wait_for(render, seconds)
    except TimeoutError:
        raise ConversionError(f"ghostscript took longer than {seconds:g} s") from None


async def _pdf_count(path: Path, seconds: float) -> int:
    out = await _timed(seconds, _gs(path, "-dNODISPLAY", "-c",
                                    f"({path}) (r) file runpdfbegin pdfpagecount = quit"))
    return int(out.decode().strip().splitlines()[-1])


async def _pdf_page(path: Path, page: int, seconds: float) -> bytes:
    return await _timed(seconds, _gs(path, "-sDEVICE=pnggray", "-r110", f"-dFirstPage={page}",
                                     f"-dLastPage={page}", "-sOutputFile=-", str(path)))


def _renders(ctx: Ctx) -> PageRenders:
    renders = ctx.request.app.get(PAGE_RENDERS)
    # An app built without one still limits each render's time (no cap or cache across requests).
    return renders if renders is not None else PageRenders()


async def _count(ctx: Ctx, part: Part, path: Path) -> int:
    if _is_pdf(part):
        return await _renders(ctx).count(part.sha256, partial(_pdf_count, path))
    return await _renders(ctx).count(part.sha256, lambda seconds: _limited(seconds, partial(_tiff_count, path)))


async def part_pages(ctx: Ctx) -> web.StreamResponse:
    part, path = await _part(ctx)
    return json_ok({"part_id": part.id, "media_type": part.media_type, "pages": await _count(ctx, part, path)})


async def part_page_image(ctx: Ctx) -> web.StreamResponse:
    part, path = await _part(ctx)
    raw = ctx.request.match_info["page"]
    count = await _count(ctx, part, path)
    page = int(raw) if raw.isascii() and raw.isdigit() else 0
    if not 1 <= page <= count:
        raise NotFound(f"part {part.id} has {count} pages; there is no page {raw!r}")
    if _is_pdf(part):
        png = await _renders(ctx).image(part.sha256, page, partial(_pdf_page, path, page))
    else:
        png = await _renders(ctx).image(part.sha256, page,
                                        lambda seconds: _limited(seconds, partial(_tiff_page, path, page)))
    return web.Response(body=png, content_type="image/png",
                        headers={"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"})

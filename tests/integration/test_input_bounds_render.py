"""Page views of hostile documents are bounded (issue 16): capped renders, cached pages, a time limit.

Real ghostscript behind the real HTTP API; the ghostscript processes the gateway starts are
counted from the process table while a burst of views runs.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import psutil  # type: ignore[import-untyped]
from aiohttp.test_utils import TestServer
from api_harness import Api, attachment

from umsg.web.api.media import PAGE_RENDERS, PageRenders

PAGES = 4


def heavy_pdf(path: Path) -> bytes:
    # Thousands of filled paths per page: small to send, a fraction of a second to rasterise each.
    subprocess.run(["gs", "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=pdfwrite", f"-sOutputFile={path}", "-c",
                    f"1 1 {PAGES} {{ pop 0 1 10000 {{ dup 37 mul 600 mod exch 53 mul 800 mod moveto 300 300 rlineto "
                    "-150 -290 rlineto closepath fill } for showpage } for"], check=True)
    return path.read_bytes()


def ghostscripts() -> int:
    return sum(1 for p in psutil.Process().children(recursive=True) if p.name() == "gs")


async def pdf_part(api: Api, tmp_path: Path) -> int:
    sent = await api.message(text="see the scan", attachments=[attachment(heavy_pdf(tmp_path / "heavy.pdf"))])
    msg = await api.call("GET", f"/api/v1/messages/{sent['message_id']}", who="alice")
    return int(next(p["id"] for p in msg.body["parts"] if p["media_type"] == "application/pdf"))


def renders_of(api: Api) -> PageRenders:
    server = api.client.server
    assert isinstance(server, TestServer)
    return server.app[PAGE_RENDERS]


async def test_a_burst_of_views_renders_at_most_the_cap_and_a_second_view_is_cached(
        api: Api, tmp_path: Path) -> None:
    part = await pdf_part(api, tmp_path)
    renders = renders_of(api)
    assert renders.concurrent == 2
    views = [asyncio.create_task(api.call("GET", f"/api/v1/parts/{part}/pages/{page}", who="alice"))
             for page in [*range(1, PAGES + 1)] * 3]
    most = 0
    while not all(v.done() for v in views):
        most = max(most, ghostscripts())
        await asyncio.sleep(0.01)  # sampling the process table, not waiting for an event
    replies = [v.result() for v in views]
    assert all(r.status == 200 and r.raw.startswith(b"\x89PNG") for r in replies)
    assert most <= 2 and renders.stats["max_running"] <= 2
    # Twelve views of four pages: one count and one render per page; the rest came from the cache.
    assert renders.stats["renders"] == PAGES + 1
    again = await api.call("GET", f"/api/v1/parts/{part}/pages/3", who="alice")
    assert again.status == 200 and again.raw == replies[2].raw
    assert renders.stats["renders"] == PAGES + 1 and ghostscripts() == 0
    # The cache is behind the visibility check: another project's agent still sees nothing.
    assert (await api.call("GET", f"/api/v1/parts/{part}/pages/3", who="bob")).status == 404


async def test_a_render_past_its_time_limit_is_killed_and_not_retried(api: Api, tmp_path: Path) -> None:
    part = await pdf_part(api, tmp_path)
    renders = renders_of(api)
    assert (await api.call("GET", f"/api/v1/parts/{part}/pages", who="alice")).body["pages"] == PAGES
    renders.seconds = 0.05  # no ghostscript rasterises one of these pages this fast
    first = await api.call("GET", f"/api/v1/parts/{part}/pages/1", who="alice")
    assert first.status == 422 and "longer than" in first.body["error"]["message"], first.body
    assert ghostscripts() == 0  # killed, not left running
    done = renders.stats["renders"]
    second = await api.call("GET", f"/api/v1/parts/{part}/pages/1", who="alice")
    assert second.status == 422 and renders.stats["renders"] == done  # answered from the cache
    assert renders.stats["timeouts"] == 1

"""The agents' inbox page and its assets, served as plain files under `/inbox/`.

No API data passes through here (the page calls the token API), so these routes
need no token. Only files that exist in the package's `static/inbox` folder with
an expected extension are served, with a strict Content-Security-Policy: the
page runs only its own scripts, and email HTML shows in a sandboxed iframe.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).resolve().parent / "static" / "inbox"
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' blob: data:; "
    "media-src 'self' blob:; frame-src 'self' about:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


async def _file(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("name") or "index.html"
    path = STATIC / name
    kind = TYPES.get(path.suffix)
    if kind is None or "/" in name or name.startswith(".") or not path.is_file():
        raise web.HTTPNotFound(text="no such file in the inbox")
    return web.FileResponse(path, headers={
        "Content-Type": f"{kind}; charset=utf-8",
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    })


async def _redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/inbox/")


def mount_inbox(app: web.Application) -> None:
    """Add `/inbox/` (the page) and `/inbox/<file>` (its scripts and styles) to `app`."""
    app.router.add_get("/inbox", _redirect)
    app.router.add_get("/inbox/", _file)
    app.router.add_get(r"/inbox/{name:[A-Za-z0-9_-]+\.[a-z]+}", _file)

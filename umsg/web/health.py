"""`/healthz`: is the store reachable, at which schema revision, and how full is the queue.

Load balancers and orchestrators poll it without a token, so the answer says
what is wrong in words but never carries credentials.
"""

from __future__ import annotations

import asyncio
import logging
import re

from aiohttp import web

from storage.migrate import current_revision
from umsg.web.endpoints import Ctx, json_ok
from umsg.web.errors import RETRY_AFTER_SECONDS
from umsg.web.keys import ADAPTERS

log = logging.getLogger(__name__)

# Longer than a healthy store ever needs; short enough for a probe's own timeout.
CHECK_SECONDS = 5.0
_CREDENTIALS = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    text = _CREDENTIALS.sub(r"\1***@", text)[:300]
    return f"the store is unreachable: {type(exc).__name__}" + (f": {text}" if text else "")


async def healthz(ctx: Ctx) -> web.StreamResponse:
    core = ctx.core
    backend = core.engine.dialect.name
    adapters = ctx.request.app[ADAPTERS]
    channels = sorted(adapters)
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            revision = await current_revision(core.engine)
            stats = await core.queue.stats()
    except Exception as exc:  # whatever broke, the probe gets an answer, not a 500
        reason = "the store did not answer within 5 s" if isinstance(exc, TimeoutError) else _reason(exc)
        log.warning("health check failed: %s", reason)
        return web.json_response(
            {
                "status": "unavailable",
                "reason": reason,
                "store": {"backend": backend, "revision": None, "ok": False},
                "channels": channels,
            },
            status=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    return json_ok(
        {
            "status": "ok",
            "store": {"backend": backend, "revision": revision, "ok": True},
            "queue": dict(stats),
            "channels": channels,
        }
    )

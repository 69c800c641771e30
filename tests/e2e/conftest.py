"""Fixtures shared by the browser tests (the store-backed ones are in tests/conftest.py).

`inbox_server` runs a real `umsg serve` on the test's store and creates an admin token with
the CLI (helpers: inbox_harness.py). `chat_site` runs a real `run_service` with the `webchat`
channel, a shop page on another origin carrying the widget, and one headless Chromium
(helpers: chat_harness.py).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from browser import chromium
from chat_harness import PAGE, SECRET, ChatSite, running_service
from inbox_harness import InboxServer, serving_inbox

from umsg.core import Core
from umsg.tokens import create_token

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from serve_proc import db_env  # noqa: E402


@pytest.fixture
async def inbox_server(db_config: dict[str, object], tmp_path: Path) -> AsyncIterator[InboxServer]:
    env = {**db_env(db_config), "UMSG_ROUTER__OFFER_TIMEOUT_SECONDS": "60",
           "UMSG_ROUTER__LEADER_POLL_SECONDS": "0.2"}
    async with serving_inbox(tmp_path / "data", env) as server:
        yield server


@pytest.fixture
async def chat_site(make_settings: Any) -> AsyncIterator[ChatSite]:
    holder: dict[str, str] = {}

    async def shop(request: web.Request) -> web.Response:
        return web.Response(text=PAGE.format(umsg=holder["umsg"]), content_type="text/html")

    app = web.Application()
    app.router.add_get("/", shop)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    origin = f"http://127.0.0.1:{runner.addresses[0][1]}"
    settings = make_settings(
        http={"host": "127.0.0.1", "port": 0},
        router={"offer_timeout_seconds": 60, "leader_poll_seconds": 0.2},
        channels={"webchat": {"type": "webchat", "secret": SECRET, "allowed_origins": [origin]}},
    )
    core = await Core.open(settings)
    await core.ensure_project("default")
    admin = await create_token(core.sessions, "admin", label="e2e admin")
    try:
        async with running_service(settings) as holder["umsg"]:
            async with aiohttp.ClientSession() as http, chromium() as browser:
                yield ChatSite(f"{origin}/", InboxServer(holder["umsg"], admin, http), core, browser)
    finally:
        await core.aclose()
        await runner.cleanup()

"""Shared setup of the chat flow browser tests (fixtures and helpers only; no tests here).

`chat_site` runs a real `run_service` (web, dispatcher, router, the `webchat` channel) on
the test's store, a shop page on another origin carrying the widget's one script tag, an
admin token for the API, and one headless Chromium. The customer uses the widget in one
browser context, the agent signs in to the inbox in another.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from browser import chromium
from inbox_harness import InboxServer
from playwright.async_api import Browser, BrowserContext, Locator, Page, expect
from sqlalchemy import func, select

from storage.models import Message
from umsg.core import Core
from umsg.serve import run_service
from umsg.tokens import create_token

SECRET = "e2e-secret-0123456789abcdef"
WAIT_MS = 20_000
PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Shop</title></head>
<body><h1>Acme shop</h1><p>Welcome.</p>
<script src="{umsg}/channels/webchat/widget.js" async></script></body></html>"""


@dataclass
class ChatSite:
    page_url: str
    srv: InboxServer  # the API as an admin, and agents with passwords
    core: Core  # a second handle on the same store, for checks
    browser: Browser

    async def customer(self) -> tuple[BrowserContext, Page]:
        context = await self.browser.new_context(viewport={"width": 360, "height": 740})
        page = await context.new_page()
        await page.goto(self.page_url)
        return context, page

    async def agent_page(self) -> tuple[BrowserContext, Page]:
        context = await self.browser.new_context(viewport={"width": 1280, "height": 860})
        return context, await context.new_page()

    async def stored(self, text: str, direction: str | None = None) -> int:
        """How many stored messages have exactly this text (and direction)."""
        stmt = select(func.count()).select_from(Message).where(Message.text == text)
        if direction is not None:
            stmt = stmt.where(Message.direction == direction)
        async with self.core.readers() as s:
            return int(await s.scalar(stmt) or 0)


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
    stop = asyncio.Event()
    ready = asyncio.get_running_loop().create_future()
    service = asyncio.create_task(run_service(settings, ready=ready.set_result, stop=stop))
    try:
        holder["umsg"] = await asyncio.wait_for(ready, 60)
        async with aiohttp.ClientSession() as http, chromium() as browser:
            yield ChatSite(f"{origin}/", InboxServer(holder["umsg"], admin, http), core, browser)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(service, 30)
        await core.aclose()
        await runner.cleanup()


def widget_lines(page: Page, cls: str = "msg") -> Locator:
    return page.locator(f"#umsg-chat .log li.{cls}")


async def open_widget(page: Page, name: str | None = None) -> None:
    """Open the chat and pass the optional pre-chat form (with a name when given)."""
    await page.get_by_role("button", name="Open chat").click()
    await expect(page.get_by_role("dialog")).to_be_visible(timeout=WAIT_MS)
    if name is not None:
        await page.get_by_role("textbox", name="Your name").fill(name)
    await page.get_by_role("button", name="Start chat").click()
    await expect(page.get_by_label("Message", exact=True)).to_be_focused()


async def say(page: Page, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    await box.fill(text)
    await box.press("Enter")


async def agent_reply(page: Page, text: str) -> None:
    await page.fill("#reply-text", text)
    await page.keyboard.press("Control+Enter")

"""Helpers for the chat flow browser tests (no fixtures and no tests here).

`ChatSite` is what the `chat_site` fixture (tests/e2e/conftest.py) yields: a real
`run_service` (web, dispatcher, router, the `webchat` channel) on the test's store, a shop
page on another origin carrying the widget's one script tag (`PAGE`), an admin token for
the API, and one headless Chromium. The customer uses the widget in one browser context,
the agent signs in to the inbox in another; the functions below drive either side.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from inbox_harness import InboxServer
from playwright.async_api import Browser, BrowserContext, Locator, Page, expect
from sqlalchemy import func, select

from storage.models import Message
from umsg.app.serve import run_service
from umsg.config import Settings
from umsg.core import Core

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


@contextlib.asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[str]:
    """`run_service` in this process for the block; yields its URL once it listens."""
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    service = asyncio.create_task(run_service(settings, ready=ready.set_result, stop=stop))
    try:
        yield await asyncio.wait_for(ready, 60)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(service, 30)

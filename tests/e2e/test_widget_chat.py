"""The chat widget in real headless Chromium against a real `run_service` (dispatcher, router, web).

A test page on another origin carries the one script tag. The customer chats, an agent's
reply (queued through the outbox and delivered by the dispatcher) appears, a reload shows
the history, lines typed while the network is down arrive exactly once, and hostile text
and file names stay text. Screenshots go to UMSG_ARTIFACTS.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from browser import chromium, screenshot
from chat_harness import running_service
from playwright.async_api import Browser, BrowserContext, Page, expect
from sqlalchemy import func, select

from storage.models import Agent, AgentProject, Message
from umsg.config import Settings
from umsg.core import Core

SECRET = "e2e-secret-0123456789abcdef"
WAIT_MS = 15_000
PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Shop</title></head>
<body><h1>Acme shop</h1><p>Welcome.</p>
<script src="{umsg}/channels/webchat/widget.js" async></script></body></html>"""


@dataclass
class Site:
    page_url: str
    umsg_url: str
    settings: Settings
    core: Core  # a second handle on the same store, for the agent side and checks
    browser: Browser

    async def customer(self) -> tuple[BrowserContext, Page]:
        context = await self.browser.new_context(viewport={"width": 360, "height": 740})
        page = await context.new_page()
        await page.goto(self.page_url)
        return context, page

    async def reply(self, text: str) -> None:
        """An agent answers the newest chat conversation (delivered by the service's dispatcher)."""
        async with self.core.readers() as s:
            conv = await s.scalar(select(Message.conversation_id).where(Message.channel == "webchat")
                                  .order_by(Message.id.desc()).limit(1))
        assert conv is not None
        pid = await self.core.ensure_project("default")
        await self.core.channel_services().outbox.reply(project_id=pid, conversation_id=conv, text=text,
                                                        agent_id=1)

    async def stored(self, text: str) -> int:
        async with self.core.readers() as s:
            return int(await s.scalar(select(func.count()).select_from(Message).where(Message.text == text)) or 0)


@pytest.fixture
async def site(make_settings: Any) -> AsyncIterator[Site]:
    holder: dict[str, str] = {}

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE.format(umsg=holder["umsg"]), content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    origin = f"http://127.0.0.1:{port}"
    settings = make_settings(http={"host": "127.0.0.1", "port": 0}, channels={"webchat": {
        "type": "webchat", "secret": SECRET, "allowed_origins": [origin]}})
    core = await Core.open(settings)
    pid = await core.ensure_project("default")
    async with core.sessions() as s:
        agent = Agent(login="alice", display_name="Alice", state="available")
        s.add(agent)
        await s.flush()
        s.add(AgentProject(agent_id=agent.id, project_id=pid))
        await s.commit()
    try:
        async with running_service(settings) as holder["umsg"]:
            async with chromium() as browser:
                yield Site(f"{origin}/", holder["umsg"], settings, core, browser)
    finally:
        await core.aclose()
        await runner.cleanup()


def log_items(page: Page, cls: str = "msg") -> Any:
    return page.locator(f"#umsg-chat .log li.{cls}")


async def open_chat(page: Page) -> None:
    await page.get_by_role("button", name="Open chat").click()
    await expect(page.get_by_role("dialog")).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#umsg-chat .status")).to_have_text("We typically reply in a few minutes.",
                                                                 timeout=WAIT_MS)


async def say(page: Page, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    await box.fill(text)
    await box.press("Enter")


async def test_customer_chats_gets_a_reply_and_sees_history_after_reload(site: Site) -> None:
    context, page = await site.customer()
    await open_chat(page)
    await expect(page.get_by_role("textbox", name="Your name")).to_be_focused()  # pre-chat form first, focus in it
    await page.get_by_role("textbox", name="Your name").fill("Robin")
    await page.get_by_role("textbox", name="Your email").fill("robin@example.com")
    await page.get_by_role("button", name="Start chat").click()
    await expect(page.get_by_label("Message", exact=True)).to_be_focused()
    await screenshot(page, "widget-01-open-360px")
    await say(page, "Where is my order 1234?")
    mine = log_items(page, "mine")
    await expect(mine).to_have_count(1)
    await expect(mine.first).not_to_have_class("msg mine pending", timeout=WAIT_MS)  # acked after commit
    await expect(mine.first).to_have_attribute("data-id", re.compile(r"^\d+$"), timeout=WAIT_MS)
    await site.reply("It ships today.")
    theirs = log_items(page, "theirs")
    await expect(theirs).to_have_count(1, timeout=WAIT_MS)
    await expect(theirs.first).to_contain_text("It ships today.")
    await expect(theirs.first).to_contain_text("Alice")
    await expect(page.get_by_role("log")).to_have_attribute("aria-live", "polite")
    await screenshot(page, "widget-02-reply")

    await page.reload()
    await expect(page.get_by_role("dialog")).to_be_visible(timeout=WAIT_MS)  # stays open across loads
    await expect(log_items(page)).to_have_count(2, timeout=WAIT_MS)
    await expect(log_items(page, "mine").first).to_contain_text("Where is my order 1234?")
    await expect(log_items(page, "theirs").first).to_contain_text("It ships today.")
    await expect(page.locator("#umsg-chat form.prechat")).to_be_hidden()
    await screenshot(page, "widget-03-after-reload")
    await context.close()


async def test_lines_typed_while_offline_arrive_once(site: Site) -> None:
    context, page = await site.customer()
    await open_chat(page)
    await page.get_by_role("button", name="Start chat").click()  # skip the optional form
    await say(page, "before the drop")
    await expect(log_items(page, "mine").first).to_have_attribute("data-id", re.compile(r"^\d+$"), timeout=WAIT_MS)
    await context.set_offline(True)
    await expect(page.locator("#umsg-chat .status")).to_have_text("Reconnecting\u2026", timeout=WAIT_MS)
    await say(page, "typed offline 1")
    await say(page, "typed offline 2")
    await expect(page.locator("#umsg-chat .log li.pending")).to_have_count(2)
    await screenshot(page, "widget-04-offline-pending")
    await context.set_offline(False)
    await expect(page.locator("#umsg-chat .log li.pending")).to_have_count(0, timeout=WAIT_MS)
    # Reload too: the history has each line once, and nothing is left to resend.
    await page.reload()
    await expect(log_items(page, "mine")).to_have_count(3, timeout=WAIT_MS)
    for text in ("before the drop", "typed offline 1", "typed offline 2"):
        await expect(page.locator("#umsg-chat .log li", has_text=text)).to_have_count(1)
        assert await site.stored(text) == 1
    assert await page.evaluate("JSON.parse(localStorage.getItem(Object.keys(localStorage)[0])).pending.length") == 0
    await screenshot(page, "widget-05-after-reconnect")
    await context.close()


HOSTILE = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
HOSTILE_FILE = '"><svg onload="window.__xss=3">.png'


async def test_hostile_text_and_file_names_render_inert(site: Site) -> None:
    context, page = await site.customer()
    await open_chat(page)
    await page.get_by_role("button", name="Start chat").click()
    await say(page, HOSTILE)
    await expect(log_items(page, "mine").first).to_have_attribute("data-id", re.compile(r"^\d+$"), timeout=WAIT_MS)
    await page.locator("#umsg-file").set_input_files(
        {"name": HOSTILE_FILE, "mimeType": "image/png", "buffer": b"\x89PNG\r\n\x1a\n" + b"\0" * 32})
    await expect(page.locator("#umsg-chat .log a.file")).to_have_text(HOSTILE_FILE, timeout=WAIT_MS)
    await site.reply('<b onmouseover="window.__xss=4">bold?</b><iframe src="javascript:window.__xss=5">')
    await expect(log_items(page, "theirs")).to_have_count(1, timeout=WAIT_MS)
    await expect(log_items(page, "theirs").first).to_contain_text("<b onmouseover=")
    await expect(log_items(page, "mine").first).to_contain_text(HOSTILE)
    await log_items(page, "theirs").first.hover()
    assert await page.evaluate("window.__xss === undefined")
    inside = page.locator("#umsg-chat .log")
    for tag in ("img", "script", "svg", "iframe", "b"):
        await expect(inside.locator(tag)).to_have_count(0)
    await screenshot(page, "widget-06-hostile-inert")
    await context.close()

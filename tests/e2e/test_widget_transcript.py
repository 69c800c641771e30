"""The transcript in real headless Chromium: the visitor asks for it, a confirmation link (not the
transcript) reaches the SMTP sink, the visitor opens the link in the browser and presses the
button, and only then the transcript is mailed. Screenshots go to UMSG_ARTIFACTS.

The service is a real `run_service` with the web chat and an email channel relaying to an
aiosmtpd sink on loopback; `http.public_url` is set, as confirmation links need it.
"""

from __future__ import annotations

import asyncio
import email
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import Message as MailMessage
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from browser import chromium, screenshot
from chat_harness import running_service
from peers.common import await_until, free_port
from playwright.async_api import Browser, Page, expect

from storage.models import Agent, AgentProject
from umsg.core import Core

SECRET = "e2e-secret-0123456789abcdef"
WAIT_MS = 15_000
PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Shop</title></head>
<body><h1>Acme shop</h1><p>Welcome.</p>
<script src="{umsg}/channels/webchat/widget.js" async></script></body></html>"""


class Sink:
    def __init__(self) -> None:
        self.mails: list[MailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.mails.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@dataclass
class Site:
    page_url: str
    browser: Browser
    sink: Sink


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
    origin = f"http://127.0.0.1:{runner.addresses[0][1]}"
    sink = Sink()
    smtp = Controller(sink, hostname="127.0.0.1", port=free_port())
    await asyncio.to_thread(smtp.start)
    port = free_port()
    settings = make_settings(
        http={"host": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}"},
        channels={"webchat": {"type": "webchat", "secret": SECRET, "allowed_origins": [origin]},
                  "email": {"type": "email", "domain": "acme.test", "relay": f"smtp://127.0.0.1:{smtp.port}"}})
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
                yield Site(f"{origin}/", browser, sink)
    finally:
        await core.aclose()
        await runner.cleanup()
        await asyncio.to_thread(smtp.stop)


def _body(mail: MailMessage) -> str:
    part = next(p for p in mail.walk() if p.get_content_type() == "text/plain")
    data = part.get_payload(decode=True)
    assert isinstance(data, bytes)
    return data.decode()


async def _end_with_transcript(page: Page) -> None:
    await page.get_by_role("button", name="End chat").click()
    await page.get_by_label("Email me a transcript").check()
    await page.get_by_role("button", name="Send feedback").click()


async def test_transcript_goes_out_only_after_the_visitor_opens_the_link(site: Site) -> None:
    context = await site.browser.new_context(viewport={"width": 360, "height": 740})
    page = await context.new_page()
    await page.goto(site.page_url)
    await page.get_by_role("button", name="Open chat").click()
    await page.get_by_role("textbox", name="Your email").fill("kim@customer.test")
    await page.get_by_role("button", name="Start chat").click()
    box = page.get_by_label("Message", exact=True)
    await box.fill("Where is my parcel 4711?")
    await box.press("Enter")
    await expect(page.locator("#umsg-chat .log li.msg.pending")).to_have_count(0, timeout=WAIT_MS)
    await _end_with_transcript(page)
    await expect(page.locator("#umsg-chat .log li.notice").last).to_have_text(
        "Thank you! We sent a link to kim@customer.test: open it to receive the transcript.", timeout=WAIT_MS)
    await screenshot(page, "widget-transcript-01-link-sent")

    # The sink gets the confirmation link, never the chat's text.
    (confirm,) = await await_until(lambda: site.sink.mails or None, "the confirmation mail")
    assert confirm["To"] == "kim@customer.test" and "4711" not in _body(confirm)
    found = re.search(r"http://\S+/channels/webchat/transcript\?t=\S+", _body(confirm))
    assert found is not None

    link_page = await context.new_page()
    await link_page.goto(found.group(0))
    await expect(link_page.get_by_role("heading")).to_have_text("Your chat transcript")
    await screenshot(link_page, "widget-transcript-02-confirm-page")
    assert len(site.sink.mails) == 1  # opening the link alone sends nothing
    await link_page.get_by_role("button", name="Send the transcript").click()
    await expect(link_page.get_by_role("heading")).to_have_text("Transcript on its way", timeout=WAIT_MS)
    await screenshot(link_page, "widget-transcript-03-on-its-way")
    await await_until(lambda: len(site.sink.mails) >= 2 or None, "the transcript mail")
    transcript = site.sink.mails[1]
    assert transcript["To"] == "kim@customer.test" and "Where is my parcel 4711?" in _body(transcript)

    # The address is proven now: the next request sends the transcript directly.
    await page.bring_to_front()
    await _end_with_transcript(page)
    await expect(page.locator("#umsg-chat .log li.notice").last).to_have_text(
        "Thank you! The transcript is on its way.", timeout=WAIT_MS)
    await screenshot(page, "widget-transcript-04-proven")
    await await_until(lambda: len(site.sink.mails) >= 3 or None, "the second transcript")
    await context.close()

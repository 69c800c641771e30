"""The agent sees a forged sender name as a warning in the inbox (Chromium).

A real service with an email channel receives, over SMTP on loopback, the impersonation
mail of issue 16 (`=?utf-8?q?Sales_=3Csales=40acme=2Eexample=3E?= <attacker@evil.example>`)
and an ordinary one. An agent signs in, opens the forged message's conversation and must see
the warning naming both the address shown in the name and the real one; the ordinary message
shows none. The screenshot `sender-warning-01.png` is kept as an artifact.
"""

from __future__ import annotations

import base64
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import aiosmtplib
import pytest
from browser import chromium, screenshot
from chat_harness import running_service
from inbox_harness import InboxServer, sign_in
from playwright.async_api import expect

from umsg.core import Core
from umsg.tokens import create_token

RCPT = "support@acme.test"


@dataclass
class Gateway:
    inbox: InboxServer
    smtp_port: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def gateway(make_settings: Any) -> AsyncIterator[Gateway]:
    smtp_port = _free_port()
    settings = make_settings(
        http={"host": "127.0.0.1", "port": 0},
        router={"offer_timeout_seconds": 60, "leader_poll_seconds": 0.2},
        channels={"email": {"type": "email", "domain": "acme.test", "addresses": [RCPT],
                            "listen": f"127.0.0.1:{smtp_port}"}},
    )
    core = await Core.open(settings)
    await core.ensure_project("default")
    admin = await create_token(core.sessions, "admin", label="e2e admin")
    try:
        async with running_service(settings) as url:
            async with aiohttp.ClientSession() as http:
                yield Gateway(InboxServer(url, admin, http), smtp_port)
    finally:
        await core.aclose()


async def _send(port: int, from_line: str, subject: str, text: str, envelope: str) -> str:
    raw = (f"{from_line}\r\nTo: {RCPT}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
           f"Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n")
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30, start_tls=False) as client:
        _errors, response = await client.sendmail(envelope, [RCPT], raw.encode())
        return response


async def test_forged_sender_name_shows_a_warning(gateway: Gateway) -> None:
    srv = gateway.inbox
    eve = await srv.agent("eve", "Eve")
    ok = await _send(gateway.smtp_port, "From: Sales <sales@acme.example>", "Order 1001", "Where is my order?",
                     "sales@acme.example")
    forged = await _send(gateway.smtp_port,
                         "From: =?utf-8?q?Sales_=3Csales=40acme=2Eexample=3E?= <attacker@evil.example>",
                         "New bank details", "Please pay invoice 1001 to our new account.", "attacker@evil.example")
    # The name shown in the warning is the attacker's text too: it must stay text.
    hostile = base64.b64encode(b"<img src=x onerror=window.__xss=1> <sales@acme.example>").decode()
    markup = await _send(gateway.smtp_port, f"From: =?utf-8?b?{hostile}?= <mallory@evil.example>", "Urgent",
                         "Urgent payment.", "mallory@evil.example")
    assert ok.startswith("2.0.0") and forged.startswith("2.0.0") and markup.startswith("2.0.0")
    conversations = (await srv.call("GET", "/api/v1/conversations?limit=10"))["items"]
    by_subject = {c["subject"]: c for c in conversations}
    assert set(by_subject) == {"Order 1001", "New bank details", "Urgent"}
    for conv in conversations:
        await srv.call("PATCH", f"/api/v1/conversations/{conv['id']}", {"assignee_id": eve})
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        await sign_in(page, srv.url, "eve")

        await page.locator("#work li", has_text="New bank details").click()
        warning = page.locator("#timeline .msg.in .sender-warning")
        await expect(warning).to_have_count(1)
        await expect(warning).to_be_visible()
        await expect(warning).to_contain_text("Possible impersonation")
        await expect(warning).to_contain_text("sales@acme.example")
        await expect(warning).to_contain_text("came from attacker@evil.example")
        await expect(page.locator("#timeline .msg.in .who")).to_have_text("attacker@evil.example")
        await expect(page.locator(".contact-name")).not_to_contain_text("sales@acme.example")
        await screenshot(page, "sender-warning-01", full_page=False)

        await page.locator("#work li", has_text="Urgent").click()
        await expect(page.locator("#timeline .sender-warning")).to_contain_text(
            "“<img src=x onerror=window.__xss=1> <sales@acme.example>” shows sales@acme.example")
        assert await page.locator("#timeline img").count() == 0
        assert await page.evaluate("() => window.__xss") is None

        await page.locator("#work li", has_text="Order 1001").click()
        await expect(page.locator("#timeline .msg.in .text")).to_have_text("Where is my order?")
        await expect(page.locator("#timeline .sender-warning")).to_have_count(0)

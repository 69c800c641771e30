"""Accounts in the agent's inbox, in real Chromium against a real `umsg serve`: a locked-out login is
told so on the sign-in form, and an inbox in use refreshes its session (a new token, the old one
refused) and stays signed in past the first token's expiry."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from browser import chromium, screenshot
from inbox_harness import InboxServer, serving_inbox, sign_in
from playwright.async_api import expect

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from serve_proc import db_env  # noqa: E402

IDLE = 6.0  # the session's idle lifetime: the page refreshes after half of it
PER_LOGIN = 3


@pytest.fixture
async def short_sessions(db_config: dict[str, object], tmp_path: Path) -> AsyncIterator[InboxServer]:
    env = {**db_env(db_config), "UMSG_ACCOUNTS__SESSION_IDLE_SECONDS": str(IDLE),
           "UMSG_ACCOUNTS__MAX_FAILURES_PER_LOGIN": str(PER_LOGIN), "UMSG_ACCOUNTS__LOCKOUT_SECONDS": "300"}
    async with serving_inbox(tmp_path / "data", env) as server:
        yield server


async def test_the_sign_in_form_says_when_a_login_is_locked_out(short_sessions: InboxServer) -> None:
    srv = short_sessions
    await srv.agent("mallory", "Mallory Target")
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        await page.goto(f"{srv.url}/inbox/")
        for _ in range(PER_LOGIN):
            await page.fill("#login", "mallory")
            await page.fill("#password", "wrong guess")
            await page.click("button[type=submit]")
            await expect(page.locator("#signin-error")).to_have_text("the login or the password is wrong")
            await page.evaluate("document.querySelector('#signin-error').textContent = ''")
        await page.fill("#password", "password123")  # the right one, while locked out
        await page.click("button[type=submit]")
        await expect(page.locator("#signin-error")).to_contain_text("too many failed sign-ins; try again in")
        await expect(page.locator("#app")).to_be_hidden()
        await screenshot(page, "accounts-01-locked-out")


async def test_an_inbox_in_use_refreshes_its_session_and_the_old_token_is_refused(
        short_sessions: InboxServer) -> None:
    srv = short_sessions
    await srv.agent("ann", "Ann Agent")
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        await sign_in(page, srv.url, "ann")
        first = await page.evaluate("sessionStorage.getItem('umsg.token')")
        await asyncio.sleep(IDLE / 2 + 0.5)
        # Any request of the page after half the lifetime refreshes first.
        await page.evaluate("window.umsgInbox.refreshWork()")
        second = await page.evaluate("sessionStorage.getItem('umsg.token')")
        assert second and second != first
        async with srv.http.get(f"{srv.url}/api/v1/session", headers={"Authorization": f"Bearer {first}"}) as resp:
            assert resp.status == 401  # rotated away
        # Past the first token's expiry the page still works with the refreshed one.
        await asyncio.sleep(IDLE / 2 + 0.5)
        await page.evaluate("window.umsgInbox.refreshWork()")
        await expect(page.locator("#app")).to_be_visible()
        await expect(page.locator("#signin")).to_be_hidden()
        third = await page.evaluate("sessionStorage.getItem('umsg.token')")
        async with srv.http.get(f"{srv.url}/api/v1/session", headers={"Authorization": f"Bearer {third}"}) as resp:
            assert resp.status == 200
        await screenshot(page, "accounts-02-refreshed")

"""The agent's inbox in real Chromium against a real `umsg serve`: sign in, go available,
take an offer, reply; lose the network and resume without missing or repeating anything;
play a voicemail and page through a fax; the supervisors' wall."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from browser import chromium, screenshot
from inbox_harness import SHARED, InboxServer, attachment, sign_in
from playwright.async_api import Page, expect


def _voicemail(tmp: Path) -> bytes:
    """A real spoken message: espeak-ng, then sox to the 8 kHz mono WAV a phone line gives."""
    raw, wav = tmp / "speech.wav", tmp / "vm8k.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), "Hello, this is Carol. Please call me back."], check=True)
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer", str(wav)],
                   check=True)
    return wav.read_bytes()


async def _timeline_texts(page: Page) -> list[str]:
    return [t.strip() for t in await page.locator("#timeline .msg .text").all_inner_texts()]


async def test_offer_accept_reply_resume_and_media(inbox_server: InboxServer, tmp_path: Path) -> None:
    srv = inbox_server
    ann = await srv.agent("ann", "Ann Agent")
    async with chromium() as browser:
        context = await browser.new_context(viewport={"width": 1280, "height": 860})
        page = await context.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: dialogs.append(d.message))
        await page.goto(f"{srv.url}/inbox/")
        await expect(page.locator("#signin")).to_be_visible()
        await screenshot(page, "inbox-01-sign-in")
        await sign_in(page, srv.url, "ann")
        await page.select_option("#state", "available")
        await expect(page.locator("body")).to_have_attribute("data-state", "available")

        first = await srv.message("My parcel never arrived.")
        offer = page.locator("#offer")
        await expect(offer).to_be_visible(timeout=20_000)
        await expect(page.locator("#offer-countdown")).to_contain_text("s left")
        await expect(page.locator("#offer-what")).to_contain_text("Carol")
        assert int(await page.locator("body").get_attribute("data-beeps") or 0) >= 1
        await screenshot(page, "inbox-02-offer")
        await page.keyboard.press("a")
        await expect(offer).to_be_hidden()
        await expect(page.locator("#work li")).to_have_count(1)
        await expect(page.locator(".contact-name")).to_have_text("Carol")
        await expect(page.locator("#timeline .msg.in .text")).to_have_text("My parcel never arrived.")
        await expect(page.locator("#work .waiting")).to_contain_text("waiting")

        await page.fill("#reply-text", "Sorry to hear that, Carol. Checking now.")
        await page.keyboard.press("Control+Enter")
        await expect(page.locator("#timeline .msg.out .text")).to_have_text("Sorry to hear that, Carol. Checking now.")
        stored = await srv.call("GET", f"/api/v1/conversations/{first['conversation_id']}/messages")
        out = [m for m in stored["items"] if m["direction"] == "out"]
        assert len(out) == 1 and out[0]["author_agent_id"] == ann
        assert out[0]["text"] == "Sorry to hear that, Carol. Checking now."
        await screenshot(page, "inbox-03-conversation")

        # The network drops: messages that arrive meanwhile show once it is back, each once.
        await context.set_offline(True)
        await expect(page.locator("#live")).to_have_attribute("data-status", "offline")
        await srv.message("Are you still there?")
        await srv.message("Hello??")
        await context.set_offline(False)
        await expect(page.locator("#live")).to_have_attribute("data-status", "live", timeout=20_000)
        await expect(page.locator("#timeline .msg.in")).to_have_count(3, timeout=20_000)
        texts = await _timeline_texts(page)
        assert texts.count("Are you still there?") == 1 and texts.count("Hello??") == 1
        assert texts.index("Are you still there?") < texts.index("Hello??")

        # A voicemail and a fax from the same customer join the same timeline live.
        wav = await asyncio.to_thread(_voicemail, tmp_path)
        tif = (SHARED / "corpus" / "fax" / "itu1.tif").read_bytes()
        await srv.message("Voicemail from +15550100", attachments=[attachment(wav, "audio/wav", "voicemail.wav")])
        await srv.message("Fax received", attachments=[attachment(tif, "image/tiff", "itu1.tif")])
        player = page.locator("audio.voicemail").first
        await expect(player).to_be_attached(timeout=20_000)
        await page.wait_for_function(
            "() => { const a = document.querySelector('audio.voicemail'); return a && a.duration > 0 }")
        duration = await player.evaluate("a => a.duration")
        assert 1.0 < duration < 30.0, duration
        await expect(page.locator(".media.audio .duration")).to_contain_text(" s")
        fax = page.locator("img.page").first
        await expect(page.locator(".media.pages .pageno").first).to_have_text("page 1 of 1", timeout=20_000)
        await page.wait_for_function(
            "() => { const i = document.querySelector('img.page'); return i && i.complete && i.naturalWidth > 0 }")
        assert await fax.evaluate("i => i.naturalWidth") > 500
        await fax.scroll_into_view_if_needed()
        await screenshot(page, "inbox-04-voicemail-and-fax", full_page=False)

        # Shortcuts help, then a private note, then wrap-up and close.
        await page.locator("body").click(position={"x": 5, "y": 300})
        await page.keyboard.press("?")
        await expect(page.locator("#help")).to_be_visible()
        await expect(page.locator("#help-list")).to_contain_text("Accept the offer")
        await screenshot(page, "inbox-05-shortcuts")
        await page.keyboard.press("Escape")
        await page.check("#note-mode")
        await page.fill("#reply-text", "Customer sounded upset.")
        await page.click("#send")
        await expect(page.locator("#timeline .msg.note .text")).to_have_text("Customer sounded upset.")
        await page.click("#close")
        await page.click("#dialog button[type=submit]")
        await expect(page.locator("#work li")).to_have_count(0, timeout=10_000)
        closed = await srv.call("GET", f"/api/v1/conversations/{first['conversation_id']}")
        assert closed["status"] == "closed"
        assert dialogs == []
        await context.close()


async def test_supervisor_wall(inbox_server: InboxServer) -> None:
    srv = inbox_server
    await srv.agent("sue", "Sue Supervisor", role="supervisor")
    bo = await srv.agent("bo", "Bo Agent")
    await srv.message("waiting one", sender="w1@example.com", name="W1")
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        await sign_in(page, srv.url, "sue")
        await expect(page.locator("#wall-link")).to_be_visible()
        await page.click("#wall-link")
        await expect(page.locator("#queues tbody tr[data-queue=default] .waiting")).to_have_text("1")
        row = page.locator(f"#agents tr[data-agent='{bo}']")
        await expect(row).to_contain_text("Bo Agent")
        await expect(row.locator(".state")).to_have_text("offline")
        await row.locator("select").select_option("available")
        await expect(row.locator(".state")).to_have_text("available", timeout=10_000)
        # Bo is offered the item by the router; the wall sees it live.
        await expect(page.locator("#queues tbody tr[data-queue=default] .waiting")).to_have_text("0", timeout=20_000)
        await screenshot(page, "wall-01")
        agent = await srv.call("GET", f"/api/v1/agents/{bo}")
        assert agent["state"] in ("available", "busy")

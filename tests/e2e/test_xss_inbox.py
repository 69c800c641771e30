"""Hostile HTML and script in every field the agent sees renders inert in the inbox.

Contact names, subjects, chat text, email HTML, file names: all carry payloads that
set `window.__xss` or open a dialog if they ever run. The page must show them as
text (or, for email HTML, inside a sandboxed frame without scripts)."""

from __future__ import annotations

from browser import chromium, screenshot
from inbox_harness import InboxServer, attachment, sign_in
from playwright.async_api import expect

RUN = "window.__xss=(window.__xss||0)+1;alert(1)"
PAYLOADS = [
    f"<script>{RUN}</script>",
    f'<img src=x onerror="{RUN}">',
    f'<a href="javascript:{RUN}">click me</a>',
    f"</textarea><script>{RUN}</script>",
    f'<svg onload="{RUN}"></svg>',
    f'"><iframe srcdoc="<script>parent.{RUN}</script>"></iframe>',
]


async def test_hostile_content_renders_inert(inbox_server: InboxServer) -> None:
    srv = inbox_server
    eve = await srv.agent("eve", "Eve <b>Agent</b>")
    name = f'Mallory <img src=x onerror="{RUN}">'
    html = "".join(PAYLOADS) + '<p style="color:red">styled</p><a href="javascript:alert(1)">link</a>'
    first = await srv.message("\n".join(PAYLOADS), sender="mallory@example.com", name=name, html=html,
                              subject=f"<svg onload=\"{RUN}\">",
                              attachments=[attachment(b"x", "application/pdf", f'"><svg onload="{RUN}">.pdf'),
                                           attachment(b"<svg xmlns='http://www.w3.org/2000/svg' "
                                                      b"onload='alert(1)'/>", "image/svg+xml", "evil.svg")])
    await srv.message(f"</textarea><script>{RUN}</script> chat", sender="visitor-1", kind="chat", name=name,
                      channel="webchat_api")
    await srv.call("PATCH", f"/api/v1/conversations/{first['conversation_id']}", {"assignee_id": eve})
    await srv.call("POST", "/api/v1/canned-responses",
                   {"project": "default", "title": f"<img src=x onerror=\"{RUN}\">", "body": "Hi {{contact.name}}"})
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        await sign_in(page, srv.url, "eve")
        await expect(page.locator("#me")).to_have_text("Eve <b>Agent</b> (agent)")
        await page.locator("#work li").first.click()
        await expect(page.locator(".contact-name")).to_have_text(name)
        await expect(page.locator("#timeline .msg.in .text").first).to_contain_text("<script>")
        await expect(page.locator("button.file", has_text='"><svg onload=')).to_have_count(1)
        await expect(page.locator("button.file", has_text="evil.svg")).to_have_count(1)
        await page.locator("#timeline button.link").first.click()
        frame = page.locator("iframe.html")
        await expect(frame).to_have_attribute("sandbox", "")
        await page.select_option("#canned", index=1)
        await expect(page.locator("#reply-text")).to_have_value(f"Hi {name}")
        await screenshot(page, "xss-01-inert")
        assert await page.evaluate("() => window.__xss") is None
        for f in page.frames:
            assert await f.evaluate("() => window.__xss === undefined"), f.url
        # Nothing injected became an element of the page itself.
        assert await page.locator("#timeline script, #timeline img[onerror], #timeline svg, #work img").count() == 0
        assert dialogs == []

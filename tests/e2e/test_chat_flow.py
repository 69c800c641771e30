"""A customer and an agent chat, each in their own real Chromium context, through a real service.

The customer uses the widget on a shop page on another origin; the agent signs in to the
inbox, goes available, is offered the chat, accepts and answers. Both see each other typing;
the customer reloads and has the history; then both lose the network, both write meanwhile,
and once back every line shows once on both sides and is stored once. Screenshots of each
step go to UMSG_ARTIFACTS.
"""

from __future__ import annotations

import re

from browser import screenshot
from chat_harness import WAIT_MS, ChatSite, agent_reply, open_widget, say, widget_lines
from inbox_harness import sign_in
from playwright.async_api import Page, expect

FIRST = "Hi, my order 1234 has not arrived."
REPLY = "Sorry about that, Robin. Let me check."
SECOND = "Thanks! It was due on Monday."
CUSTOMER_OFFLINE = ("Are you there? (offline 1)", "Still waiting (offline 2)")
AGENT_OFFLINE = "It left our warehouse this morning."


async def timeline_texts(page: Page) -> list[str]:
    return [t.strip() for t in await page.locator("#timeline .msg:not(.pending) .text").all_inner_texts()]


async def test_customer_and_agent_chat_reload_and_survive_a_network_drop(chat_site: ChatSite) -> None:
    site = chat_site
    await site.srv.agent("ann", "Ann Agent")
    agent_ctx, agent = await site.agent_page()
    await sign_in(agent, site.srv.url, "ann")
    await agent.select_option("#state", "available")
    await expect(agent.locator("body")).to_have_attribute("data-state", "available")

    # The customer starts a chat; the agent is offered it, accepts, and reads the line.
    cust_ctx, cust = await site.customer()
    await open_widget(cust, name="Robin")
    await say(cust, FIRST)
    await expect(widget_lines(cust, "mine").first).to_have_attribute("data-id", re.compile(r"^\d+$"), timeout=WAIT_MS)
    offer = agent.locator("#offer")
    await expect(offer).to_be_visible(timeout=WAIT_MS)
    await expect(agent.locator("#offer-what")).to_contain_text("Robin", timeout=WAIT_MS)
    await screenshot(agent, "chat-01-agent-offered")
    await agent.keyboard.press("a")
    await expect(offer).to_be_hidden()
    await expect(agent.locator("#timeline .msg.in .text")).to_have_text(FIRST, timeout=WAIT_MS)
    await expect(cust.locator("#umsg-chat .log li.notice", has_text="joined the chat")).to_have_count(1,
                                                                                                    timeout=WAIT_MS)

    # The agent types: the customer sees "Agent is typing…" until the reply arrives.
    await agent.locator("#reply-text").press_sequentially("Sorry", delay=20)
    typing = cust.locator("#umsg-chat .typing")
    await expect(typing).to_be_visible(timeout=WAIT_MS)
    await screenshot(cust, "chat-02-customer-sees-agent-typing")
    await agent_reply(agent, REPLY)
    theirs = widget_lines(cust, "theirs")
    await expect(theirs).to_have_count(1, timeout=WAIT_MS)
    await expect(theirs.first).to_contain_text(REPLY)
    await expect(theirs.first).to_contain_text("Ann Agent")
    await expect(typing).to_be_hidden()
    await screenshot(cust, "chat-03-customer-sees-reply")

    # The customer types: the agent sees it, then the line.
    await cust.get_by_label("Message", exact=True).press_sequentially("Thanks", delay=20)
    await expect(agent.locator("#customer-typing")).to_be_visible(timeout=WAIT_MS)
    await screenshot(agent, "chat-04-agent-sees-customer-typing")
    await say(cust, SECOND)
    await expect(agent.locator("#timeline .msg.in .text")).to_have_count(2, timeout=WAIT_MS)
    await expect(agent.locator("#customer-typing")).to_be_hidden()

    # A reload keeps the conversation: the history comes back in order.
    await cust.reload()
    await expect(cust.get_by_role("dialog")).to_be_visible(timeout=WAIT_MS)
    await expect(widget_lines(cust)).to_have_count(3, timeout=WAIT_MS)
    await expect(widget_lines(cust).locator(".text")).to_have_text([FIRST, REPLY, SECOND])
    await screenshot(cust, "chat-05-customer-after-reload")

    # Both lose the network; both write meanwhile.
    await cust_ctx.set_offline(True)
    await agent_ctx.set_offline(True)
    await expect(cust.locator("#umsg-chat .status")).to_have_text("Reconnecting\u2026", timeout=WAIT_MS)
    await expect(agent.locator("#live")).to_have_attribute("data-status", "offline", timeout=WAIT_MS)
    for line in CUSTOMER_OFFLINE:
        await say(cust, line)
    await expect(cust.locator("#umsg-chat .log li.pending")).to_have_count(2)
    await agent_reply(agent, AGENT_OFFLINE)
    await expect(agent.locator("#timeline .msg.out.pending .text")).to_have_text(AGENT_OFFLINE)
    await screenshot(cust, "chat-06-customer-offline")
    await screenshot(agent, "chat-07-agent-offline")

    # Back online: every line once on both sides, and once in the store.
    await cust_ctx.set_offline(False)
    await agent_ctx.set_offline(False)
    await expect(cust.locator("#umsg-chat .log li.pending")).to_have_count(0, timeout=WAIT_MS)
    await expect(agent.locator("#live")).to_have_attribute("data-status", "live", timeout=WAIT_MS)
    await expect(agent.locator("#timeline .msg.pending")).to_have_count(0, timeout=WAIT_MS)
    await expect(agent.locator("#timeline .msg.in")).to_have_count(4, timeout=WAIT_MS)
    await expect(widget_lines(cust, "theirs")).to_have_count(2, timeout=WAIT_MS)
    await expect(widget_lines(cust, "theirs").nth(1)).to_contain_text(AGENT_OFFLINE)
    texts = await timeline_texts(agent)
    for line in (FIRST, SECOND, *CUSTOMER_OFFLINE, REPLY, AGENT_OFFLINE):
        assert texts.count(line) == 1, (line, texts)
        await expect(cust.locator("#umsg-chat .log li.msg", has_text=line)).to_have_count(1)
    assert texts.index(CUSTOMER_OFFLINE[0]) < texts.index(CUSTOMER_OFFLINE[1])
    for line in (FIRST, SECOND, *CUSTOMER_OFFLINE):
        assert await site.stored(line, "in") == 1, line
    for line in (REPLY, AGENT_OFFLINE):
        assert await site.stored(line, "out") == 1, line
    await screenshot(cust, "chat-08-customer-back-online")
    await screenshot(agent, "chat-09-agent-back-online")

    # And a last reload shows the whole conversation once, nothing left to resend.
    await cust.reload()
    await expect(widget_lines(cust)).to_have_count(6, timeout=WAIT_MS)
    assert await cust.evaluate("JSON.parse(localStorage.getItem(Object.keys(localStorage)[0])).pending.length") == 0
    await cust_ctx.close()
    await agent_ctx.close()

"""Outbound through a real Postfix relay, answers coming back through it, bounces and auto-replies.

Postfix delivers `customer.test` into Maildirs the test reads, relays
`acme.test` (our domain) to our own SMTP listener, and relays `bouncing.test`
to a remote server that refuses the recipient after Postfix accepted the
mail, so Postfix returns a real DSN to the envelope sender (us).
"""

from __future__ import annotations

import asyncio
import os
import smtplib
from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP
from peers.postfix import Postfix, available
from sqlalchemy import select

from channels.email import EmailChannel, EmailSettings
from channels.email.autoreply import may_answer_automatically
from channels.email.parse import to_inbound
from storage.models import Identity, Message
from umsg.instances import ChannelInstances, Instance
from umsg.model import IdentityKind
from umsg.outbound.outbox import Dispatcher, Outbox

# Locally a missing package skips; in CI (CI set) the test runs and fails loudly instead.
pytestmark = pytest.mark.skipif(not available() and not os.environ.get("CI"),
                                reason="needs postfix (apt-get install postfix)")
DOMAIN = "acme.test"
SUPPORT = "support@acme.test"


class Rig:
    def __init__(self, core: Any, channel: EmailChannel, postfix: Postfix) -> None:
        self.core, self.channel, self.postfix = core, channel, postfix
        self.pid = 0
        # The core knows the configured instance "mail" answers on email addresses.
        self.outbox = Outbox(core.sessions, core.events,
                             channels=ChannelInstances([Instance("mail", "email", IdentityKind.EMAIL)]))
        self.dispatcher = Dispatcher(core.sessions, core.events, {"mail": channel}, "test-dispatcher",
                                     send_timeout=60, lease_seconds=120)

    def submit(self, msg: EmailMessage) -> None:
        """The customer's mail client hands a message to Postfix (blocking: run in a thread)."""
        with smtplib.SMTP("127.0.0.1", self.postfix.port, timeout=30) as s:
            s.send_message(msg)

    async def message(self, **where: Any) -> Message | None:
        async with self.core.readers() as s:
            q = select(Message)
            for k, v in where.items():
                q = q.where(getattr(Message, k) == v)
            return (await s.scalars(q.order_by(Message.id.desc()).limit(1))).first()

    async def wait_message(self, **where: Any) -> Message:
        async def check() -> Message | None:
            return await self.message(**where)
        return await wait_async(check, f"a message with {where}")

    async def reply(self, conversation_id: int, text: str, **kw: Any) -> Message:
        msg = await self.outbox.reply(project_id=self.pid, conversation_id=conversation_id, text=text, **kw)
        assert await self.dispatcher.run_once() == 1
        async with self.core.readers() as s:
            stored = await s.get(Message, msg.id)
        assert stored is not None
        return stored


async def wait_async(check: Any, what: str, seconds: float = 30.0) -> Any:
    async def loop() -> Any:
        while True:
            value = await check()
            if value:
                return value
            await asyncio.sleep(0.05)  # polling the store for a condition, bounded by the timeout
    try:
        return await asyncio.wait_for(loop(), seconds)
    except TimeoutError:
        raise TimeoutError(f"timed out waiting for {what}") from None


class _Refusing:
    """The customer's own mail server for bouncing.test: the mailbox is gone."""

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        return f"550 5.1.1 <{address}>: mailbox does not exist"


@pytest.fixture
async def rig(core: Any) -> AsyncIterator[Rig]:
    loop = asyncio.get_running_loop()
    remote = await loop.create_server(lambda: SMTP(_Refusing(), hostname="mx.bouncing.test", loop=loop),
                                      "127.0.0.1", 0)
    postfix = Postfix()
    # Our listener binds first (port 0, no race for a port); Postfix then relays our domain to it.
    settings = EmailSettings(domain=DOMAIN, addresses=[SUPPORT], listen="127.0.0.1:0",
                             relay=f"smtp://127.0.0.1:{postfix.port}")
    channel = EmailChannel("mail", settings)
    channel.bind(core.channel_services())
    await channel.start(core.ingest.ingest)
    postfix.routes = {DOMAIN: channel.port or 0, "bouncing.test": remote.sockets[0].getsockname()[1]}
    try:
        await asyncio.to_thread(postfix.start)
        r = Rig(core, channel, postfix)
        r.pid = await core.ensure_project("default")
        yield r
    finally:
        await channel.aclose()
        await asyncio.to_thread(postfix.stop)
        remote.close()
        await remote.wait_closed()


def customer_mail(sender: str, subject: str, body: str, msg_id: str, **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = SUPPORT
    msg["Subject"] = subject
    msg["Message-ID"] = msg_id
    for k, v in headers.items():
        msg[k.replace("_", "-")] = v
    msg.set_content(body)
    return msg


async def test_reply_threads_and_the_answer_lands_in_the_same_conversation(rig: Rig) -> None:
    first = customer_mail("Alice <alice@customer.test>", "Broken lamp", "It arrived broken.",
                          "<q1@customer.test>")
    await asyncio.to_thread(rig.submit, first)  # customer -> Postfix -> our listener
    question = await rig.wait_message(from_addr="alice@customer.test")
    sent = await rig.reply(question.conversation_id, "Sorry! A new one is on its way.",
                           html="<p>Sorry! A new one is <b>on its way</b>.</p>")
    assert sent.status == "sent", sent.status_detail
    assert sent.provider_id and sent.provider_id.endswith(f"@{DOMAIN}>")

    got = (await asyncio.to_thread(rig.postfix.wait_for_mail, "alice"))[0]
    assert got["Message-ID"] == sent.provider_id
    assert got["In-Reply-To"] == "<q1@customer.test>"
    assert got["References"] == "<q1@customer.test>"
    assert got["From"] == SUPPORT and got["To"] == "alice@customer.test"
    assert got["Subject"].startswith("Re: Broken lamp [#")
    assert got["Reply-To"].startswith("reply+") and got["Reply-To"].endswith(f"@{DOMAIN}")
    assert got["Auto-Submitted"] is None
    assert got.get_content_type() == "multipart/alternative"

    # The customer answers from her mail client: reply-to address, our Message-ID in In-Reply-To.
    answer = customer_mail("Alice <alice@customer.test>", f"Re: {got['Subject']}", "Thanks, got it!",
                           "<a1@customer.test>", In_Reply_To=got["Message-ID"],
                           References=f"{got['References']} {got['Message-ID']}")
    answer.replace_header("To", got["Reply-To"])
    await asyncio.to_thread(rig.submit, answer)
    back = await rig.wait_message(provider_id="<a1@customer.test>")
    assert back.conversation_id == question.conversation_id
    assert back.direction == "in" and back.text and "Thanks" in back.text


async def test_transient_and_permanent_relay_refusals(rig: Rig) -> None:
    for user in ("busy", "nobody"):
        await asyncio.to_thread(rig.submit, customer_mail(f"{user}@customer.test", "hi", "hello",
                                                          f"<{user}-q@customer.test>"))
    busy = await rig.wait_message(from_addr="busy@customer.test")
    nobody = await rig.wait_message(from_addr="nobody@customer.test")

    retry = await rig.reply(busy.conversation_id, "answer")
    assert retry.status == "queued"  # the outbox will try again with backoff
    assert retry.status_detail and "450 4.2.1" in retry.status_detail
    assert "mailbox busy" in retry.status_detail

    failed = await rig.reply(nobody.conversation_id, "answer")
    assert failed.status == "failed"  # the server's words, for the agent
    assert failed.status_detail and failed.status_detail.startswith("550 5.1.1")
    assert "User unknown" in failed.status_detail


async def test_a_bounce_marks_the_message_failed_and_the_address_failing(rig: Rig) -> None:
    # The customer wrote from a domain whose mail now bounces (Postfix accepts, then returns a DSN).
    hello = customer_mail("gone@bouncing.test", "question", "hello", "<g1@bouncing.test>")
    await rig.core.ingest.ingest(to_inbound(hello.as_bytes(), channel="mail", own_domain=DOMAIN))
    question = await rig.wait_message(from_addr="gone@bouncing.test")
    sent = await rig.reply(question.conversation_id, "our answer")
    assert sent.status == "sent", sent.status_detail

    dsn = await rig.wait_message(from_addr="mailer-daemon@relay.test")
    assert dsn.flags["delivery_report"]["outbound_message_id"] == sent.id
    assert dsn.flags["auto_submitted"] is True

    async def failed() -> Message | None:
        m = await rig.message(id=sent.id)
        return m if m is not None and m.status == "failed" else None
    bounced = await wait_async(failed, "the bounced message to be marked failed")
    assert bounced.status_detail and "5.1.1" in bounced.status_detail
    assert "mailbox does not exist" in bounced.status_detail
    async with rig.core.readers() as s:
        identity = await s.scalar(select(Identity).where(Identity.value == "gone@bouncing.test"))
    assert identity is not None and identity.failing


async def test_an_out_of_office_answer_to_our_auto_reply_is_not_answered_again(rig: Rig) -> None:
    await asyncio.to_thread(rig.submit, customer_mail("bob@customer.test", "order?", "where is it",
                                                      "<b1@customer.test>"))
    question = await rig.wait_message(from_addr="bob@customer.test")
    auto = await rig.reply(question.conversation_id, "We got your mail and answer within a day.",
                           automatic=True)
    assert auto.status == "sent"
    got = (await asyncio.to_thread(rig.postfix.wait_for_mail, "bob"))[0]
    assert got["Auto-Submitted"] == "auto-replied"

    ooo = customer_mail("bob@customer.test", f"Out of office: {got['Subject']}", "I am away.",
                        "<b2@customer.test>", In_Reply_To=got["Message-ID"], Auto_Submitted="auto-replied")
    await asyncio.to_thread(rig.submit, ooo)
    stored = await rig.wait_message(provider_id="<b2@customer.test>")
    assert stored.conversation_id == question.conversation_id
    assert stored.flags["auto_submitted"] is True
    assert not may_answer_automatically(stored.flags)
    async with rig.core.readers() as s:
        first = await s.get(Message, question.id)
    assert first is not None and may_answer_automatically(first.flags)

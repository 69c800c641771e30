"""Two email instances in one running service, each with its own domain and its own Postfix relay.

`[channels.support]` (support.alpha.test) and `[channels.sales]` (sales.alpha.test) are both
`type = "email"`. Two throw-away Postfix instances are the relays: each delivers
`customer.test` into its own Maildirs and relays its instance's domain to that instance's
SMTP listener. Alice writes to both; the agent's reply to each conversation must leave through
that instance's relay with that instance's domain in Message-ID and Reply-To, and Alice's
answer to each reply must thread back into the conversation it answers.
"""

from __future__ import annotations

import asyncio
import os
import smtplib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import aiohttp
import pytest
from peers.common import free_port
from peers.postfix import Postfix, available
from sqlalchemy import select

from storage.db import create_engine, read_session_factory, session_factory
from storage.models import Message
from umsg.app.serve import run_service
from umsg.config import Settings
from umsg.tokens import create_token

pytestmark = pytest.mark.skipif(not available() and not os.environ.get("CI"),
                                reason="needs postfix (apt-get install postfix)")

DOMAINS = {"support": "support.alpha.test", "sales": "sales.alpha.test"}
ADDRESS = {"support": "help@support.alpha.test", "sales": "orders@sales.alpha.test"}


@dataclass
class Gateway:
    url: str
    token: str
    relays: dict[str, Postfix]
    readers: Any

    async def wait_message(self, seconds: float = 45.0, **where: Any) -> Message:
        async def find() -> Message:
            while True:
                async with self.readers() as s:
                    q = select(Message)
                    for k, v in where.items():
                        q = q.where(getattr(Message, k) == v)
                    found = (await s.scalars(q.order_by(Message.id.desc()).limit(1))).first()
                if found is not None and found.status not in ("queued", "sending"):
                    return found
                await asyncio.sleep(0.05)  # polling the store for a condition, bounded by the timeout
        try:
            return await asyncio.wait_for(find(), seconds)
        except TimeoutError:
            raise TimeoutError(f"timed out waiting for a message with {where}") from None

    async def reply(self, conversation_id: int, text: str) -> int:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"}) as http, \
                http.post(f"{self.url}/api/v1/conversations/{conversation_id}/reply", json={"text": text}) as resp:
            assert resp.status == 202, await resp.text()
            return int((await resp.json())["id"])


def submit(relay: Postfix, msg: EmailMessage) -> None:
    """The customer's mail client hands a message to the relay that serves the domain (blocking)."""
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as s:
        s.send_message(msg)


def customer_mail(to: str, subject: str, body: str, msg_id: str, **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Alice <alice@customer.test>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = msg_id
    for k, v in headers.items():
        msg[k.replace("_", "-")] = v
    msg.set_content(body)
    return msg


@pytest.fixture
async def gateway(make_settings: Callable[..., Settings]) -> AsyncIterator[Gateway]:
    relays = {name: Postfix() for name in DOMAINS}
    listen = {name: free_port() for name in DOMAINS}
    channels = {name: {"type": "email", "domain": DOMAINS[name], "addresses": [ADDRESS[name]],
                       "listen": f"127.0.0.1:{listen[name]}", "relay": f"smtp://127.0.0.1:{relays[name].port}"}
                for name in DOMAINS}
    settings = make_settings(channels=channels, http={"port": 0}, log_level="WARNING")
    for name, relay in relays.items():
        relay.routes = {DOMAINS[name]: listen[name]}  # each relay hands its domain to its own instance
    started: list[Postfix] = []
    engine = create_engine(settings.database_url, schema=settings.database.schema_name)
    stop = asyncio.Event()
    urls: asyncio.Queue[str] = asyncio.Queue()
    task: asyncio.Task[None] | None = None
    try:
        for relay in relays.values():
            await asyncio.to_thread(relay.start)
            started.append(relay)
        task = asyncio.create_task(run_service(settings, ready=urls.put_nowait, stop=stop))
        url = await asyncio.wait_for(urls.get(), 60)  # migrated, channels listening
        token = await create_token(session_factory(engine), "admin", label="two-instances test")
        yield Gateway(url, token, relays, read_session_factory(engine))
    finally:
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, 60)
        await engine.dispose()
        for relay in started:
            await asyncio.to_thread(relay.stop)


async def test_each_instance_answers_through_its_own_relay_and_domain(gateway: Gateway) -> None:
    # The inbox learns which instances a reply can leave on, and what each sends to.
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {gateway.token}"}) as http, \
            http.get(f"{gateway.url}/api/v1/session") as resp:
        assert resp.status == 200
        assert (await resp.json())["channels"] == [
            {"name": "sales", "type": "email", "identity_kind": "email"},
            {"name": "support", "type": "email", "identity_kind": "email"}]

    # Alice writes to both: one contact, two conversations, each on the instance it arrived at.
    for name, subject in (("support", "Broken lamp"), ("sales", "Bulk order")):
        await asyncio.to_thread(submit, gateway.relays[name], customer_mail(
            ADDRESS[name], subject, f"Hello {name}", f"<q-{name}@customer.test>"))
    asked = {name: await gateway.wait_message(provider_id=f"<q-{name}@customer.test>") for name in DOMAINS}
    assert {n: m.channel for n, m in asked.items()} == {"support": "support", "sales": "sales"}
    assert asked["support"].contact_id == asked["sales"].contact_id
    assert asked["support"].conversation_id != asked["sales"].conversation_id

    replies = {}
    for name in DOMAINS:
        reply_id = await gateway.reply(asked[name].conversation_id, f"Answer from {name}")
        replies[name] = await gateway.wait_message(id=reply_id)
    for name, domain in DOMAINS.items():
        sent = replies[name]
        assert (sent.status, sent.channel) == ("sent", name), sent.status_detail
        assert sent.from_addr == ADDRESS[name] and sent.provider_id and sent.provider_id.endswith(f"@{domain}>")

    # Each relay carried exactly its own instance's reply to Alice.
    got = {name: (await asyncio.to_thread(gateway.relays[name].wait_for_mail, "alice"))[0] for name in DOMAINS}
    for name, domain in DOMAINS.items():
        mail = got[name]
        assert len(gateway.relays[name].messages("alice")) == 1
        assert mail["Message-ID"] == replies[name].provider_id
        assert mail["Message-ID"].endswith(f"@{domain}>")
        assert mail["From"] == ADDRESS[name]
        assert mail["Reply-To"].startswith("reply+") and mail["Reply-To"].endswith(f"@{domain}")
        assert mail["In-Reply-To"] == f"<q-{name}@customer.test>"
        assert f"Answer from {name}" in mail.get_content()

    # Alice answers each reply from her mail client: to its Reply-To, through the domain's relay.
    for name in DOMAINS:
        mail = got[name]
        answer = customer_mail(mail["Reply-To"], f"Re: {mail['Subject']}", f"Thanks, {name}!",
                               f"<a-{name}@customer.test>", In_Reply_To=mail["Message-ID"],
                               References=f"{mail['References']} {mail['Message-ID']}")
        await asyncio.to_thread(submit, gateway.relays[name], answer)
    for name in DOMAINS:
        back = await gateway.wait_message(provider_id=f"<a-{name}@customer.test>")
        assert back.channel == name and back.direction == "in"
        assert back.conversation_id == asked[name].conversation_id

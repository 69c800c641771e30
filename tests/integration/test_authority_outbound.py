"""The outbound authority on a running gateway, attacked by a tenant: two projects, real peers.

One `umsg serve` (run_service) carries projects alpha and beta, each with an email instance
that relays into its own SMTP sink (aiosmtpd on loopback), a web chat each, and alpha a
Twilio-compatible SMS instance whose REST peer is a local aiohttp server. Customers write in
over real SMTP and a real chat websocket; agents and supervisors act over HTTP.

Shown: a beta agent's reply through alpha's relay, alpha's Twilio number or alpha's chat is a
403 and nothing is queued or reaches a sink; a reply to an address that is not the contact's
is a 403 and nothing is sent; a message on beta's instance addressed to alpha's address is
answered from beta's own; alpha's supervisor cannot touch beta's agent (queues, heartbeat, state: 404) and beta's
memberships and leases stay as they were.
"""

from __future__ import annotations

import asyncio
import email
import smtplib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiosmtpd.controller import Controller
from peers.common import free_port
from sqlalchemy import func, select

from storage.db import create_engine, read_session_factory, session_factory
from storage.models import Agent, AgentProject, AgentQueue, Message, Project, QueueItem
from storage.types import utcnow
from umsg.app.serve import run_service
from umsg.config import Settings
from umsg.tokens import create_token

SECRET = "authority-test-secret-0123456789"
ADDRESS = {"alpha": "help@support.alpha.test", "beta": "help@support.beta.test"}
ALPHA_NUMBER = "+15005550006"
SETTLE_SECONDS = 45.0


class Sink:
    """An SMTP relay that keeps what it is handed (aiosmtpd on a loopback port)."""

    def __init__(self) -> None:
        self.mails: list[tuple[str, list[str], bytes]] = []
        self.controller = Controller(self, hostname="127.0.0.1", port=free_port())

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append((envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 OK"


class FakeTwilio:
    """The provider's REST Messages endpoint: records every send it is asked for."""

    def __init__(self) -> None:
        self.posts: list[dict[str, str]] = []

    async def messages(self, request: web.Request) -> web.Response:
        self.posts.append({k: str(v) for k, v in (await request.post()).items()})
        return web.json_response({"sid": f"SM{len(self.posts):032d}", "status": "queued"}, status=201)


@dataclass
class Gateway:
    url: str
    sinks: dict[str, Sink]
    twilio: FakeTwilio
    sessions: Any
    readers: Any
    listen: dict[str, int]
    tokens: dict[str, str] = field(default_factory=dict)
    agents: dict[str, int] = field(default_factory=dict)

    async def call(self, method: str, path: str, who: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        async with aiohttp.ClientSession(headers=headers) as http, \
                http.request(method, f"{self.url}{path}", json=body) as resp:
            return resp.status, await resp.json(content_type=None)

    async def wait(self, check: Callable[[], Any], what: str, seconds: float = SETTLE_SECONDS) -> Any:
        async def loop() -> Any:
            while True:
                found = await check()
                if found:
                    return found
                await asyncio.sleep(0.05)  # polling for a condition, bounded by the timeout
        try:
            return await asyncio.wait_for(loop(), seconds)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None

    async def inbound(self, **where: Any) -> Message:
        async def find() -> Message | None:
            async with self.readers() as s:
                q = select(Message).where(Message.direction == "in")
                for k, v in where.items():
                    q = q.where(getattr(Message, k) == v)
                found: Message | None = (await s.scalars(q.order_by(Message.id.desc()).limit(1))).first()
                return found
        found: Message = await self.wait(find, f"an inbound message with {where}")
        return found

    async def outgoing(self) -> list[Message]:
        async with self.readers() as s:
            return list((await s.scalars(select(Message).where(Message.direction == "out")
                                          .order_by(Message.id))).all())

    async def settled(self, message_id: int) -> Message:
        async def find() -> Message | None:
            async with self.readers() as s:
                m = await s.get(Message, message_id)
            return m if m is not None and m.status not in ("queued", "sending") else None
        found: Message = await self.wait(find, f"message {message_id} to be delivered")
        return found


def mail_to(relay_port: int, rcpt: str, *, sender: str, subject: str, msg_id: str) -> None:
    """A customer's mail handed to an instance's SMTP listener (blocking; run in a thread)."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = rcpt
    msg["Subject"] = subject
    msg["Message-ID"] = msg_id
    msg.set_content("Hello, please help.")
    with smtplib.SMTP("127.0.0.1", relay_port, timeout=30) as s:
        s.send_message(msg, from_addr=sender, to_addrs=[rcpt])


async def _agent(sessions: Any, login: str, project: str) -> int:
    async with sessions() as s:
        pid = await s.scalar(select(Project.id).where(Project.slug == project))
        if pid is None:
            p = Project(slug=project, name=project)
            s.add(p)
            await s.flush()
            pid = p.id
        agent = Agent(login=login, display_name=login.title(), state="offline")
        s.add(agent)
        await s.flush()
        s.add(AgentProject(agent_id=agent.id, project_id=pid))
        await s.commit()
        return int(agent.id)


@pytest.fixture
async def gateway(make_settings: Callable[..., Settings]) -> AsyncIterator[Gateway]:
    sinks = {"alpha": Sink(), "beta": Sink()}
    twilio = FakeTwilio()
    rest = web.Application()
    rest.router.add_post("/2010-04-01/Accounts/AC123/Messages.json", twilio.messages)
    rest_server = TestServer(rest, host="127.0.0.1")
    await rest_server.start_server()
    listen = {p: free_port() for p in sinks}
    channels: dict[str, Any] = {
        f"{p}_mail": {"type": "email", "project": p, "domain": f"support.{p}.test", "addresses": [ADDRESS[p]],
                      "listen": f"127.0.0.1:{listen[p]}", "parse_workers": 0,
                      "relay": f"smtp://127.0.0.1:{sinks[p].controller.port}"}
        for p in sinks}
    channels.update({f"{p}_chat": {"type": "webchat", "project": p, "secret": SECRET, "prechat_form": False,
                                   "offline_when_no_agent": False, "email_channel": f"{p}_mail"}
                     for p in sinks})
    channels["alpha_sms"] = {"type": "twilio", "project": "alpha", "account_sid": "AC123", "auth_token": "tw-token",
                             "from_number": ALPHA_NUMBER, "base_url": str(rest_server.make_url("")).rstrip("/"),
                             "status_callback": False}
    settings = make_settings(channels=channels, http={"port": 0}, log_level="WARNING")
    engine = create_engine(settings.database_url, schema=settings.database.schema_name)
    stop = asyncio.Event()
    urls: asyncio.Queue[str] = asyncio.Queue()
    task: asyncio.Task[None] | None = None
    for sink in sinks.values():
        sink.controller.start()
    try:
        task = asyncio.create_task(run_service(settings, ready=urls.put_nowait, stop=stop))
        url = await asyncio.wait_for(urls.get(), 60)  # migrated, channels listening
        gw = Gateway(url, sinks, twilio, session_factory(engine), read_session_factory(engine), listen)
        for login, project in (("ann", "alpha"), ("ben", "beta"), ("alma", "alpha"), ("bert", "beta")):
            gw.agents[login] = await _agent(gw.sessions, login, project)
        gw.tokens = {
            "ben": await create_token(gw.sessions, "agent", agent_id=gw.agents["ben"]),
            "bert_supervisor": await create_token(gw.sessions, "supervisor", agent_id=gw.agents["bert"]),
            "alma_supervisor": await create_token(gw.sessions, "supervisor", agent_id=gw.agents["alma"]),
        }
        yield gw
    finally:
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, 60)
        await engine.dispose()
        for sink in sinks.values():
            sink.controller.stop()
        await rest_server.close()


async def _beta_mail_conversation(gw: Gateway, sender: str = "carol@customer.test") -> Message:
    port = gw.listen["beta"]
    msg_id = f"<{sender.split('@')[0]}-{len(gw.sinks['beta'].mails)}@customer.test>"
    await asyncio.to_thread(mail_to, port, ADDRESS["beta"], sender=sender, subject="Where is my parcel?",
                            msg_id=msg_id)
    return await gw.inbound(provider_id=msg_id)


async def test_cross_tenant_and_any_address_replies_are_refused_and_nothing_is_sent(gateway: Gateway) -> None:
    gw = gateway
    asked = await _beta_mail_conversation(gw)
    path = f"/api/v1/conversations/{asked.conversation_id}/reply"

    # Beta's agent tries alpha's relay, alpha's Twilio number, alpha's chat: all refused.
    for channel in ("alpha_mail", "alpha_sms", "alpha_chat"):
        status, body = await gw.call("POST", path, "ben", {"text": "from alpha!", "channel": channel})
        assert status == 403, (channel, body)
        assert body["error"]["code"] == "forbidden" and "does not serve project 'beta'" in body["error"]["message"]
    # Its own relay, to an address that is not the customer's (or a number the contact lacks): refused too.
    for to in ("victim@elsewhere.test", "CAROL@customer.test.evil.test"):
        status, body = await gw.call("POST", path, "ben", {"text": "spam", "to": to})
        assert status == 403 and "not an address of the conversation's contact" in body["error"]["message"], body
    status, body = await gw.call("POST", path, "bert_supervisor", {"text": "spam", "to": "victim@elsewhere.test"})
    assert status == 403, body  # the customer wrote: not a new outbound conversation, whoever asks
    assert await gw.outgoing() == []  # nothing queued

    # The reply the agent may send leaves through beta's relay to the customer only.
    status, body = await gw.call("POST", path, "ben", {"text": "It is on its way.", "to": "Carol@Customer.test"})
    assert status == 202, body
    sent = await gw.settled(body["id"])
    assert (sent.status, sent.channel) == ("sent", "beta_mail"), sent.status_detail
    assert [m.id for m in await gw.outgoing()] == [sent.id]
    assert [(f, r) for f, r, _ in gw.sinks["beta"].mails] == [(ADDRESS["beta"], ["Carol@Customer.test"])]
    assert gw.sinks["alpha"].mails == [] and gw.twilio.posts == []


async def test_a_forged_recipient_does_not_lend_beta_alphas_address(gateway: Gateway) -> None:
    gw = gateway
    # Beta's supervisor submits a "customer" message on beta's instance, addressed to alpha's
    # address: the reply must not leave beta's relay as alpha's.
    status, body = await gw.call("POST", "/api/v1/messages", "bert_supervisor", {
        "channel": "beta_mail", "project": "beta", "from": {"kind": "email", "value": "dora@customer.test"},
        "to": [ADDRESS["alpha"]], "text": "hi", "dedupe_key": "forged-1"})
    assert status == 201, body
    status, body = await gw.call("POST", f"/api/v1/conversations/{body['conversation_id']}/reply", "ben",
                                 {"text": "Answer"})
    assert status == 202, body
    sent = await gw.settled(body["id"])
    assert (sent.status, sent.from_addr) == ("sent", ""), sent.status_detail  # the adapter's own address
    [(mail_from, rcpts, raw)] = gw.sinks["beta"].mails
    header_from = parseaddr(email.message_from_bytes(raw)["From"])[1]
    assert (mail_from, header_from, rcpts) == (ADDRESS["beta"], ADDRESS["beta"], ["dora@customer.test"])
    assert gw.sinks["alpha"].mails == []


async def test_alphas_chat_cannot_push_into_a_beta_visitors_chat(gateway: Gateway) -> None:
    gw = gateway
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{gw.url}/channels/beta_chat/ws") as ws:
        await ws.send_json({"type": "hello", "token": None})
        assert (await ws.receive_json(timeout=10))["type"] == "welcome"
        await ws.send_json({"type": "message", "client_id": "c1", "text": "hello beta"})
        while (frame := await ws.receive_json(timeout=10))["type"] != "ack":
            pass
        conv = frame.get("conversation_id") or (await gw.inbound(channel="beta_chat")).conversation_id
        path = f"/api/v1/conversations/{conv}/reply"
        status, body = await gw.call("POST", path, "ben", {"text": "pushed from alpha", "channel": "alpha_chat"})
        assert status == 403, body
        status, body = await gw.call("POST", path, "ben", {"text": "from beta"})
        assert status == 202, body
        while (frame := await ws.receive_json(timeout=10))["type"] != "message":
            pass
        assert frame["text"] == "from beta"  # the first line pushed is beta's own; alpha's never was
    assert [m.text for m in await gw.outgoing()] == ["from beta"]


async def test_alphas_supervisor_cannot_touch_betas_agent(gateway: Gateway) -> None:
    gw = gateway
    ben = gw.agents["ben"]
    status, body = await gw.call("PUT", f"/api/v1/agents/{ben}/queues", "bert_supervisor",
                                 {"queues": [{"project": "beta", "queue": "vip", "rank": 1}]})
    assert status == 200, body
    # Ben holds a leased item of beta.
    asked = await _beta_mail_conversation(gw, "erin@customer.test")
    lease = utcnow() + timedelta(seconds=30)
    async with gw.sessions() as s:
        item = (await s.scalars(select(QueueItem).where(QueueItem.conversation_id == asked.conversation_id))).one()
        item.status, item.lease_owner, item.lease_until, item.agent_id = "leased", f"agent:{ben}", lease, ben
        await s.commit()
        item_id = item.id
    async with gw.readers() as s:
        lease = (await s.get(QueueItem, item_id)).lease_until  # as stored (the store may round it)

    for method, path, body in (
            ("PUT", f"/api/v1/agents/{ben}/queues", {"queues": []}),
            ("PUT", f"/api/v1/agents/{ben}/queues", {"queues": [{"project": "alpha", "queue": "x"}]}),
            ("POST", f"/api/v1/agents/{ben}/heartbeat", None),
            ("PUT", f"/api/v1/agents/{ben}/state", {"state": "busy"})):
        status, answer = await gw.call(method, path, "alma_supervisor", body)
        assert status in (403, 404), (method, path, status, answer)
    async with gw.readers() as s:
        queues = (await s.execute(select(AgentQueue.queue, AgentQueue.rank).where(AgentQueue.agent_id == ben))).all()
        held = await s.get(QueueItem, item_id)
        agent = await s.get(Agent, ben)
    assert [tuple(q) for q in queues] == [("vip", 1)]
    assert held is not None and held.lease_until == lease
    assert agent is not None and agent.state == "offline"
    # Beta's own supervisor still can.
    status, body = await gw.call("POST", f"/api/v1/agents/{ben}/heartbeat", "bert_supervisor")
    assert (status, body["renewed"]) == (200, 1), body
    async with gw.readers() as s:
        assert await s.scalar(select(func.count()).select_from(AgentQueue)) == 1


async def test_a_message_cannot_be_submitted_on_another_projects_channel(gateway: Gateway) -> None:
    gw = gateway
    gw.tokens["admin"] = await create_token(gw.sessions, "admin")
    status, body = await gw.call("POST", "/api/v1/messages", "admin", {
        "project": "beta", "channel": "alpha_mail", "from": {"kind": "email", "value": "x@customer.test"},
        "text": "hi", "dedupe_key": "cross-1"})
    assert status == 403 and "does not serve project 'beta'" in str(body), body
    async with gw.readers() as s:
        assert (await s.scalars(select(Message).where(Message.dedupe_key == "cross-1"))).all() == []
    status, body = await gw.call("POST", "/api/v1/messages", "admin", {
        "project": "beta", "channel": "beta_mail", "from": {"kind": "email", "value": "x@customer.test"},
        "text": "hi", "dedupe_key": "own-1"})
    assert status == 201, body

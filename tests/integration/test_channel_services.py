"""The services the core gives channels: attachments and notifications on the outbound path,
delivery reports bound to peer ids, and adapter-owned web routes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from outbound_helpers import ScriptedAdapter, email_conversation, message
from sqlalchemy import select

from channels.base import Capabilities, ChannelAdapter, InboundSink, Limits
from channels.webhook import WebhookSettings
from storage.models import Identity, Message, Part
from umsg.core import Core
from umsg.errors import NotFound, PermanentError
from umsg.model import DeliveryResult, DeliveryStatus, Outbound, OutboundPart
from umsg.outbound.dispatcher import Dispatcher
from umsg.web.app import create_app


@pytest.fixture
async def pid(core: Core) -> int:
    return await core.ensure_project(core.settings.project)


async def test_attachments_are_stored_and_handed_to_the_adapter(core: Core, pid: int) -> None:
    conv = await email_conversation(core)
    pdf = b"%PDF-1.4 fake but bytes are bytes\n"
    msg = await core.outbox.reply(
        project_id=pid, conversation_id=conv.conversation_id, text="see attached",
        attachments=[OutboundPart("application/pdf", pdf, "offer.pdf")],
    )
    async with core.sessions() as s:
        parts = (await s.scalars(select(Part).where(Part.message_id == msg.id))).all()
    assert [(p.role, p.media_type, p.size, p.filename) for p in parts] == [
        ("attachment", "application/pdf", len(pdf), "offer.pdf")
    ]
    adapter = ScriptedAdapter()
    assert await Dispatcher(core.sessions, core.events, {"email": adapter}, "d", blobs=core.blobs).run_once() == 1
    (sent,) = adapter.sent
    assert sent.parts == (OutboundPart("application/pdf", pdf, "offer.pdf"),)
    assert sent.text == "see attached"


async def test_stored_parts_are_reused_without_copying(core: Core, pid: int) -> None:
    conv = await email_conversation(core)
    async with core.sessions() as s:
        raw = await s.scalar(select(Part).where(Part.message_id == conv.message_id, Part.role == "raw"))
    assert raw is not None
    note = await core.outbox.notify(
        project_id=pid, conversation_id=conv.conversation_id, channel="email", to="owner@acme.test",
        subject="New voicemail", text="listen", attach_part_ids=[raw.id], sender="voicemail@acme.test",
    )
    stored = await message(core, note.id)
    assert stored.flags == {"notification": True, "automatic": True}
    assert (stored.to_addrs, stored.from_addr) == (["owner@acme.test"], "voicemail@acme.test")
    adapter = ScriptedAdapter()
    await Dispatcher(core.sessions, core.events, {"email": adapter}, "d", blobs=core.blobs).run_once()
    (sent,) = adapter.sent
    assert sent.automatic and sent.meta["notification"] is True
    assert sent.parts[0].data == b"Subject: Printer on fire\r\n\r\nhelp"
    with pytest.raises(NotFound):
        await core.outbox.notify(project_id=pid, conversation_id=conv.conversation_id, channel="email",
                                 to="owner@acme.test", text="x", attach_part_ids=[10**9])


async def test_an_attachment_alone_is_a_reply_but_nothing_is_not(core: Core, pid: int) -> None:
    conv = await email_conversation(core)
    await core.outbox.reply(project_id=pid, conversation_id=conv.conversation_id, text="",
                            attachments=[OutboundPart("image/png", b"\x89PNG", "a.png")])
    with pytest.raises(PermanentError, match="needs text or an attachment"):
        await core.outbox.reply(project_id=pid, conversation_id=conv.conversation_id, text=" ")


async def test_reports_find_their_message_by_any_bound_id(core: Core, pid: int) -> None:
    conv = await email_conversation(core)
    msg = await core.outbox.reply(project_id=pid, conversation_id=conv.conversation_id, text="hi")
    await core.reports.bind(msg.id, "sms", ["0a1f", "2591"])
    await core.reports.bind(msg.id, "sms", ["2591"])  # binding again is harmless
    assert await core.reports.find("sms", ["nope", "2591"]) == msg.id
    assert await core.reports.find("other", ["2591"]) is None
    unknown = await core.reports.record(channel="sms", provider_ids=["ffff"], status="delivered")
    assert unknown.message_id is None

    done = await core.reports.record(channel="sms", provider_ids=["0a1f"], status="delivered",
                                     detail="DELIVRD", extra={"parts": 2})
    assert done.message_id == msg.id
    stored = await message(core, msg.id)
    assert (stored.status, stored.status_detail, stored.flags["delivery"]) == ("delivered", "DELIVRD", {"parts": 2})
    assert stored.provider_id == "0a1f"
    # A late failure report does not undo a delivery.
    late = await core.reports.record(channel="sms", provider_ids=["2591"], status="failed", detail="EXPIRED")
    assert late.status == "delivered"


async def test_concurrent_binds_commit_together_and_a_missing_message_fails_only_its_own(
        core: Core, pid: int) -> None:
    conv = await email_conversation(core)
    first, second = [await core.outbox.reply(project_id=pid, conversation_id=conv.conversation_id, text=t)
                     for t in ("one", "two")]
    outcomes = await asyncio.gather(
        core.reports.bind(first.id, "sms", ["a1", "a2"]),
        core.reports.bind(second.id, "sms", ["b1"]),
        core.reports.bind(10**9, "sms", ["ghost"]),
        core.reports.bind(second.id, "sms", ["a1"]),  # the peer reused an id: it stays with the first message
        return_exceptions=True)
    assert outcomes[:2] == [None, None] and outcomes[3] is None
    assert isinstance(outcomes[2], LookupError)
    assert await core.reports.find("sms", ["a1"]) == first.id
    assert await core.reports.find("sms", ["a2"]) == first.id
    assert await core.reports.find("sms", ["b1"]) == second.id
    assert await core.reports.find("sms", ["ghost"]) is None
    # A message's provider id is the first one bound to it; later binds add ids but do not replace it.
    await core.reports.bind(first.id, "sms", ["a3"])
    assert await core.reports.find("sms", ["a3"]) == first.id
    assert ((await message(core, first.id)).provider_id, (await message(core, second.id)).provider_id) == ("a1", "b1")


async def test_a_permanent_failure_marks_the_recipient_failing(core: Core, pid: int) -> None:
    conv = await email_conversation(core, sender="bob@example.com")
    msg = await core.outbox.reply(project_id=pid, conversation_id=conv.conversation_id, text="hi")
    await core.reports.record(channel="email", message_id=msg.id, status="failed", detail="550 5.1.1 no such user")
    async with core.sessions() as s:
        ident = await s.scalar(select(Identity).where(Identity.value == "bob@example.com"))
        failed = await s.get(Message, msg.id)
    assert ident is not None and ident.failing
    assert failed is not None and failed.status == "failed"
    with pytest.raises(ValueError, match="unknown delivery status"):
        await core.reports.record(channel="email", message_id=msg.id, status="bounced-ish")


class RoutedAdapter(ChannelAdapter[WebhookSettings]):
    """A channel serving its own route, as a provider webhook would."""

    name: ClassVar[str] = "routed"
    capabilities: ClassVar[Capabilities] = Capabilities()
    limits: ClassVar[Limits] = Limits()
    Settings: ClassVar[type[WebhookSettings]] = WebhookSettings

    def web_routes(self) -> Sequence[web.RouteDef]:
        async def hello(request: web.Request) -> web.Response:
            return web.json_response({"instance": self.instance_name, "q": request.query.get("q")})

        return [web.get("/hello", hello)]

    async def start(self, sink: InboundSink) -> None:
        pass

    async def send(self, outbound: Outbound) -> DeliveryResult:
        return DeliveryResult(DeliveryStatus.ACCEPTED)

    async def aclose(self) -> None:
        pass


async def test_adapter_routes_are_mounted_under_the_instance_without_api_auth(core: Core) -> None:
    adapter = RoutedAdapter("hooks", WebhookSettings(callback_url="http://127.0.0.1:9/x", secret="s"))
    adapters: dict[str, Any] = {"hooks": adapter}
    async with TestClient(TestServer(create_app(core, adapters))) as client:
        ok = await client.get("/channels/hooks/hello", params={"q": "1"})
        assert (ok.status, await ok.json()) == (200, {"instance": "hooks", "q": "1"})
        assert (await client.get("/channels/other/hello")).status == 404
        assert (await client.get("/api/v1/conversations")).status == 401


class ReceiptFirstAdapter:
    """Applies the peer's delivery receipt before `send` returns, as a fast SMSC does."""

    name: ClassVar[str] = "receipt-first"

    def __init__(self, core: Core) -> None:
        self.core = core

    async def send(self, outbound: Outbound) -> DeliveryResult:
        await self.core.reports.bind(outbound.message_id, "sms", ["77"])
        await self.core.reports.record(channel="sms", provider_ids=["77"], status="delivered", detail="DELIVRD")
        return DeliveryResult(DeliveryStatus.ACCEPTED, provider_id="77")


async def test_a_receipt_before_send_returns_is_not_undone(core: Core, pid: int) -> None:
    conv = await email_conversation(core)
    msg = await core.outbox.reply(project_id=pid, conversation_id=conv.conversation_id, text="hi")
    adapter = ReceiptFirstAdapter(core)
    assert await Dispatcher(core.sessions, core.events, {"email": adapter}, "d").run_once() == 1
    stored = await message(core, msg.id)
    assert (stored.status, stored.status_detail, stored.provider_id) == ("delivered", "DELIVRD", "77")
    assert stored.sent_at is not None

"""The Twilio-compatible transport over real HTTP: signed webhooks, status callbacks, REST sends."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import func, select

from channels.sms.settings import TwilioSettings
from channels.sms.twilio import TwilioChannel
from channels.sms.twilio_sig import signature
from storage.models import Identity, Message, Part
from umsg.errors import PermanentError
from umsg.model import Address, IdentityKind, Inbound, Outbound

TOKEN = "tw-secret-token"


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
MEDIA_PATH = "/2010-04-01/Accounts/AC123/Messages/MM1/Media/"


class FakeTwilio:
    """The provider's REST Messages endpoint (fails the first `fail_first` posts with 503) and its media."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.posts: list[dict[str, str]] = []
        self.media_auth: list[str | None] = []

    async def media(self, request: web.Request) -> web.Response:
        self.media_auth.append(request.headers.get("Authorization"))
        if request.match_info["sid"] != "ME1":
            return web.Response(status=404, text="no such media")
        return web.Response(body=PNG, content_type="image/png")

    async def messages(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.json_response({"message": "busy"}, status=503)
        self.posts.append(form)
        return web.json_response({"sid": f"SM{len(self.posts):032d}", "status": "queued"}, status=201)


@pytest.fixture
async def rest() -> AsyncIterator[tuple[FakeTwilio, str]]:
    fake = FakeTwilio(fail_first=1)
    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/AC123/Messages.json", fake.messages)
    app.router.add_get(MEDIA_PATH + "{sid}", fake.media)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield fake, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def webhook(core: Any, rest: tuple[FakeTwilio, str]) -> AsyncIterator[tuple[TwilioChannel, str]]:
    channel = TwilioChannel("tw", TwilioSettings.model_validate({
        "account_sid": "AC123", "auth_token": TOKEN, "from_number": "+15005550006", "base_url": rest[1],
        "retry_backoff_seconds": 0.01}))
    channel.bind(core.channel_services())
    await channel.start(core.ingest.ingest)
    app = web.Application()
    for route in channel.web_routes():  # mounted as the web app does: /channels/<instance>/...
        app.router.add_route(route.method, f"/channels/tw/{route.path.lstrip('/')}", route.handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield channel, str(server.make_url("/channels/tw"))
    finally:
        await server.close()
        await channel.aclose()


async def post(url: str, params: dict[str, str], *, sign_with: str = TOKEN, tamper: bool = False) -> int:
    sig = signature(sign_with, url, params.items())
    body = dict(params, Body=params.get("Body", "") + " (changed)") if tamper else params
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers={"X-Twilio-Signature": sig}) as r:
        return r.status


def inbound_params(sid: str, body: str, sender: str = "+14155550100") -> dict[str, str]:
    return {"MessageSid": sid, "AccountSid": "AC123", "From": sender, "To": "+15005550006", "Body": body,
            "NumMedia": "0", "NumSegments": "1"}


async def count_in(core: Any) -> int:
    async with core.readers() as s:
        return int(await s.scalar(select(func.count()).select_from(Message).where(Message.direction == "in")) or 0)


async def test_signed_inbound_ingests_once_and_tampered_gets_403(core: Any, webhook: Any) -> None:
    _, base = webhook
    assert await post(f"{base}/inbound", inbound_params("SM1", "Hello from Twilio 👋")) == 200
    assert await post(f"{base}/inbound", inbound_params("SM1", "Hello from Twilio 👋")) == 200  # provider retry
    assert await count_in(core) == 1
    assert await post(f"{base}/inbound", inbound_params("SM2", "evil"), tamper=True) == 403
    assert await post(f"{base}/inbound", inbound_params("SM3", "evil"), sign_with="wrong-token") == 403
    async with aiohttp.ClientSession() as http, http.post(f"{base}/inbound", data=inbound_params("SM4", "x")) as r:
        assert r.status == 403  # no signature at all
    assert await count_in(core) == 1
    async with core.readers() as s:
        msg = await s.scalar(select(Message).where(Message.direction == "in"))
    assert msg is not None and msg.text == "Hello from Twilio 👋" and msg.from_addr == "+14155550100"


async def test_outbound_retries_then_status_callback_applies(core: Any, webhook: Any, rest: Any) -> None:
    channel, base = webhook
    fake, _ = rest
    await post(f"{base}/inbound", inbound_params("SM10", "hi"))
    project = await core.ensure_project("default")
    async with core.readers() as s:
        conv = (await s.scalar(select(Message).where(Message.direction == "in"))).conversation_id
    msg = await core.outbox.reply(project_id=project, conversation_id=conv, text="Thanks!", channel="sms")
    result = await channel.send(Outbound(message_id=msg.id, channel="sms", sender="", recipient=msg.to_addrs[0],
                                         text="Thanks!"))
    assert result.status.value == "accepted" and result.provider_id
    assert fake.posts == [{"To": "+14155550100", "Body": "Thanks!", "From": "+15005550006"}]  # once, after a 503
    status = {"MessageSid": result.provider_id, "MessageStatus": "delivered", "AccountSid": "AC123"}
    assert await post(f"{base}/status", status, tamper=False) == 204
    async with core.readers() as s:
        stored = await s.get(Message, msg.id)
    assert stored is not None and stored.status == "delivered"


async def test_stop_opts_out_and_outbound_is_refused_then_start_undoes_it(core: Any, webhook: Any) -> None:
    _, base = webhook
    await post(f"{base}/inbound", inbound_params("SM20", "hello"))
    assert await post(f"{base}/inbound", inbound_params("SM21", " stop! ")) == 200
    async with core.readers() as s:
        ident = await s.scalar(select(Identity).where(Identity.value == "+14155550100"))
        conv = (await s.scalar(select(Message).where(Message.direction == "in"))).conversation_id
    assert ident is not None and ident.opted_out
    project = await core.ensure_project("default")
    with pytest.raises(PermanentError, match="opted out"):
        await core.outbox.reply(project_id=project, conversation_id=conv, text="promo", channel="sms")
    await post(f"{base}/inbound", inbound_params("SM22", "退订", sender="+14155550199"))
    await post(f"{base}/inbound", inbound_params("SM23", "START"))
    async with core.readers() as s:
        rows = {i.value: i.opted_out for i in (await s.scalars(select(Identity))).all()}
    assert rows["+14155550100"] is False and rows["+14155550199"] is True


async def test_a_number_joins_the_contact_that_has_it_from_another_channel(core: Any, webhook: Any) -> None:
    _, base = webhook
    voicemail = await core.ingest.ingest(Inbound(
        channel="voicemail", sender=Address(IdentityKind.PHONE, "+1 (415) 555-0100"), recipients=("+15005550006",),
        dedupe_key="vm-1", raw=b"RIFF", text="voicemail transcript"))
    await post(f"{base}/inbound", inbound_params("SM30", "texting you now", sender="+14155550100"))
    async with core.readers() as s:
        sms = await s.scalar(select(Message).where(Message.channel == "tw"))
    assert sms is not None and sms.contact_id == voicemail.contact_id


async def test_inbound_media_is_fetched_with_the_account_and_a_failed_fetch_is_flagged(
        core: Any, webhook: Any, rest: Any) -> None:
    _, base = webhook
    fake, _ = rest
    # The webhook names the real provider's host; the fetch goes to the configured base URL.
    params = inbound_params("MM1", "photo of the damage", sender="+14155550111") | {
        "NumMedia": "2",
        "MediaUrl0": f"https://api.twilio.com{MEDIA_PATH}ME1", "MediaContentType0": "image/png",
        "MediaUrl1": f"https://api.twilio.com{MEDIA_PATH}ME2", "MediaContentType1": "image/jpeg"}
    assert await post(f"{base}/inbound", params) == 200
    expected_auth = "Basic " + base64.b64encode(f"AC123:{TOKEN}".encode()).decode()
    assert fake.media_auth == [expected_auth, expected_auth]
    async with core.readers() as s:
        msg = await s.scalar(select(Message).where(Message.provider_id == "MM1"))
        assert msg is not None
        parts = (await s.scalars(select(Part).where(Part.message_id == msg.id, Part.role == "attachment"))).all()
    assert msg.text == "photo of the damage"
    assert [(p.media_type, p.filename, p.size) for p in parts] == [("image/png", "media0.png", len(PNG))]
    assert await core.blobs.get(parts[0].sha256) == PNG
    assert msg.flags["media_errors"] == ["MediaUrl1: HTTP 404 from the provider"]

"""The outbound path: Outbox.reply → deliver job → Dispatcher → webhook channel → a real HTTP peer."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from aiohttp import web
from outbound_helpers import ScriptedAdapter, email_conversation, message
from sqlalchemy import select

from channels.webhook import WebhookChannel, WebhookSettings, verify
from storage.db import create_engine, session_factory
from storage.models import Identity, Job, Message, ThreadRef
from storage.types import utcnow
from umsg.core import Core
from umsg.errors import NotFound, PermanentError, TransientError
from umsg.events.log import EventLog
from umsg.model import (
    Address,
    DeliveryResult,
    DeliveryStatus,
    IdentityKind,
    Inbound,
    InboundPart,
    IngestResult,
    Outbound,
)
from umsg.outbound.authority import RecipientNotContact
from umsg.outbound.dispatcher import Dispatcher
from umsg.outbound.outbox import Outbox

SECRET = "hook-secret"


@dataclass
class Hook:
    """A real HTTP peer: answers from a script and remembers what it was sent."""

    url: str = ""
    script: list[tuple[int, bytes]] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    # When set, the next request is held (not answered) until this event is set.
    hold: asyncio.Event | None = None
    held: list[asyncio.Event] = field(default_factory=list)


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    h = Hook()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        h.received.append((dict(request.headers), body))
        h.arrived.set()
        if h.hold is not None:
            h.held.append(h.hold)
            h.hold = None
            await h.held[-1].wait()
        status, answer = h.script.pop(0) if h.script else (200, b"{}")
        return web.Response(status=status, body=answer, content_type="application/json")

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    h.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        yield h
    finally:
        for event in h.held + ([h.hold] if h.hold else []):
            event.set()
        await runner.cleanup()


@pytest.fixture
async def partner(core: Core, hook: Hook) -> AsyncIterator[WebhookChannel]:
    adapter = WebhookChannel(
        "partner", WebhookSettings(callback_url=hook.url, secret=SECRET, timeout_seconds=5)
    )
    await adapter.start(core.ingest.ingest)
    try:
        yield adapter
    finally:
        await adapter.aclose()


async def webhook_conversation(adapter: WebhookChannel) -> IngestResult:
    body = json.dumps(
        {"id": uuid.uuid4().hex, "sender": "visitor-42", "text": "where is my parcel?"}
    ).encode()
    return await adapter.receive(body)


async def job_for(core: Core, message_id: int) -> Job:
    async with core.sessions() as s:
        jobs = [j for j in (await s.scalars(select(Job))).all() if j.payload.get("message_id") == message_id]
        assert len(jobs) == 1
        return jobs[0]


@pytest.fixture
async def pid(core: Core) -> int:
    return await core.ensure_project(core.settings.project)


def later(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


# -- through the webhook channel to a real HTTP server ----------------------------------------------


async def test_reply_is_delivered_and_signed(
    core: Core, pid: int, hook: Hook, partner: WebhookChannel
) -> None:
    hook.script.append((200, b'{"id": "ext-1"}'))
    conv = await webhook_conversation(partner)
    outbox = Outbox(core.sessions, core.events)
    msg = await outbox.reply(
        project_id=pid, conversation_id=conv.conversation_id, text="On its way!", agent_id=None
    )
    assert (msg.status, msg.direction, msg.channel, msg.to_addrs) == (
        "queued",
        "out",
        "partner",
        ["visitor-42"],
    )
    job = await job_for(core, msg.id)
    assert (job.kind, job.status) == ("deliver", "pending")

    dispatcher = Dispatcher(core.sessions, core.events, {"partner": partner}, "d1")
    assert await dispatcher.run_once() == 1

    [(headers, body)] = hook.received
    verify(SECRET, body, headers["X-Umsg-Signature"])
    assert json.loads(body) == {
        "message_id": msg.id,
        "conversation_id": conv.conversation_id,
        "recipient": "visitor-42",
        "text": "On its way!",
        "subject": None,
        "html": None,
        "automatic": False,
    }
    assert headers["Idempotency-Key"] == f"umsg-message-{msg.id}"
    sent = await message(core, msg.id)
    assert (sent.status, sent.provider_id) == ("sent", "ext-1") and sent.sent_at is not None
    assert (await job_for(core, msg.id)).status == "done"
    statuses = [e.payload["status"] for e in await core.events.since(0) if e.kind == "message.status"]
    assert statuses == ["sending", "sent"]


async def test_unavailable_peer_is_retried_with_backoff(
    core: Core, pid: int, hook: Hook, partner: WebhookChannel
) -> None:
    hook.script += [(503, b"maintenance"), (200, b'{"id": 9}')]
    conv = await webhook_conversation(partner)
    msg = await Outbox(core.sessions, core.events).reply(
        project_id=pid, conversation_id=conv.conversation_id, text="hi"
    )
    dispatcher = Dispatcher(core.sessions, core.events, {"partner": partner}, "d1")
    t0 = later(0)

    assert await dispatcher.run_once(now=t0) == 1
    waiting = await message(core, msg.id)
    assert waiting.status == "queued" and "HTTP 503: maintenance" in (waiting.status_detail or "")
    job = await job_for(core, msg.id)
    assert (job.status, job.attempts, job.run_after) == ("pending", 1, t0 + timedelta(seconds=2))

    assert await dispatcher.run_once(now=t0 + timedelta(seconds=1)) == 0  # not due yet
    assert await dispatcher.run_once(now=t0 + timedelta(seconds=2)) == 1
    done = await message(core, msg.id)
    assert (done.status, done.provider_id) == ("sent", "9")
    assert [h["Idempotency-Key"] for h, _ in hook.received] == [f"umsg-message-{msg.id}"] * 2


async def test_rejected_reply_fails_with_the_peers_words(
    core: Core, pid: int, hook: Hook, partner: WebhookChannel
) -> None:
    hook.script.append((400, b'{"error": "visitor left"}'))
    conv = await webhook_conversation(partner)
    msg = await Outbox(core.sessions, core.events).reply(
        project_id=pid, conversation_id=conv.conversation_id, text="hi"
    )
    dispatcher = Dispatcher(core.sessions, core.events, {"partner": partner}, "d1")
    assert await dispatcher.run_once() == 1

    failed = await message(core, msg.id)
    assert failed.status == "failed"
    assert failed.status_detail == 'HTTP 400: {"error": "visitor left"}'
    assert (await job_for(core, msg.id)).status == "dead"
    assert await dispatcher.run_once(now=later(3600)) == 0
    assert len(hook.received) == 1


async def test_job_in_flight_when_dispatcher_crashes_is_recovered(
    core: Core, pid: int, hook: Hook, partner: WebhookChannel
) -> None:
    conv = await webhook_conversation(partner)
    msg = await Outbox(core.sessions, core.events).reply(
        project_id=pid, conversation_id=conv.conversation_id, text="hi"
    )
    hook.hold = asyncio.Event()
    hook.script.append((200, b'{"id": "second-try"}'))

    crashing = Dispatcher(
        core.sessions, core.events, {"partner": partner}, "dead-node", lease_seconds=5, send_timeout=4
    )
    task = asyncio.create_task(crashing.run_once())
    await hook.arrived.wait()  # the peer has the request; the dispatcher is mid-send
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stuck = await job_for(core, msg.id)
    assert (stuck.status, stuck.lease_owner) == ("leased", "dead-node")
    assert (await message(core, msg.id)).status == "sending"

    survivor = Dispatcher(
        core.sessions, core.events, {"partner": partner}, "d2", lease_seconds=5, send_timeout=4
    )
    assert await survivor.run_once() == 0  # leased elsewhere: not touched
    assert await survivor.recover_expired(now=later(1)) == 0
    assert await survivor.recover_expired(now=later(6)) == 1
    recovered = await job_for(core, msg.id)
    assert (recovered.status, recovered.attempts, recovered.lease_owner) == ("pending", 1, None)
    assert recovered.last_error == "lease expired (held by dead-node)"
    assert (await message(core, msg.id)).status == "queued"

    assert await survivor.run_once(now=later(6)) == 1
    sent = await message(core, msg.id)
    assert (sent.status, sent.provider_id) == ("sent", "second-try")
    assert len(hook.received) == 2


# -- the dispatcher's own rules, with an in-memory adapter -------------------------------------------


async def test_no_adapter_for_the_channel_is_a_permanent_failure(core: Core, pid: int) -> None:
    conv = await email_conversation(core)
    msg = await Outbox(core.sessions, core.events).reply(
        project_id=pid, conversation_id=conv.conversation_id, text="x"
    )
    assert await Dispatcher(core.sessions, core.events, {}, "d").run_once() == 1
    failed = await message(core, msg.id)
    assert (failed.status, failed.status_detail) == (
        "failed", "no channel instance named 'email' is running (running: none)")


async def test_adapter_exceptions_are_classified_and_never_stop_the_loop(core: Core, pid: int) -> None:
    conv = await email_conversation(core)
    outbox = Outbox(core.sessions, core.events)
    crashy = await outbox.reply(project_id=pid, conversation_id=conv.conversation_id, text="1")
    adapter = ScriptedAdapter(
        RuntimeError("driver bug"), TransientError("throttled"), PermanentError("550 no such user")
    )
    dispatcher = Dispatcher(core.sessions, core.events, {"email": adapter}, "d")
    t = later(0)

    assert await dispatcher.run_once(now=t) == 1
    assert "RuntimeError: driver bug" in ((await message(core, crashy.id)).status_detail or "")
    assert await dispatcher.run_once(now=t + timedelta(seconds=2)) == 1
    assert "throttled" in ((await message(core, crashy.id)).status_detail or "")
    assert await dispatcher.run_once(now=t + timedelta(seconds=6)) == 1
    failed = await message(core, crashy.id)
    assert (failed.status, failed.status_detail) == ("failed", "550 no such user")
    job = await job_for(core, crashy.id)
    assert (job.status, job.attempts) == ("dead", 3)


async def test_transient_failures_dead_letter_after_max_attempts(core: Core, pid: int) -> None:
    conv = await email_conversation(core)
    msg = await Outbox(core.sessions, core.events).reply(
        project_id=pid, conversation_id=conv.conversation_id, text="1"
    )
    async with core.sessions() as s:
        job = await s.get(Job, (await job_for(core, msg.id)).id)
        assert job is not None
        job.max_attempts = 3
        await s.commit()
    adapter = ScriptedAdapter(*[DeliveryResult(DeliveryStatus.TRANSIENT_FAILURE, detail="421 try later")] * 5)
    dispatcher = Dispatcher(core.sessions, core.events, {"email": adapter}, "d")
    t = later(0)
    for step in range(3):
        assert await dispatcher.run_once(now=t + timedelta(seconds=400 * step)) == 1
    failed = await message(core, msg.id)
    assert (failed.status, failed.status_detail) == ("failed", "gave up after 3 attempts: 421 try later")
    assert await dispatcher.run_once(now=t + timedelta(days=1)) == 0
    assert len(adapter.sent) == 3


async def test_outbound_carries_thread_and_sender(core: Core, pid: int) -> None:
    conv = await email_conversation(core)
    msg = await Outbox(core.sessions, core.events).reply(
        project_id=pid, conversation_id=conv.conversation_id, text="fixed", automatic=True
    )
    adapter = ScriptedAdapter(DeliveryResult(DeliveryStatus.DELIVERED, provider_id="<id@mta>"))
    await Dispatcher(core.sessions, core.events, {"email": adapter}, "d").run_once()
    [out] = adapter.sent
    assert (out.sender, out.recipient, out.subject, out.automatic) == (
        "support@acme.test",
        "ann@example.com",
        "Re: Printer on fire",
        True,
    )
    assert out.thread.conversation_token and out.meta["conversation_id"] == conv.conversation_id
    delivered = await message(core, msg.id)
    assert (delivered.status, delivered.provider_id) == ("delivered", "<id@mta>")


async def test_run_loop_delivers_and_stops(core: Core, pid: int) -> None:
    conv = await email_conversation(core)
    adapter = ScriptedAdapter()
    dispatcher = Dispatcher(core.sessions, core.events, {"email": adapter}, "d", idle_seconds=0.05)
    stop = asyncio.Event()
    runner = asyncio.create_task(dispatcher.run(stop))
    msg = await Outbox(core.sessions, core.events).reply(
        project_id=pid, conversation_id=conv.conversation_id, text="x"
    )
    async with asyncio.timeout(20):
        while (await message(core, msg.id)).status != "sent":
            await core.events.wait(0.5)
    stop.set()
    async with asyncio.timeout(20):
        await runner
    assert [o.message_id for o in adapter.sent] == [msg.id]


async def test_two_dispatchers_send_each_message_once(core: Core, pid: int) -> None:
    conv = await email_conversation(core)
    outbox = Outbox(core.sessions, core.events)
    ids = [
        (await outbox.reply(project_id=pid, conversation_id=conv.conversation_id, text=str(n))).id
        for n in range(40)
    ]
    settings = core.settings
    engines = [create_engine(settings.database_url, schema=settings.database.schema_name) for _ in range(2)]
    adapter = ScriptedAdapter()
    try:
        dispatchers = []
        for n, engine in enumerate(engines):
            sessions = session_factory(engine)
            dispatchers.append(
                Dispatcher(sessions, EventLog(sessions), {"email": adapter}, f"node{n}", batch=4)
            )

        async def drain(d: Dispatcher) -> None:
            while await d.run_once():
                pass

        await asyncio.gather(*(drain(d) for d in dispatchers))
    finally:
        for engine in engines:
            await engine.dispose()
    assert sorted(o.message_id for o in adapter.sent) == sorted(ids)
    assert {(await message(core, i)).status for i in ids} == {"sent"}


# -- Outbox.reply defaults and refusals -----------------------------------------------------------


async def test_reply_prefers_the_address_the_customer_wrote_from(core: Core, pid: int) -> None:
    first = await email_conversation(core, "ann@example.com")
    async with core.sessions() as s:
        s.add(Identity(project_id=pid, contact_id=first.contact_id, kind="email", value="ann@work.example"))
        await s.commit()
    msg = await Outbox(core.sessions, core.events).reply(
        project_id=pid, conversation_id=first.conversation_id, text="x"
    )
    assert msg.to_addrs == ["ann@example.com"]
    assert msg.subject == "Re: Printer on fire" and msg.from_addr == "support@acme.test"
    created = [e for e in await core.events.since(0, [pid]) if e.kind == "message.created"]
    assert created[-1].payload == {
        "message_id": msg.id,
        "conversation_id": first.conversation_id,
        "channel": "email",
        "direction": "out",
        "automatic": False,
    }


async def test_reply_refusals(core: Core, pid: int) -> None:
    conv = await email_conversation(core)
    outbox = Outbox(core.sessions, core.events)
    other = await core.ensure_project("other")
    with pytest.raises(NotFound):
        await outbox.reply(project_id=other, conversation_id=conv.conversation_id, text="x")
    with pytest.raises(PermanentError, match="needs text"):
        await outbox.reply(project_id=pid, conversation_id=conv.conversation_id, text="  ")
    with pytest.raises(PermanentError, match="has no phone address for 'sms'"):
        await outbox.reply(project_id=pid, conversation_id=conv.conversation_id, text="x", channel="sms")
    async with core.sessions() as s:
        for ident in (await s.scalars(select(Identity).where(Identity.contact_id == conv.contact_id))).all():
            ident.opted_out = True
        await s.commit()
    with pytest.raises(PermanentError, match="opted out"):
        await outbox.reply(project_id=pid, conversation_id=conv.conversation_id, text="x")
    with pytest.raises(PermanentError, match="opted out"):
        await outbox.reply(
            project_id=pid, conversation_id=conv.conversation_id, text="x", to="ann@example.com"
        )
    # The outbound authority: an explicit recipient must be one of the contact's identities.
    with pytest.raises(RecipientNotContact):
        await outbox.reply(project_id=pid, conversation_id=conv.conversation_id, text="x", channel="sms",
                           to="+4930999999")
    async with core.sessions() as s:
        s.add(Identity(project_id=pid, contact_id=conv.contact_id, kind="phone", value="+4930123456"))
        await s.commit()
    explicit = await outbox.reply(
        project_id=pid, conversation_id=conv.conversation_id, text="x", channel="sms", to="+4930123456"
    )
    assert (explicit.channel, explicit.to_addrs) == ("sms", ["+4930123456"])
    async with core.sessions() as s:
        outgoing = (await s.scalars(select(Message.id).where(Message.direction == "out"))).all()
        jobs = (await s.scalars(select(Job.id))).all()
    assert list(outgoing) == [explicit.id] and len(jobs) == 1  # refused replies left nothing behind


# -- batches: claimed, loaded and recorded together --------------------------------------------------


async def test_a_batch_is_loaded_and_recorded_together(core: Core, pid: int) -> None:
    first = await email_conversation(core)
    second = await email_conversation(core, "bob@example.com")
    async with core.sessions() as s:
        s.add_all(ThreadRef(project_id=pid, conversation_id=first.conversation_id, value=f"<r{n}@x>")
                  for n in range(25))
        await s.commit()
    outbox = Outbox(core.sessions, core.events)
    ids = [(await outbox.reply(project_id=pid, conversation_id=c, text=str(n))).id
           for n, c in enumerate([first.conversation_id, second.conversation_id, first.conversation_id])]
    adapter = ScriptedAdapter(
        DeliveryResult(DeliveryStatus.ACCEPTED, provider_id="p1"),
        DeliveryResult(DeliveryStatus.TRANSIENT_FAILURE, detail="421 later"),
        DeliveryResult(DeliveryStatus.PERMANENT_FAILURE, detail="550 gone"),
    )
    t = later(0)
    assert await Dispatcher(core.sessions, core.events, {"email": adapter}, "d", readers=core.readers,
                            batch=8).run_once(now=t) == 3

    assert [o.message_id for o in adapter.sent] == ids  # in the order they were queued
    refs = [o.thread.refs for o in adapter.sent]
    assert refs[0] == refs[2] == tuple(f"<r{n}@x>" for n in range(5, 25))  # the newest 20, oldest first
    assert "<r0@x>" not in refs[1] and adapter.sent[0].thread.conversation_token
    assert adapter.sent[1].thread.conversation_token not in (None, adapter.sent[0].thread.conversation_token)
    assert [o.meta["attempt"] for o in adapter.sent] == [0, 0, 0]
    states = [(m.status, m.status_detail, m.provider_id) for m in [await message(core, i) for i in ids]]
    assert states == [("sent", None, "p1"), ("queued", "retrying after attempt 1: 421 later", None),
                      ("failed", "550 gone", None)]
    jobs = [await job_for(core, i) for i in ids]
    assert [(j.status, j.attempts, j.lease_owner, j.last_error) for j in jobs] == [
        ("done", 1, "d", None), ("pending", 1, None, "421 later"), ("dead", 1, "d", "550 gone")]
    assert jobs[1].run_after == t + timedelta(seconds=2) and jobs[1].lease_until is None
    events = [e.payload for e in await core.events.since(0) if e.kind == "message.status"]
    assert [(e["message_id"], e["status"]) for e in events] == [(i, "sending") for i in ids] + [
        (ids[0], "sent"), (ids[1], "queued"), (ids[2], "failed")]
    assert events[3]["provider_id"] == "p1" and events[5]["detail"] == "550 gone"


async def test_a_result_whose_lease_was_lost_is_left_to_the_new_owner(core: Core, pid: int) -> None:
    conv = await email_conversation(core)
    msg = await Outbox(core.sessions, core.events).reply(
        project_id=pid, conversation_id=conv.conversation_id, text="x")

    class Stolen(ScriptedAdapter):
        async def send(self, outbound: Outbound) -> DeliveryResult:
            async with core.sessions() as s:  # another node recovered and re-leased it meanwhile
                job = await s.get(Job, (await job_for(core, outbound.message_id)).id)
                assert job is not None
                job.lease_owner, job.attempts = "elsewhere", job.attempts + 1
                await s.commit()
            return await super().send(outbound)

    assert await Dispatcher(core.sessions, core.events, {"email": Stolen()}, "d").run_once() == 1
    job = await job_for(core, msg.id)
    assert (job.status, job.lease_owner, job.attempts) == ("leased", "elsewhere", 1)
    assert (await message(core, msg.id)).status == "sending"


async def test_a_job_without_a_message_is_dead_at_once(core: Core, pid: int) -> None:
    async with core.sessions() as s:
        s.add(Job(project_id=pid, kind="deliver", payload={}, run_after=utcnow()))
        await s.commit()
    assert await Dispatcher(core.sessions, core.events, {}, "d").run_once() == 1
    async with core.sessions() as s:
        [job] = (await s.scalars(select(Job))).all()
    assert (job.status, job.last_error) == ("dead", "deliver job names no message")


async def test_a_number_opted_out_under_another_kind_is_refused(core: Core, pid: int) -> None:
    conv = await email_conversation(core)
    async with core.sessions() as s:
        s.add_all([Identity(project_id=pid, contact_id=conv.contact_id, kind="phone", value="+4930123456"),
                   Identity(project_id=pid, contact_id=conv.contact_id, kind="fax", value="+4930123456",
                            opted_out=True)])
        await s.commit()
    with pytest.raises(PermanentError, match=r"\+4930123456 has opted out"):
        await Outbox(core.sessions, core.events).reply(
            project_id=pid, conversation_id=conv.conversation_id, text="x", channel="sms")


async def test_voicemail_is_answered_by_sms_or_email_to_the_callers_identities(core: Core, pid: int) -> None:
    # A caller leaves a voicemail, then writes from an address the agent merged onto the contact.
    wav = b"RIFF\x24\x00\x00\x00WAVEfmt "
    vm = await core.ingest.ingest(Inbound(
        channel="voicemail", sender=Address(IdentityKind.PHONE, "+15550123", "Dana"), recipients=("100",),
        dedupe_key=f"call-{uuid.uuid4().hex}", raw=wav, raw_media_type="audio/wav", text="Voicemail from +15550123",
        parts=(InboundPart("audio/wav", wav, "voicemail.wav", role="recording"),)))
    async with core.sessions() as s:
        s.add(Identity(project_id=pid, contact_id=vm.contact_id, kind="email", value="dana@example.com"))
        await s.commit()
    outbox = Outbox(core.sessions, core.events)
    by_sms = await outbox.reply(project_id=pid, conversation_id=vm.conversation_id, text="Call back", channel="sms")
    assert (by_sms.channel, by_sms.to_addrs) == ("sms", ["+15550123"])
    by_mail = await outbox.reply(project_id=pid, conversation_id=vm.conversation_id, text="Details", channel="email")
    assert (by_mail.channel, by_mail.to_addrs) == ("email", ["dana@example.com"])
    async with core.sessions() as s:
        jobs = (await s.scalars(select(Job))).all()
    assert sorted(j.payload.get("message_id") for j in jobs) == sorted([by_sms.id, by_mail.id])

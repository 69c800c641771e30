"""Channel routes through `core.ingest.ingest`, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from storage.models import Agent, Contact, Conversation, Event, Identity, Job, Message, QueueItem, RouterPin
from umsg.core import Core
from umsg.model import Address, IdentityKind, Inbound, ThreadHints

# A calendar without opening hours is closed at any time, so these tests do not depend on the clock.
ALWAYS_CLOSED = {"tz": "Europe/Berlin", "open": False}

MakeSettings = Callable[..., Any]


def inbound(key: str, *, sender: str = "ann@example.com", channel: str = "email", **kw: Any) -> Inbound:
    kw.setdefault("recipients", ("support@acme.test",))
    kw.setdefault("subject", "Invoice 42")
    kind = IdentityKind.EMAIL if "@" in sender else IdentityKind.PHONE
    return Inbound(
        channel=channel,
        sender=Address(kind, sender, "Ann"),
        dedupe_key=key,
        raw=key.encode(),
        text=f"text of {key}",
        **kw,
    )


@asynccontextmanager
async def routed(make_settings: MakeSettings, routes: list[dict[str, Any]]) -> AsyncIterator[Core]:
    core = await Core.open(make_settings(routes=routes))
    await core.start()
    try:
        yield core
    finally:
        await core.aclose()


async def outbound_of(core: Core, conversation_id: int) -> list[Message]:
    async with core.sessions() as s:
        return list(
            (
                await s.scalars(
                    select(Message)
                    .where(Message.conversation_id == conversation_id, Message.direction == "out")
                    .order_by(Message.id)
                )
            ).all()
        )


async def test_vip_attribute_routes_to_the_vip_queue_with_priority(make_settings: MakeSettings) -> None:
    routes: list[dict[str, Any]] = [
        {
            "name": "vip",
            "contact": ["vip = true", "value >= 1000"],
            "queue": "vip",
            "priority": 10,
            "sla_minutes": 15,
            "skills": {"billing": 3},
        },
        {"name": "general", "queue": "general"},
    ]
    async with routed(make_settings, routes) as core:
        first = await core.ingest.ingest(inbound("m1"))
        assert first.route == "general"
        async with core.sessions() as s:
            contact = await s.get(Contact, first.contact_id)
            assert contact is not None
            contact.attributes = {"vip": True, "value": 2500}
            await s.commit()
        second = await core.ingest.ingest(inbound("m2"))
        stranger = await core.ingest.ingest(inbound("m3", sender="bob@example.com"))
        async with core.sessions() as s:
            item = await s.get(QueueItem, second.queue_item_id)
            conv = await s.get(Conversation, second.conversation_id)
            other = await s.get(QueueItem, stranger.queue_item_id)
        assert second.route == "vip" and item is not None
        assert (item.queue, item.priority, item.skills, item.route) == ("vip", 10, {"billing": 3}, "vip")
        assert conv is not None and conv.priority == 10 and conv.sla_due_at is not None
        assert item.sla_due_at is not None and item.sla_due_at - item.enqueued_at == timedelta(minutes=15)
        assert other is not None and other.queue == "general" and stranger.route == "general"


async def test_out_of_hours_auto_reply_is_an_automatic_outbound_message(make_settings: MakeSettings) -> None:
    routes = [
        {
            "name": "closed",
            "hours": ALWAYS_CLOSED,
            "action": "auto_reply",
            "queue": "general",
            "template": "Dear {contact_name}, we are closed. Case {conversation_id}: {subject}.",
            "reply_subject": "Closed: {subject}",
        }
    ]
    async with routed(make_settings, routes) as core:
        res = await core.ingest.ingest(inbound("m1"))
        replies = await outbound_of(core, res.conversation_id)
        assert len(replies) == 1
        reply = replies[0]
        assert reply.flags == {"automatic": True, "route": "closed", "auto_reply_of": res.message_id}
        assert reply.text == f"Dear Ann, we are closed. Case {res.conversation_id}: Invoice 42."
        assert reply.subject == "Closed: Invoice 42" and reply.to_addrs == ["ann@example.com"]
        assert reply.from_addr == "support@acme.test" and reply.status == "queued"
        async with core.sessions() as s:
            job = await s.scalar(select(Job).where(Job.kind == "deliver"))
            msg = await s.get(Message, res.message_id)
        assert job is not None and job.payload == {"message_id": reply.id}
        assert msg is not None and msg.flags["auto_reply"] == f"sent: message {reply.id}"
        assert res.queue_item_id is not None  # answered now, and still worked on tomorrow


async def test_no_auto_reply_to_auto_submitted_mail_nor_twice_per_conversation(
    make_settings: MakeSettings,
) -> None:
    routes = [
        {"name": "closed", "hours": ALWAYS_CLOSED, "action": "auto_reply", "template": "We are closed."}
    ]
    async with routed(make_settings, routes) as core:
        bot = await core.ingest.ingest(
            inbound("bot", sender="noreply@shop.test", meta={"auto_submitted": True})
        )
        assert await outbound_of(core, bot.conversation_id) == []
        assert bot.queue_item_id is None  # an auto_reply route without a queue only answers
        # SMS threads are sticky: the second text joins the first conversation, answered already.
        sms: dict[str, Any] = {
            "sender": "+4930123456",
            "channel": "sms",
            "recipients": ("80012",),
            "thread": ThreadHints(sticky=True),
        }
        one = await core.ingest.ingest(inbound("s1", **sms))
        two = await core.ingest.ingest(inbound("s2", **sms))
        assert one.conversation_id == two.conversation_id
        assert len(await outbound_of(core, one.conversation_id)) == 1
        async with core.sessions() as s:
            flags = {m.dedupe_key: m.flags for m in (await s.scalars(select(Message))).all()}
        assert flags["bot"]["auto_reply"] == "skipped: the message is auto-submitted or bulk"
        assert flags["s2"]["auto_reply"].startswith("skipped: already answered automatically within 60 min")


async def test_auto_reply_to_an_opted_out_address_is_skipped_not_failed(make_settings: MakeSettings) -> None:
    routes = [
        {"name": "closed", "hours": ALWAYS_CLOSED, "action": "auto_reply", "template": "x", "queue": "q"}
    ]
    async with routed(make_settings, routes) as core:
        first = await core.ingest.ingest(inbound("m1", meta={"auto_submitted": True}))
        async with core.sessions() as s:
            ident = await s.scalar(select(Identity).where(Identity.contact_id == first.contact_id))
            assert ident is not None
            ident.opted_out = True
            await s.commit()
        res = await core.ingest.ingest(inbound("m2"))
        assert res.queue_item_id is not None and await outbound_of(core, res.conversation_id) == []
        async with core.sessions() as s:
            msg = await s.get(Message, res.message_id)
        assert msg is not None and msg.flags["auto_reply"].startswith("skipped: contact")
        assert "opted out" in msg.flags["auto_reply"]


async def test_drop_is_stored_flagged_recorded_and_not_queued(make_settings: MakeSettings) -> None:
    routes = [{"name": "blocklist", "sender": ["spam@*", "+493010000000..+493010009999"], "action": "drop"}]
    async with routed(make_settings, routes) as core:
        res = await core.ingest.ingest(
            inbound("d1", sender="+49 30 1000 1234", channel="sms", recipients=("80012",))
        )
        kept = await core.ingest.ingest(
            inbound("d2", sender="+49 30 2000 1234", channel="sms", recipients=("80012",))
        )
        assert res.route == "blocklist" and res.queue_item_id is None
        assert kept.route == "default" and kept.queue_item_id is not None
        async with core.sessions() as s:
            msg = await s.get(Message, res.message_id)
            conv = await s.get(Conversation, res.conversation_id)
            event = await s.scalar(select(Event).where(Event.kind == "message.dropped"))
        assert msg is not None and msg.flags["dropped_by_route"] == "blocklist"
        assert conv is not None and conv.status == "closed"
        assert event is not None and event.payload == {
            "message_id": res.message_id,
            "conversation_id": res.conversation_id,
            "route": "blocklist",
        }


async def test_forward_creates_an_outbound_copy(make_settings: MakeSettings) -> None:
    routes = [
        {"name": "partner", "to": "partner@acme.test", "action": "forward", "forward_to": "desk@partner.test"}
    ]
    async with routed(make_settings, routes) as core:
        res = await core.ingest.ingest(inbound("f1", recipients=("Partner@acme.test",)))
        copies = await outbound_of(core, res.conversation_id)
        assert res.route == "partner" and res.queue_item_id is None
        assert len(copies) == 1
        copy = copies[0]
        assert copy.to_addrs == ["desk@partner.test"] and copy.channel == "email"
        assert copy.subject == "Fwd: Invoice 42" and "text of f1" in (copy.text or "")
        assert copy.flags == {"automatic": True, "route": "partner", "forward_of": res.message_id}


async def test_preferred_agent_pins_the_item(make_settings: MakeSettings) -> None:
    routes = [
        {
            "name": "alice-desk",
            "to": "alice-desk@acme.test",
            "queue": "q",
            "preferred_agent": {"rule": "agent", "login": "alice", "expiry_minutes": 10},
        },
        {"name": "returning", "queue": "q", "preferred_agent": {"rule": "last_agent", "expiry_minutes": 60}},
    ]
    async with routed(make_settings, routes) as core:
        async with core.sessions() as s:
            alice, bob = Agent(login="alice", display_name="Alice"), Agent(login="bob", display_name="Bob")
            s.add_all([alice, bob])
            await s.commit()
            alice_id, bob_id = alice.id, bob.id
        dedicated = await core.ingest.ingest(inbound("p1", recipients=("alice-desk@acme.test",)))
        first = await core.ingest.ingest(inbound("p2", sender="carl@example.com"))
        async with core.sessions() as s:
            conv = await s.get(Conversation, first.conversation_id)
            assert conv is not None
            conv.assignee_id, conv.status = bob_id, "resolved"
            await s.commit()
        again = await core.ingest.ingest(inbound("p3", sender="carl@example.com"))
        async with core.sessions() as s:
            pins = {p.item_id: p for p in (await s.scalars(select(RouterPin))).all()}
            item = await s.get(QueueItem, dedicated.queue_item_id)
        assert item is not None
        pin = pins[item.id]
        assert (pin.agent_id, pin.kind) == (alice_id, "dedicated")
        assert pin.until - item.enqueued_at == timedelta(minutes=10)
        assert first.queue_item_id not in pins  # a new customer has no last agent
        assert again.queue_item_id is not None
        last = pins[again.queue_item_id]
        assert (last.agent_id, last.kind) == (bob_id, "last_agent")


async def test_a_batch_of_auto_replied_messages_gets_one_id_each(make_settings: MakeSettings) -> None:
    """Replies the ORM adds take ids from the batch's one allocator: what the bulk rows left of the
    drawn ids, then ids past them; none collides with a bulk row or another reply."""
    routes = [{"name": "closed", "hours": ALWAYS_CLOSED, "action": "auto_reply", "queue": "general",
               "template": "We are closed, {contact_name}."}]
    def waiting(**kw: Any) -> Any:  # the writer waits a moment, so concurrent messages share a batch
        return make_settings(ingest={"batch_wait_ms": 50.0}, **kw)

    async with routed(waiting, routes) as core:
        before = core.ingest.stats["batches"]
        results = await asyncio.gather(*(core.ingest.ingest(inbound(f"burst-{i}", sender=f"c{i}@example.com"))
                                         for i in range(6)))
        assert core.ingest.stats["batches"] - before < len(results), "the messages did not share a batch"
        replies = [await outbound_of(core, r.conversation_id) for r in results]
        assert all(len(r) == 1 for r in replies), replies
        ids = [r.message_id for r in results] + [r[0].id for r in replies]
        assert len(set(ids)) == 12
        async with core.readers() as s:
            stored = set((await s.scalars(select(Message.id))).all())
        assert set(ids) <= stored

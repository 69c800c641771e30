"""Channels are configured instances, on both databases: the dispatcher hands a reply to exactly
the instance it names, the Outbox picks the identity kind the instance answers on, and stored
rows named after an adapter type move onto its instance (at start, or `umsg channels rename`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sqlalchemy import func, select

from channels.registry import ChannelRegistry
from storage.models import (
    ChannelRename,
    ChannelState,
    Conversation,
    Event,
    Message,
    ProviderRef,
    QueueItem,
    StoredRouteTable,
)
from umsg.app.serve import adopt_channel_names
from umsg.channel_rename import unconfigured_deliveries
from umsg.cli import main
from umsg.config import Settings
from umsg.core import Core
from umsg.errors import PermanentError
from umsg.instances import ChannelInstances
from umsg.model import Address, DeliveryResult, DeliveryStatus, IdentityKind, Inbound, IngestResult, Outbound
from umsg.outbound.dispatcher import Dispatcher

EMAIL_PAIR = {
    "support": {"type": "email", "domain": "support.alpha.test"},
    "sales": {"type": "email", "domain": "sales.alpha.test"},
}


class Recorder:
    """An adapter seam: remembers what it was handed. Both instances are of type `email`."""

    name: ClassVar[str] = "email"

    def __init__(self) -> None:
        self.sent: list[Outbound] = []

    async def send(self, outbound: Outbound) -> DeliveryResult:
        self.sent.append(outbound)
        return DeliveryResult(DeliveryStatus.SENT, provider_id=f"<{outbound.message_id}@test>")


def instances_of(channels: dict[str, dict[str, Any]]) -> ChannelInstances:
    registry = ChannelRegistry(use_entry_points=False)
    from umsg.config import ChannelSettings

    return registry.instances({n: ChannelSettings.model_validate(c) for n, c in channels.items()})


@pytest.fixture
async def open_core(make_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., Any]]:
    opened: list[Core] = []

    async def open_(channels: dict[str, dict[str, Any]], **overrides: Any) -> Core:
        settings = make_settings(channels=channels, **overrides)
        c = await Core.open(settings, channels=instances_of(channels))
        await c.start()
        opened.append(c)
        return c

    yield open_
    for c in opened:
        await c.aclose()


async def mail_in(core: Core, channel: str, sender: str = "alice@customer.test", *, key: str | None = None,
                  subject: str = "Broken lamp") -> IngestResult:
    return await core.ingest.ingest(Inbound(
        channel=channel, sender=Address(IdentityKind.EMAIL, sender, "Alice"),
        recipients=(f"{channel}@{channel}.alpha.test",), dedupe_key=key or f"<{uuid.uuid4().hex}@customer.test>",
        raw=f"Subject: {subject}\r\n\r\nhello".encode(), subject=subject, text="hello"))


async def stored(core: Core, message_id: int) -> Message:
    async with core.readers() as s:
        msg = await s.get(Message, message_id)
    assert msg is not None
    return msg


async def test_a_reply_goes_to_exactly_the_instance_it_names(open_core: Callable[..., Any]) -> None:
    core = await open_core(EMAIL_PAIR)
    pid = await core.ensure_project("default")
    to_support, to_sales = await mail_in(core, "support"), await mail_in(core, "sales")
    legacy = await mail_in(core, "email")  # a row from before channels were named by instance
    a, b = await core.outbox.reply(project_id=pid, conversation_id=to_support.conversation_id, text="A"), \
        await core.outbox.reply(project_id=pid, conversation_id=to_sales.conversation_id, text="B")
    # `email` is no configured instance: no identity kind is guessed from the name, the reply
    # goes to whoever wrote on it.
    c = await core.outbox.reply(project_id=pid, conversation_id=legacy.conversation_id, text="C")
    assert c.to_addrs == ["alice@customer.test"] and c.subject is None
    support, sales = Recorder(), Recorder()
    dispatcher = Dispatcher(core.sessions, core.events, {"support": support, "sales": sales}, "d")
    assert await dispatcher.run_once() == 3
    assert [o.message_id for o in support.sent] == [a.id] and [o.message_id for o in sales.sent] == [b.id]
    assert support.sent[0].channel == "support" and sales.sent[0].channel == "sales"
    # Both adapters are of type `email`: a message named `email` still goes to neither.
    failed = await stored(core, c.id)
    assert (failed.status, failed.status_detail) == (
        "failed", "no channel instance named 'email' is running (running: sales, support)")


async def test_replies_go_to_the_identity_kind_the_instance_answers_on(open_core: Callable[..., Any]) -> None:
    core = await open_core({**EMAIL_PAIR,
                            "texts": {"type": "sms", "url": "smpp://esme:pw@127.0.0.1:2775"},
                            "shop": {"type": "webhook", "callback_url": "https://hooks.test/x", "secret": "s"}})
    pid = await core.ensure_project("default")
    conv = (await mail_in(core, "sales")).conversation_id
    reply = await core.outbox.reply(project_id=pid, conversation_id=conv, text="Sorry!")
    assert (reply.channel, reply.to_addrs, reply.subject) == ("sales", ["alice@customer.test"], "Re: Broken lamp")
    with pytest.raises(PermanentError, match="has no phone address for 'texts'"):
        await core.outbox.reply(project_id=pid, conversation_id=conv, text="by text", channel="texts")
    hook = await core.ingest.ingest(Inbound(
        channel="shop", sender=Address(IdentityKind.CHAT, "visitor-42"), recipients=(), dedupe_key="h1",
        raw=b"{}", text="where is my parcel?", subject="parcel"))
    answer = await core.outbox.reply(project_id=pid, conversation_id=hook.conversation_id, text="on its way")
    # A webhook answers on no fixed kind: whoever wrote, and no email-style subject.
    assert (answer.channel, answer.to_addrs, answer.subject) == ("shop", ["visitor-42"], None)


async def test_notifications_default_to_the_one_email_instance(open_core: Callable[..., Any]) -> None:
    one = await open_core({"support": EMAIL_PAIR["support"], "vm": {"type": "voicemail", "port": 0}})
    pid = await one.ensure_project("default")
    conv = (await mail_in(one, "support")).conversation_id
    note = await one.outbox.notify(project_id=pid, conversation_id=conv, channel=None, to="owner@acme.test",
                                   text="a voicemail")
    assert note.channel == "support" and note.flags["notification"] is True


async def test_notifications_name_their_instance_when_several_could_send(open_core: Callable[..., Any]) -> None:
    core = await open_core(EMAIL_PAIR)
    pid = await core.ensure_project("default")
    conv = (await mail_in(core, "sales")).conversation_id
    with pytest.raises(PermanentError, match=r"several channels answer on email \(sales, support\)"):
        await core.outbox.notify(project_id=pid, conversation_id=conv, channel=None, to="owner@acme.test",
                                 text="a voicemail")
    note = await core.outbox.notify(project_id=pid, conversation_id=conv, channel="sales", to="owner@acme.test",
                                    text="a voicemail")
    assert note.channel == "sales"


# -- stored names ---------------------------------------------------------------------------------


async def seed_legacy_rows(core: Core) -> dict[str, Any]:
    """What a store written before instance names holds: everything under `email`."""
    pid = await core.ensure_project("default")
    first = await mail_in(core, "email", key="<same@customer.test>")
    await mail_in(core, "email", key="<other@customer.test>")
    # The same mail stored under the instance's name too (a clash: it stays where it is).
    await mail_in(core, "support", key="<same@customer.test>")
    reply = await core.outbox.reply(project_id=pid, conversation_id=first.conversation_id, text="queued answer")
    async with core.sessions() as s:
        s.add(ProviderRef(project_id=pid, channel="email", provider_id="<relay-1@x>", message_id=reply.id))
        s.add(ChannelState(channel="email", key="imap://support@imap.test/INBOX",
                           value={"uidvalidity": 7, "last_uid": 41}))
        await core.routes.save(s, pid, "default", [
            {"name": "vip", "channel": ["email", "texts"], "sender": "vip@*", "queue": "vip"},
            {"name": "fwd", "action": "forward", "forward_to": "desk@partner.test", "forward_channel": "email"}],
            expected_version=0, actor="test")
        await s.commit()
    return {"pid": pid, "reply": reply.id}


async def counts(core: Core, name: str) -> dict[str, int]:
    out = {}
    async with core.readers() as s:
        for model in (Message, Conversation, QueueItem, ProviderRef, ChannelState):
            out[model.__tablename__] = int(await s.scalar(
                select(func.count()).select_from(model).where(model.channel == name)) or 0)
    return out


async def message_ids(core: Core, channel: str) -> list[int]:
    async with core.readers() as s:
        return list((await s.scalars(select(Message.id).where(Message.channel == channel))).all())


async def event_payloads(core: Core, channel: str) -> list[dict[str, Any]]:
    async with core.readers() as s:
        payloads = (await s.scalars(select(Event.payload))).all()
    return [p for p in payloads if p.get("channel") == channel]


async def test_the_type_name_moves_onto_the_one_configured_instance_once(open_core: Callable[..., Any]) -> None:
    channels = {"support": EMAIL_PAIR["support"]}
    core = await open_core(channels)
    seeded = await seed_legacy_rows(core)
    async with core.sessions() as s:  # a chat that went on by email, as the ContinueOn effect records it
        s.add(Event(project_id=seeded["pid"], kind="conversation.updated", payload={
            "conversation_id": 1, "changes": {"channel": {"from": "chat", "to": "email"}}}))
        await s.commit()
    assert (await counts(core, "email"))["message"] == 3  # two inbound, one queued reply
    assert await unconfigured_deliveries(core.readers, ["support"]) == {"email": 1}

    await adopt_channel_names(core, ChannelRegistry(use_entry_points=False), core.settings)

    assert await counts(core, "email") == {"message": 1, "conversation": 0, "queue_item": 0,
                                           "provider_ref": 0, "channel_state": 0}
    # The event log names the instance too, except the events of the message left under `email`.
    (left,) = await message_ids(core, "email")
    assert {p.get("message_id") for p in await event_payloads(core, "email")} == {left}
    assert len(await event_payloads(core, "support")) >= 6  # created and queued, of three conversations
    moved = await counts(core, "support")
    assert moved == {"message": 3, "conversation": 3, "queue_item": 3, "provider_ref": 1, "channel_state": 1}
    async with core.readers() as s:
        (record,) = (await s.scalars(select(ChannelRename))).all()
        table = await s.scalar(select(StoredRouteTable))
    assert table is not None and table.version == 2  # a new version: running processes re-read it
    routes = table.routes
    assert (record.old_name, record.new_name, record.source) == ("email", "support", "start")
    assert record.rows == {"message": 2, "conversation": 2, "queue_item": 2, "provider_ref": 1,
                           "channel_state": 1, "route_table": 1, "event": record.rows["event"]}
    # two conversations created, the moved message created and queued, the reply created, the change
    assert record.rows["event"] == 6, await event_payloads(core, "support")
    async with core.readers() as s:
        change = await s.scalar(select(Event.payload).where(Event.kind == "conversation.updated"))
    assert change == {"conversation_id": 1, "changes": {"channel": {"from": "chat", "to": "support"}}}
    assert record.skipped == {"message": 1}  # <same@customer.test> was stored under both names
    assert routes[0]["channel"] == ["support", "texts"] and routes[1]["forward_channel"] == "support"
    assert await unconfigured_deliveries(core.readers, ["support"]) == {}

    # Recorded: the next start does not look again.
    await adopt_channel_names(core, ChannelRegistry(use_entry_points=False), core.settings)
    async with core.readers() as s:
        assert await s.scalar(select(func.count()).select_from(ChannelRename)) == 1


async def test_two_instances_of_a_type_leave_the_choice_to_the_operator(
        open_core: Callable[..., Any], db_config: dict[str, Any], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    core = await open_core(EMAIL_PAIR)
    seeded = await seed_legacy_rows(core)
    await adopt_channel_names(core, ChannelRegistry(use_entry_points=False), core.settings)
    assert (await counts(core, "email"))["message"] == 3  # untouched: support or sales?
    assert await unconfigured_deliveries(core.readers, list(EMAIL_PAIR)) == {"email": 1}

    database = "".join(f'{k} = "{v}"\n' for k, v in db_config.items())
    config = tmp_path / "gateway.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n[database]\n{database}\n'
                      '[channels.support]\ntype = "email"\ndomain = "support.alpha.test"\n'
                      '[channels.sales]\ntype = "email"\ndomain = "sales.alpha.test"\n', encoding="utf-8")
    assert await asyncio.to_thread(main, ["channels", "rename", "email", "nowhere", "--config", str(config)]) == 2
    assert "'nowhere' is not a configured channel instance" in capsys.readouterr().err
    assert await asyncio.to_thread(main, ["channels", "rename", "email", "support", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "channel 'email' -> 'support': message 2, conversation 2, queue_item 2" in out
    assert "left under 'email' (the same key is stored under 'support' already): message 1" in out
    assert (await counts(core, "support"))["message"] == 3
    assert (await stored(core, seeded["reply"])).channel == "support"
    assert await asyncio.to_thread(main, ["channels", "list", "--config", str(config)]) == 0
    listing = capsys.readouterr().out
    assert "  sales: type email, replies to email" in listing
    assert "  email: 1 message(s), 0 conversation(s)  <- no instance of this name" in listing
    async with core.readers() as s:
        assert (await s.scalar(select(ChannelRename.source))) == "cli"

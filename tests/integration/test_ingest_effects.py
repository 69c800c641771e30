"""Effects a message carries are applied in its own transaction, by the one status rule.

Each case hands the ingest an `Inbound` with effects, as a channel would, and reads the
store afterwards: an opt-out, a delivery report (only for addresses the message was sent
to, never moving a delivered message back), another identity of the sender, a switch of
the conversation's channel. A message whose effect cannot apply is still stored.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from storage.models import Conversation, Event, Identity, Message
from storage.states import MessageStatus
from umsg.core import Core
from umsg.model import (
    AddIdentity,
    Address,
    ContinueOn,
    DeliveryReport,
    Effect,
    IdentityKind,
    Inbound,
    OptOut,
    ThreadHints,
)
from umsg.outbound.status import next_status


def inbound(key: str, *, sender: str = "alice@example.com", kind: IdentityKind = IdentityKind.EMAIL,
            channel: str = "email", text: str = "hello", effects: tuple[Effect, ...] = ()) -> Inbound:
    return Inbound(channel=channel, sender=Address(kind, sender), recipients=("support@acme.test",),
                   dedupe_key=key, raw=text.encode(), text=text, effects=effects,
                   thread=ThreadHints(sticky=kind is not IdentityKind.EMAIL))


async def one(core: Core, stmt: Any) -> Any:
    async with core.readers() as s:
        return (await s.execute(stmt)).scalar_one_or_none()


async def outbound_to(core: Core, address: str, status: str = "sent") -> Message:
    """An earlier reply of ours to `address` (the customer wrote first), in state `status`."""
    first = await core.ingest.ingest(inbound(f"first-{address}", sender=address))
    pid = await core.ensure_project("default")
    out = await core.outbox.reply(project_id=pid, conversation_id=first.conversation_id, text="On its way.")
    async with core.sessions() as s:
        msg = await s.get(Message, out.id)
        assert msg is not None
        msg.status, msg.provider_id = status, f"<{out.id}@acme.test>"
        await s.commit()
    return out


@pytest.mark.parametrize(("current", "reported", "status", "changed", "late"), [
    ("queued", "sent", "sent", True, False),
    ("sending", "delivered", "delivered", True, False),
    ("delivered", "sent", "delivered", False, False),
    ("delivered", "failed", "delivered", False, True),
    ("read", "delivered", "read", False, False),
    ("delivered", "read", "read", True, False),
    ("failed", "delivered", "delivered", True, False),
    ("sent", "failed", "failed", True, False),
])
def test_the_status_rule(current: str, reported: str, status: str, changed: bool, late: bool) -> None:
    move = next_status(current, reported)
    assert (move.status, move.changed, move.late_failure) == (MessageStatus(status), changed, late)


async def test_an_opt_out_commits_with_the_text(core: Core) -> None:
    stop = inbound("sms-1", sender="+447700900123", kind=IdentityKind.PHONE, channel="sms", text="STOP",
                   effects=(OptOut(),))
    result = await core.ingest.ingest(stop)
    assert await one(core, select(Identity.opted_out).where(Identity.value == "+447700900123")) is True
    flags = await one(core, select(Message.flags).where(Message.id == result.message_id))
    assert flags["effects"] == ["opted out: 1 identity"]
    start = inbound("sms-2", sender="+447700900123", kind=IdentityKind.PHONE, channel="sms", text="START",
                    effects=(OptOut(opted_out=False),))
    await core.ingest.ingest(start)
    assert await one(core, select(Identity.opted_out).where(Identity.value == "+447700900123")) is False


async def test_a_duplicate_applies_nothing_twice(core: Core) -> None:
    stop = inbound("sms-3", sender="+447700900124", kind=IdentityKind.PHONE, channel="sms", text="STOP",
                   effects=(OptOut(),))
    await core.ingest.ingest(stop)
    async with core.sessions() as s:  # the customer opted back in by another way meanwhile
        ident = await s.scalar(select(Identity).where(Identity.value == "+447700900124"))
        assert ident is not None
        ident.opted_out = False
        await s.commit()
    again = await core.ingest.ingest(stop)
    assert again.duplicate
    assert await one(core, select(Identity.opted_out).where(Identity.value == "+447700900124")) is False


async def test_a_bounce_fails_the_reply_and_its_address(core: Core) -> None:
    out = await outbound_to(core, "bob@example.com")
    dsn = inbound("dsn-1", sender="mailer-daemon@example.com", text="bounced", effects=(
        DeliveryReport(status="failed", provider_id=f"<{out.id}@acme.test>", failed=("Bob@Example.com",),
                       detail="bounced: 5.1.1"),))
    result = await core.ingest.ingest(dsn)
    assert await one(core, select(Message.status).where(Message.id == out.id)) == "failed"
    assert await one(core, select(Message.status_detail).where(Message.id == out.id)) == "bounced: 5.1.1"
    assert await one(core, select(Identity.failing).where(Identity.value == "bob@example.com")) is True
    flags = await one(core, select(Message.flags).where(Message.id == result.message_id))
    assert flags["effects"] == [f"report: message {out.id} failed"]
    events = [e.payload for e in await core.events.since(0, None, 500) if e.kind == "message.status"]
    assert {"message_id": out.id, "status": "failed"}.items() <= events[-1].items()


async def test_a_forged_bounce_flags_nobody(core: Core) -> None:
    out = await outbound_to(core, "carol@example.com")
    await core.ingest.ingest(inbound("dan", sender="dan@example.com"))
    forged = inbound("dsn-2", sender="mailer-daemon@example.com", text="bounced", effects=(
        DeliveryReport(status="failed", message_id=out.id, failed=("dan@example.com",)),))
    result = await core.ingest.ingest(forged)
    assert await one(core, select(Message.status).where(Message.id == out.id)) == "sent"
    assert await one(core, select(Identity.failing).where(Identity.value == "dan@example.com")) is False
    flags = await one(core, select(Message.flags).where(Message.id == result.message_id))
    assert flags["effects"] == [f"report: message {out.id} was not sent to dan@example.com"]


async def test_a_late_bounce_is_recorded_and_moves_nothing_back(core: Core) -> None:
    out = await outbound_to(core, "erin@example.com", status="delivered")
    dsn = inbound("dsn-3", sender="mailer-daemon@example.com", text="bounced", effects=(
        DeliveryReport(status="failed", message_id=out.id, failed=("erin@example.com",), detail="bounced: 5.2.2"),))
    await core.ingest.ingest(dsn)
    assert await one(core, select(Message.status).where(Message.id == out.id)) == "delivered"
    flags = await one(core, select(Message.flags).where(Message.id == out.id))
    assert flags["delivery"]["late_failure"]["detail"] == "bounced: 5.2.2"
    assert await one(core, select(Identity.failing).where(Identity.value == "erin@example.com")) is False


async def test_a_chat_visitor_email_joins_the_contact_and_the_chat_continues_by_email(core: Core) -> None:
    effects = (AddIdentity(IdentityKind.EMAIL, "Visitor@Example.com", "Vera"), ContinueOn("email", "offline"))
    result = await core.ingest.ingest(inbound("chat-1", sender="v-123", kind=IdentityKind.CHAT,
                                              channel="webchat", effects=effects))
    owner = await one(core, select(Identity.contact_id).where(Identity.kind == "email",
                                                              Identity.value == "visitor@example.com"))
    assert owner == result.contact_id
    assert await one(core, select(Conversation.channel).where(Conversation.id == result.conversation_id)) == "email"
    kinds = [(e.kind, e.payload.get("reason")) for e in await core.events.since(0, None, 500)]
    assert ("conversation.updated", "offline") in kinds


async def test_an_address_of_another_contact_stays_theirs_and_the_message_is_stored(core: Core) -> None:
    other = await core.ingest.ingest(inbound("owner", sender="taken@example.com"))
    result = await core.ingest.ingest(inbound("chat-2", sender="v-456", kind=IdentityKind.CHAT, channel="webchat",
                                              effects=(AddIdentity(IdentityKind.EMAIL, "taken@example.com"),
                                                       AddIdentity(IdentityKind.EMAIL, "not an address"))))
    owner = await one(core, select(Identity.contact_id).where(Identity.value == "taken@example.com"))
    assert owner == other.contact_id != result.contact_id
    flags = await one(core, select(Message.flags).where(Message.id == result.message_id))
    assert flags["effects"][0] == f"identity: email belongs to contact {other.contact_id}"
    assert flags["effects"][1].startswith("identity: refused: not an email address")
    assert await one(core, select(Event.id).where(Event.kind == "contact.merged")) is None

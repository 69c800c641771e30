"""The services behind the inbox handlers, where the API tests do not reach.

umsg.inbox_work (work list, notes, close), Contacts.timeline and the message, part and
typing reads and writes of umsg.conversations: guards before anything is read or written,
project scoping, the wrap-up refusals, and each write committing with its event.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import select

from storage.models import Agent, Contact, Conversation, Event, Identity, Message, Part, QueueItem, WrapupCode
from storage.types import utcnow
from umsg.contacts import Contacts
from umsg.conversations import Conversations
from umsg.core import Core
from umsg.errors import Conflict, NotFound
from umsg.inbox_work import InboxWork, NoWrapupCodes, WrapupCodeRequired


@dataclass
class Seed:
    default: int
    other: int
    agent: int
    contact: int
    held: int  # default project: its queue item is leased to the agent
    assigned: int  # default project: open and assigned to the agent, no queue item
    closed: int  # default project: assigned to the agent but closed
    elsewhere: int  # other project: leased to the agent
    item: int  # the queue item of `held`


def _open(project_id: int | None) -> None:
    return None


def _hidden(project_id: int | None) -> None:
    raise NotFound("hidden")


def _conv(project_id: int, contact_id: int, **kw: object) -> Conversation:
    return Conversation(project_id=project_id, contact_id=contact_id, channel="email", token=uuid.uuid4().hex, **kw)


def _msg(conv: Conversation, direction: str, at: object, **kw: object) -> Message:
    return Message(project_id=conv.project_id, conversation_id=conv.id, contact_id=conv.contact_id,
                   direction=direction, channel=conv.channel, from_addr="x", dedupe_key=uuid.uuid4().hex,
                   created_at=at, **kw)


async def _seed(core: Core) -> Seed:
    default = await core.ensure_project(core.settings.project)
    other = await core.ensure_project("other")
    now = utcnow()
    async with core.sessions() as s:
        agent = Agent(login="alice", display_name="Alice", state="available")
        contact = Contact(project_id=default, display_name="Carol")
        stranger = Contact(project_id=other, display_name="Dave")
        s.add_all([agent, contact, stranger])
        await s.flush()
        s.add(Identity(project_id=default, contact_id=contact.id, kind="email", value="carol@x"))
        held = _conv(default, contact.id, sla_due_at=now + timedelta(hours=2))
        assigned = _conv(default, contact.id, assignee_id=agent.id, sla_due_at=now + timedelta(hours=3))
        closed = _conv(default, contact.id, assignee_id=agent.id, status="closed")
        elsewhere = _conv(other, stranger.id)
        s.add_all([held, assigned, closed, elsewhere])
        await s.flush()
        item = QueueItem(project_id=default, conversation_id=held.id, queue="default", channel="email",
                         status="leased", lease_owner=f"agent:{agent.id}", lease_until=now + timedelta(minutes=5),
                         sla_due_at=now + timedelta(hours=1))
        s.add_all([
            item,
            QueueItem(project_id=other, conversation_id=elsewhere.id, queue="other", channel="email",
                      status="leased", lease_owner=f"agent:{agent.id}", lease_until=now + timedelta(minutes=5)),
            # `held` waits since its customer's message; `assigned` was answered after it.
            _msg(held, "in", now - timedelta(minutes=3)),
            _msg(assigned, "in", now - timedelta(minutes=2)),
            _msg(assigned, "out", now - timedelta(minutes=1), author_agent_id=agent.id),
        ])
        await s.commit()
        return Seed(default, other, agent.id, contact.id, held.id, assigned.id, closed.id, elsewhere.id, item.id)


def _inbox(core: Core) -> InboxWork:
    return InboxWork(core.sessions, core.events, core.queue, readers=core.readers)


async def _events(core: Core, kind: str) -> list[Event]:
    async with core.sessions() as s:
        return list((await s.scalars(select(Event).where(Event.kind == kind).order_by(Event.id))).all())


async def test_work_lists_held_and_assigned_open_conversations_in_the_callers_projects(core: Core) -> None:
    seed = await _seed(core)
    svc = _inbox(core)
    work = await svc.work(seed.agent, None)
    assert [w.conversation.id for w in work] == [seed.held, seed.assigned, seed.elsewhere]
    held, assigned = work[0], work[1]
    assert held.item is not None and held.item.id == seed.item and held.contact is not None
    assert held.contact.display_name == "Carol"
    assert held.waiting_since is not None and assigned.waiting_since is None  # answered
    # The queue item's deadline wins over the conversation's; without an item the conversation's counts.
    assert held.sla_due_at == held.item.sla_due_at and assigned.sla_due_at == assigned.conversation.sla_due_at
    assert [w.conversation.id for w in await svc.work(seed.agent, {seed.default})] == [seed.held, seed.assigned]
    assert await svc.work(seed.agent, set()) == []
    assert await svc.work(seed.agent + 1000, None) == []


async def test_note_is_written_with_its_event_and_only_past_the_guard(core: Core) -> None:
    seed = await _seed(core)
    svc = _inbox(core)
    with pytest.raises(NotFound, match="hidden"):
        await svc.add_note(seed.held, _hidden, "secret", agent_id=seed.agent, by="agent:1")
    with pytest.raises(NotFound, match="conversation 999999 not found"):
        await svc.add_note(999999, _open, "secret", agent_id=seed.agent, by="agent:1")
    assert await _events(core, "message.created") == []
    note = await svc.add_note(seed.held, _open, "VIP", agent_id=seed.agent, by=f"agent:{seed.agent}")
    assert (note.direction, note.text, note.author_agent_id) == ("note", "VIP", seed.agent)
    [event] = await _events(core, "message.created")
    assert event.payload == {"message_id": note.id, "conversation_id": seed.held, "channel": "email",
                             "direction": "note", "automatic": False}


async def test_close_refuses_a_missing_or_unknown_wrapup_code(core: Core) -> None:
    seed = await _seed(core)
    svc = _inbox(core)
    with pytest.raises(NoWrapupCodes):
        await svc.close(seed.held, _open, status="closed", wrapup_code="solved", note=None,
                        agent_id=seed.agent, by="t", holder=None)
    async with core.sessions() as s:
        s.add_all([WrapupCode(project_id=seed.default, code="solved", label="Solved"),
                   WrapupCode(project_id=seed.default, code="spam", label="Spam")])
        await s.commit()
    for code in (None, "nope"):
        with pytest.raises(WrapupCodeRequired, match="choose one of: solved, spam"):
            await svc.close(seed.held, _open, status="closed", wrapup_code=code, note=None,
                            agent_id=seed.agent, by="t", holder=None)
    with pytest.raises(NotFound, match="hidden"):
        await svc.close(seed.held, _hidden, status="closed", wrapup_code="solved", note=None,
                        agent_id=seed.agent, by="t", holder=None)
    with pytest.raises(ValueError, match="not a closing status"):
        await svc.close(seed.held, _open, status="open", wrapup_code="solved", note=None,
                        agent_id=seed.agent, by="t", holder=None)
    # Nothing was finished or written by a refused close.
    assert (await _inbox(core).work(seed.agent, {seed.default}))[0].item is not None
    assert await _events(core, "conversation.updated") == []


async def test_close_finishes_the_held_work_then_closes_with_a_note_and_one_event(core: Core) -> None:
    seed = await _seed(core)
    svc = _inbox(core)
    with pytest.raises(Conflict, match="held by agent:"):
        await svc.close(seed.held, _open, status="resolved", wrapup_code=None, note=None,
                        agent_id=None, by="agent:0", holder="agent:0")
    conv = await svc.close(seed.held, _open, status="resolved", wrapup_code=None, note="refund sent",
                           agent_id=None, by="token:7", holder=None)
    assert conv.status == "resolved" and conv.snoozed_until is None
    async with core.sessions() as s:
        item = await s.get(QueueItem, seed.item)
        note = (await s.scalars(select(Message).where(Message.conversation_id == seed.held,
                                                      Message.direction == "note"))).one()
    assert item is not None and item.status == "done"
    assert note.text == "Closed: refund sent" and note.flags == {"wrapup": None, "wrapup_label": None}
    [event] = await _events(core, "conversation.updated")
    assert event.payload == {"conversation_id": seed.held, "by": "token:7", "wrapup": None,
                             "changes": {"status": {"from": "open", "to": "resolved"}}}
    assert [e.payload["item_id"] for e in await _events(core, "queue.completed")] == [seed.item]


async def test_timeline_pages_a_contacts_messages_with_authors(core: Core) -> None:
    seed = await _seed(core)
    svc = Contacts(core.sessions, core.events, readers=core.readers)
    with pytest.raises(NotFound, match="hidden"):
        await svc.timeline(seed.contact, _hidden, after_id=0, limit=10)
    with pytest.raises(NotFound, match="contact 999999 not found"):
        await svc.timeline(999999, _open, after_id=0, limit=10)
    first = await svc.timeline(seed.contact, _open, after_id=0, limit=2)
    assert first.contact.id == seed.contact and [i.value for i in first.identities] == ["carol@x"]
    assert [(e.message.conversation_id, e.message.direction) for e in first.entries] == [
        (seed.held, "in"), (seed.assigned, "in")]
    rest = await svc.timeline(seed.contact, _open, after_id=first.entries[-1].message.id, limit=10)
    assert [(e.message.direction, e.author_name) for e in rest.entries] == [("out", "Alice")]
    assert all(e.author_name is None for e in first.entries)


async def test_message_part_typing_and_project_id(core: Core) -> None:
    seed = await _seed(core)
    svc = Conversations(core.sessions, core.events)
    async with core.sessions() as s:
        msg = (await s.scalars(select(Message).where(Message.conversation_id == seed.held))).one()
        part = Part(project_id=seed.default, message_id=msg.id, role="body", sha256="0" * 64,
                    media_type="text/plain", size=1)
        s.add(part)
        await s.commit()
    seen: list[int | None] = []

    def hidden(project_id: int | None) -> None:
        seen.append(project_id)
        raise NotFound("hidden")

    got, parts = await svc.message(msg.id, _open)
    assert got.id == msg.id and [p.id for p in parts] == [part.id]
    assert (await svc.part(part.id, _open)).sha256 == "0" * 64
    with pytest.raises(NotFound, match="message 999999 not found"):
        await svc.message(999999, _open)
    with pytest.raises(NotFound, match="part 999999 not found"):
        await svc.part(999999, _open)
    for call in (svc.message(msg.id, hidden), svc.part(part.id, hidden),
                 svc.typing(seed.elsewhere, hidden, agent_id=seed.agent, on=True)):
        with pytest.raises(NotFound, match="hidden"):
            await call
    assert seen == [seed.default, seed.default, seed.other]
    assert await _events(core, "conversation.typing") == []
    await svc.typing(seed.held, _open, agent_id=seed.agent, on=False)
    [event] = await _events(core, "conversation.typing")
    assert event.project_id == seed.default
    assert event.payload == {"conversation_id": seed.held, "who": "agent", "agent_id": seed.agent, "on": False}
    assert await svc.project_id("other") == seed.other and await svc.project_id("nowhere") is None

"""The core's queries for a live chat (`ChannelServices.chat`, umsg/chat_support.py), called
directly: history, lines and transcripts, a visitor's files, email, ratings, typing, agents and
offers. The web chat tests cover the same through the widget's socket."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from storage.models import Agent, AgentProject, Conversation, Part, QueueItem, RouterOffer
from umsg.chat_support import ChatFile, ChatRating, ChatSupport, ChatVisitor
from umsg.core import Core
from umsg.model import Address, IdentityKind, Inbound, InboundPart, IngestResult, ThreadHints

CHANNEL = "chat1"


async def say(core: Core, visitor: str, client_id: str, text: str | None, *, channel: str = CHANNEL,
              part: InboundPart | None = None, name: str | None = None) -> IngestResult:
    key = f"{channel}:{visitor}"
    return await core.ingest.ingest(Inbound(
        channel=channel, sender=Address(IdentityKind.CHAT, visitor, name), recipients=(channel,),
        dedupe_key=f"webchat:{visitor}:{client_id}", raw=json.dumps({"text": text}).encode(),
        raw_media_type="application/json", text=text, parts=(part,) if part else (),
        thread=ThreadHints(own=(key,), refs=(key,), sticky=True), project=core.settings.project))


@pytest.fixture
async def pid(core: Core) -> int:
    return await core.ensure_project(core.settings.project)


@pytest.fixture
def chat(core: Core) -> ChatSupport:
    return core.channel_services().chat


async def add_agent(core: Core, pid: int, login: str, state: str) -> int:
    async with core.sessions() as s:
        agent = Agent(login=login, display_name=login.title(), state=state)
        s.add(agent)
        await s.flush()
        s.add(AgentProject(agent_id=agent.id, project_id=pid))
        await s.commit()
        return agent.id


async def test_visitor_history_lines_and_transcript(core: Core, chat: ChatSupport, pid: int) -> None:
    assert await chat.project_id(core.settings.project) == pid
    assert await chat.project_id("nowhere") is None
    assert await chat.visitor(pid, "v_nobody") is None
    first = await say(core, "v_a", "c1", "hello", name="Ann")
    await say(core, "v_a", "c2", "anyone there?")
    alice = await add_agent(core, pid, "alice", "available")
    reply = await core.outbox.reply(project_id=pid, conversation_id=first.conversation_id, text="Alice here",
                                    agent_id=alice)
    await say(core, "v_a", "c3", "on another chat", channel="chat2")

    visitor = await chat.visitor(pid, "v_a")
    assert visitor == ChatVisitor(first.contact_id, "Ann", None)
    history = await chat.history(first.contact_id, CHANNEL, 2)
    assert history.conversation_ids == (first.conversation_id,)
    assert [(x.direction, x.text, x.author) for x in history.lines] == [
        ("in", "anyone there?", None), ("out", "Alice here", "Alice")]
    assert history.lines[0].dedupe_key == "webchat:v_a:c2" and history.lines[0].files == ()
    empty = await chat.history(first.contact_id, CHANNEL, 0)
    assert empty.lines == () and empty.conversation_ids == (first.conversation_id,)
    assert (await chat.history(first.contact_id, "chat3", 10)).conversation_ids == ()

    line = await chat.line(reply.id)
    assert line is not None and line.author == "Alice" and line.conversation_id == first.conversation_id
    assert await chat.line(10**9) is None
    lines = await chat.conversation_lines(first.conversation_id, CHANNEL)
    assert [x.text for x in lines] == ["hello", "anyone there?", "Alice here"]
    assert [x.created_at for x in lines] == sorted(x.created_at for x in lines)


async def test_a_file_is_given_only_to_its_contact_on_its_channel(core: Core, chat: ChatSupport, pid: int) -> None:
    data = b"GIF89a tiny"
    mine = await say(core, "v_f", "c1", None, part=InboundPart("image/gif", data, "cat.gif"))
    other = await say(core, "v_g", "c1", "not yours")
    async with core.readers() as s:
        parts = (await s.scalars(select(Part).where(Part.message_id == mine.message_id))).all()
    (attachment,) = [p for p in parts if p.role == "attachment"]
    raw = next(p for p in parts if p.role != "attachment")

    found = await chat.visitor_file(attachment.id, mine.contact_id, CHANNEL)
    assert found == ChatFile(attachment.id, "cat.gif", "image/gif", len(data), attachment.sha256)
    assert await core.blobs.get(found.sha256) == data
    assert await chat.visitor_file(attachment.id, other.contact_id, CHANNEL) is None
    assert await chat.visitor_file(attachment.id, mine.contact_id, "chat2") is None
    assert await chat.visitor_file(raw.id, mine.contact_id, CHANNEL) is None
    assert await chat.visitor_file(10**9, mine.contact_id, CHANNEL) is None
    line = await chat.line(mine.message_id)
    assert line is not None and line.files == (found,)


async def test_email_is_kept_once_and_never_taken_from_another_contact(core: Core, chat: ChatSupport,
                                                                        pid: int) -> None:
    a = await say(core, "v_a", "c1", "hi")
    b = await say(core, "v_b", "c1", "hi", name="Bea")
    assert await chat.remember_email(pid, a.contact_id, " Ann@Example.com ", "Ann") is True
    assert await chat.remember_email(pid, a.contact_id, "ann@example.com", "Other") is True
    assert await chat.visitor(pid, "v_a") == ChatVisitor(a.contact_id, "Ann", "ann@example.com")
    assert await chat.remember_email(pid, b.contact_id, "ann@example.com", None) is False
    assert await chat.remember_email(pid, a.contact_id, "ann@work.example", None) is True
    assert await chat.visitor(pid, "v_a") == ChatVisitor(a.contact_id, "Ann", "ann@work.example")
    assert await chat.visitor(pid, "v_b") == ChatVisitor(b.contact_id, "Bea", None)


async def test_rating_and_typing_are_kept_with_their_event(core: Core, chat: ChatSupport, pid: int) -> None:
    conv = (await say(core, "v_r", "c1", "thanks")).conversation_id
    before = await core.events.latest_id()
    at = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    await chat.rate(CHANNEL, conv, 3, None, at)
    await chat.rate(CHANNEL, conv, 5, "great", at + timedelta(minutes=1))
    await chat.rate(CHANNEL, 10**9, 1, "no such conversation", at)
    assert await chat.rating(CHANNEL, conv) == ChatRating(conv, 5, "great", (at + timedelta(minutes=1)).isoformat())
    assert await chat.rating("chat2", conv) is None
    await chat.typing(conv, True)
    await chat.typing(10**9, True)

    events = [e for e in await core.events.since(before, None, 100)]
    assert [(e.kind, e.project_id, e.payload.get("changes", {}).get("rating")) for e in events] == [
        ("conversation.updated", pid, {"from": None, "to": 3}),
        ("conversation.updated", pid, {"from": 3, "to": 5}),
        ("conversation.typing", pid, None)]
    assert events[1].payload["rating"] == {"score": 5, "comment": "great"}
    assert events[2].payload == {"conversation_id": conv, "who": "customer", "on": True}


async def test_agents_available_names_and_offers(core: Core, chat: ChatSupport, pid: int) -> None:
    assert await chat.agents_available(pid) is False
    bob = await add_agent(core, pid, "bob", "away")
    assert await chat.agents_available(pid) is False
    other = await core.ensure_project("other")
    await add_agent(core, other, "carol", "available")
    assert await chat.agents_available(pid) is False
    async with core.sessions() as s:
        agent = await s.get(Agent, bob)
        assert agent is not None
        agent.state = "available"
        await s.commit()
    assert await chat.agents_available(pid) is True
    assert await chat.agent_name(bob) == "Bob"
    assert await chat.agent_name(10**9) is None

    result = await say(core, "v_o", "c1", "help")
    async with core.sessions() as s:
        item = await s.scalar(select(QueueItem).where(QueueItem.conversation_id == result.conversation_id))
        if item is None:
            item = QueueItem(project_id=pid, conversation_id=result.conversation_id, queue="default",
                             channel=CHANNEL)
            s.add(item)
            await s.flush()
        offer = RouterOffer(project_id=pid, item_id=item.id, conversation_id=result.conversation_id,
                            agent_id=bob, expires_at=datetime.now(UTC) + timedelta(seconds=30))
        s.add(offer)
        await s.commit()
        offer_id = offer.id
        assert await s.get(Conversation, result.conversation_id) is not None
    assert await chat.offer_conversation(offer_id) == result.conversation_id
    assert await chat.offer_conversation(10**9) is None

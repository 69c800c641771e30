"""umsg.conversations where the API tests do not reach: list filters and scoping, the guard, no-op updates."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from storage.models import Agent, Contact, Conversation, Event
from umsg.conversations import ConversationFilter, Conversations
from umsg.core import Core
from umsg.errors import NotFound


async def _seed(core: Core) -> tuple[int, int, int, list[int]]:
    """Two projects; conversations: default/email/open, default/sms/closed (assigned), other/email/open."""
    default = await core.ensure_project(core.settings.project)
    other = await core.ensure_project("other")
    async with core.sessions() as s:
        agent = Agent(login="alice", display_name="Alice", state="offline")
        s.add(agent)
        contacts = [Contact(project_id=default), Contact(project_id=other)]
        s.add_all(contacts)
        await s.flush()
        convs = [
            Conversation(project_id=default, contact_id=contacts[0].id, channel="email", token=uuid.uuid4().hex),
            Conversation(project_id=default, contact_id=contacts[0].id, channel="sms", status="closed",
                         assignee_id=agent.id, token=uuid.uuid4().hex),
            Conversation(project_id=other, contact_id=contacts[1].id, channel="email", token=uuid.uuid4().hex),
        ]
        s.add_all(convs)
        await s.commit()
        return default, other, agent.id, [c.id for c in convs]


def _open(project_id: int | None) -> None:
    return None


async def test_page_filters_and_scopes_by_project(core: Core) -> None:
    default, other, agent, ids = await _seed(core)
    svc = Conversations(core.sessions, core.events)

    async def page(**kw: object) -> list[int]:
        args: dict[str, object] = {"after_id": 0, "limit": 50, **kw}
        return [c.id for c in await svc.page(ConversationFilter(**args))]  # type: ignore[arg-type]

    assert await page() == ids
    assert await page(project_ids={other}) == [ids[2]]
    assert await page(project_ids=set()) == []
    assert await page(status="closed") == [ids[1]]
    assert await page(channel="email") == [ids[0], ids[2]]
    assert await page(assignee=agent) == [ids[1]]
    assert await page(assignee="none") == [ids[0], ids[2]]
    assert await page(after_id=ids[0], limit=1) == [ids[1]]


async def test_guard_sees_the_project_before_anything_is_read_or_written(core: Core) -> None:
    default, other, agent, ids = await _seed(core)
    svc = Conversations(core.sessions, core.events)
    seen: list[int | None] = []

    def hidden(project_id: int | None) -> None:
        seen.append(project_id)
        raise NotFound("hidden")

    with pytest.raises(NotFound):
        await svc.update(ids[2], hidden, {"priority": 9}, by="test")
    with pytest.raises(NotFound):
        await svc.messages(ids[2], hidden, after_id=0, limit=10)
    assert seen == [other, other]
    assert (await svc.get(ids[2], _open)).priority == 0
    with pytest.raises(NotFound, match="conversation 999999 not found"):
        await svc.get(999999, _open)


async def test_update_without_a_difference_writes_no_event(core: Core) -> None:
    default, other, agent, ids = await _seed(core)
    svc = Conversations(core.sessions, core.events)

    async def events() -> int:
        async with core.sessions() as s:
            return int(await s.scalar(select(func.count()).select_from(Event)
                                      .where(Event.kind == "conversation.updated")) or 0)

    conv = await svc.update(ids[0], _open, {"status": "open", "priority": 0}, by="test")
    assert conv.status == "open" and await events() == 0
    conv = await svc.update(ids[0], _open, {"priority": 3}, by="test")
    assert conv.priority == 3 and await events() == 1
    with pytest.raises(ValueError, match="not changeable"):
        await svc.update(ids[0], _open, {"channel": "sms"}, by="test")

"""umsg.agents where the API tests do not reach: idempotent state, agents in no project, colleagues, skills."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from storage.models import AgentStateHistory, Event, Skill
from umsg.agents import Agents, NewAgent, UnknownProject
from umsg.core import Core
from umsg.errors import NotFound
from umsg.tokens import Principal

ADMIN = Principal(token_id=1, role="admin", agent_id=None, project_ids=None)


def _everything(project_id: int | None) -> bool:
    return True


async def _count(core: Core, model: type[AgentStateHistory] | type[Event] | type[Skill]) -> int:
    async with core.sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(model)) or 0)


async def test_same_state_again_writes_nothing_and_an_agent_in_no_project_reports_unscoped(core: Core) -> None:
    svc = Agents(core.sessions, core.events)
    loner = (await svc.create(NewAgent(login="loner", display_name="Loner"), _everything)).agent
    view = await svc.set_state(loner.id, ADMIN, "available", None, by="test")
    assert view.agent.state == "available" and view.projects == [] and view.skills == {}
    history, events = await _count(core, AgentStateHistory), await _count(core, Event)
    await svc.set_state(loner.id, ADMIN, "available", None, by="test")
    assert (await _count(core, AgentStateHistory), await _count(core, Event)) == (history, events)
    async with core.sessions() as s:
        rows = (await s.scalars(select(Event).where(Event.kind == "agent.state"))).all()
    assert [(e.project_id, e.payload["previous"], e.payload["by"]) for e in rows] == [(None, "offline", "test")]


async def test_colleagues_are_visible_and_skills_are_shared_per_project(core: Core) -> None:
    default = await core.ensure_project(core.settings.project)
    other = await core.ensure_project("other")
    svc = Agents(core.sessions, core.events)
    ann = (await svc.create(NewAgent(login="ann", display_name="Ann", projects=["default"],
                                     skills={"billing": 2}), _everything)).agent
    ben = await svc.create(NewAgent(login="ben", display_name="Ben", projects=["default", "default"],
                                    skills={"billing": 5}), _everything)
    assert ben.projects == ["default"] and ben.skills == {"billing": 5}
    assert await _count(core, Skill) == 1  # the second agent reuses the project's skill
    cid = (await svc.create(NewAgent(login="cid", display_name="Cid", projects=["other"]), _everything)).agent

    as_ann = Principal(token_id=2, role="agent", agent_id=ann.id, project_ids=frozenset({default}))
    assert (await svc.get(ben.agent.id, as_ann)).agent.login == "ben"
    with pytest.raises(NotFound, match=f"agent {cid.id} not found"):
        await svc.get(cid.id, as_ann)
    assert [a.login for a, _ in await svc.page(as_ann, after_id=0, limit=50)] == ["ann", "ben"]
    assert [a.login for a, _ in await svc.page(ADMIN, after_id=ann.id, limit=1)] == ["ben"]

    with pytest.raises(UnknownProject) as raised:
        await svc.create(NewAgent(login="dee", display_name="Dee", projects=["default", "other"]),
                         lambda pid: pid == default)
    assert (raised.value.index, raised.value.slug) == (1, "other") and other != default

"""Agents as the web API reads and changes them: the queries and writes behind the handlers.

The caller (umsg.web.api.agents) parses, checks roles and serialises; this module runs the
SQL. Which agents a caller sees is a query (colleagues in one of its projects, and itself),
so it is applied here from the caller's `Principal`.

A state change closes the agent's open history row and opens a new one in the same
transaction, and reports `agent.state` to every project the agent works in (one event per
project, so project-scoped feeds see it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import SessionFactory
from storage.models import Agent, AgentProject, AgentSkill, AgentStateHistory, Project, Skill
from storage.types import utcnow
from umsg.errors import Conflict, NotFound, PermanentError
from umsg.events.log import EventLog
from umsg.tokens import Principal


class UnknownProject(PermanentError):
    """A new agent names a project that does not exist (or the caller does not see)."""

    def __init__(self, index: int, slug: str) -> None:
        self.index, self.slug = index, slug
        super().__init__(f"unknown project '{slug}'")


@dataclass(frozen=True)
class AgentView:
    """An agent with the slugs of its projects and its best proficiency per skill name."""

    agent: Agent
    projects: list[str]
    skills: dict[str, int]


@dataclass(frozen=True)
class NewAgent:
    """What creating an agent takes; skills apply in every one of its projects."""

    login: str
    display_name: str
    email: str | None = None
    capacity: int = 100
    projects: Sequence[str] = ()
    skills: Mapping[str, int] = field(default_factory=dict)


class Agents:
    """Reads of agents, creating one and changing its presence, for the web API."""

    def __init__(self, sessions: SessionFactory, events: EventLog) -> None:
        self.sessions = sessions
        self.events = events

    async def page(self, viewer: Principal, *, after_id: int, limit: int) -> list[tuple[Agent, list[str]]]:
        """A page of the agents `viewer` sees, ordered by id, each with its project slugs."""
        stmt = select(Agent).where(Agent.id > after_id).order_by(Agent.id).limit(limit)
        if viewer.project_ids is not None:
            colleagues = select(AgentProject.agent_id).where(AgentProject.project_id.in_(sorted(viewer.project_ids)))
            stmt = stmt.where(Agent.id.in_(colleagues) | (Agent.id == (viewer.agent_id or 0)))
        async with self.sessions() as s:
            agents = (await s.scalars(stmt)).all()
            projects: dict[int, list[str]] = defaultdict(list)
            if agents:
                rows = await s.execute(
                    select(AgentProject.agent_id, Project.slug)
                    .join(Project, Project.id == AgentProject.project_id)
                    .where(AgentProject.agent_id.in_([a.id for a in agents]))
                    .order_by(Project.slug)
                )
                for agent_id, slug in rows.all():
                    projects[agent_id].append(slug)
        return [(a, projects[a.id]) for a in agents]

    async def get(self, agent_id: int, viewer: Principal) -> AgentView:
        """One agent; NotFound when it does not exist or `viewer` does not see it."""
        async with self.sessions() as s:
            return await _describe(s, await _load(s, viewer, agent_id))

    async def create(self, new: NewAgent, sees: Callable[[int | None], bool]) -> AgentView:
        """Create an offline agent in the named projects (each must pass `sees`) with its skills.

        Raises Conflict for a login in use (or a concurrent create), UnknownProject for a
        project that does not exist or is not seen.
        """
        now = utcnow()
        async with self.sessions() as s:
            if await s.scalar(select(Agent.id).where(Agent.login == new.login)) is not None:
                raise Conflict(f"an agent with login {new.login!r} already exists")
            project_ids: list[int] = []
            for i, slug in enumerate(new.projects):
                pid = await s.scalar(select(Project.id).where(Project.slug == slug))
                if pid is None or not sees(pid):
                    raise UnknownProject(i, slug)
                if pid not in project_ids:
                    project_ids.append(pid)
            agent = Agent(
                login=new.login,
                display_name=new.display_name,
                email=new.email,
                capacity=new.capacity,
                state="offline",
                state_since=now,
            )
            s.add(agent)
            await s.flush()
            for pid in project_ids:
                s.add(AgentProject(agent_id=agent.id, project_id=pid))
                for name, proficiency in new.skills.items():
                    skill = await s.scalar(select(Skill).where(Skill.project_id == pid, Skill.name == name))
                    if skill is None:
                        skill = Skill(project_id=pid, name=name)
                        s.add(skill)
                        await s.flush()
                    s.add(AgentSkill(agent_id=agent.id, skill_id=skill.id, proficiency=proficiency))
            s.add(AgentStateHistory(agent_id=agent.id, state="offline", reason="created", started_at=now))
            try:
                await s.commit()
            except IntegrityError as exc:
                # Lost a race with a concurrent create of the same login or skill.
                raise Conflict(f"agent {new.login!r} conflicts with a concurrent change; try again") from exc
            return await _describe(s, agent)

    async def set_state(
        self, agent_id: int, viewer: Principal, state: str, reason: str | None, *, by: str
    ) -> AgentView:
        """Move the agent to `state` (with `reason`); the same state and reason again changes nothing."""
        async with self.sessions() as s:
            agent = await _load(s, viewer, agent_id)
            if agent.state == state and agent.state_reason == reason:
                return await _describe(s, agent)  # idempotent: no new history row
            now = utcnow()
            previous = agent.state
            await s.execute(
                update(AgentStateHistory)
                .where(AgentStateHistory.agent_id == agent_id, AgentStateHistory.ended_at.is_(None))
                .values(ended_at=now)
            )
            s.add(AgentStateHistory(agent_id=agent_id, state=state, reason=reason, started_at=now))
            agent.state, agent.state_reason, agent.state_since = state, reason, now
            payload: dict[str, Any] = {
                "agent_id": agent_id,
                "state": state,
                "reason": reason,
                "previous": previous,
                "since": now.isoformat(),
                "by": by,
            }
            # An agent in no project still has a presence; only unscoped readers see that event.
            targets: list[int | None] = [*await _project_ids_of(s, agent_id)] or [None]
            for pid in targets:
                self.events.add(s, pid, "agent.state", payload)
            await s.commit()
            self.events.notify()
            return await _describe(s, agent)


async def _project_ids_of(s: AsyncSession, agent_id: int) -> list[int]:
    rows = await s.scalars(select(AgentProject.project_id).where(AgentProject.agent_id == agent_id))
    return sorted(int(p) for p in rows)


async def _load(s: AsyncSession, viewer: Principal, agent_id: int) -> Agent:
    agent = await s.get(Agent, agent_id)
    if agent is None:
        raise NotFound(f"agent {agent_id} not found")
    if viewer.project_ids is not None and viewer.agent_id != agent_id:
        # Colleagues are visible; agents of other projects do not exist for the caller.
        if not set(await _project_ids_of(s, agent_id)) & viewer.project_ids:
            raise NotFound(f"agent {agent_id} not found")
    return agent


async def _describe(s: AsyncSession, agent: Agent) -> AgentView:
    slugs = (
        await s.scalars(
            select(Project.slug).join(AgentProject, AgentProject.project_id == Project.id)
            .where(AgentProject.agent_id == agent.id).order_by(Project.slug)
        )
    ).all()
    skills: dict[str, int] = {}
    rows = await s.execute(
        select(Skill.name, AgentSkill.proficiency)
        .join(AgentSkill, AgentSkill.skill_id == Skill.id)
        .where(AgentSkill.agent_id == agent.id)
    )
    for name, proficiency in rows.all():
        skills[name] = max(proficiency, skills.get(name, 0))
    return AgentView(agent, list(slugs), skills)

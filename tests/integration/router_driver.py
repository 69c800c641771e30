"""Helpers for the router tests against the real store (no fixtures and no tests here).

`Driver` runs the leader's loop one round at a time on a `Clock` the test moves (starting
at `T0`); `add_agent` and `add_item` write an agent and a waiting queue item straight to
the store.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from storage.models import Agent, AgentProject, AgentSkill, AgentStateHistory, Contact, Conversation, Skill
from umsg.router.engine import Engine
from umsg.router.service import RouterService

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Driver:
    """Runs the leader's loop one round at a time, with an explicit clock."""

    def __init__(self, core: Any, clock: Clock) -> None:
        self.core, self.clock = core, clock
        self.svc = RouterService(core.sessions, core.readers, core.events, core.engine, core.settings.router,
                                 schema=core.settings.database.schema_name, clock=clock)
        self.engine: Engine | None = None
        self.cursor = 0

    async def start(self, project_id: int | None = None) -> None:
        self.cursor = await self.core.events.latest_id()
        self.engine = await self.svc.snapshot(lambda p: project_id is None or p == project_id)

    async def round(self) -> int:
        assert self.engine is not None
        self.cursor = await self.svc.sync(self.engine, 0, self.cursor)
        return await self.svc.step(self.engine)


async def add_agent(core: Any, pid: int, login: str, state: str = "available", skills: dict[str, int] | None = None,
                    capacity: int = 100) -> int:
    async with core.sessions() as s:
        a = Agent(login=login, display_name=login, state=state, capacity=capacity, state_since=T0)
        s.add(a)
        await s.flush()
        s.add(AgentProject(agent_id=a.id, project_id=pid))
        for name, prof in (skills or {}).items():
            skill = await s.scalar(select(Skill).where(Skill.project_id == pid, Skill.name == name))
            if skill is None:
                skill = Skill(project_id=pid, name=name)
                s.add(skill)
                await s.flush()
            s.add(AgentSkill(agent_id=a.id, skill_id=skill.id, proficiency=prof))
        s.add(AgentStateHistory(agent_id=a.id, state=state, started_at=T0))
        await s.commit()
        return a.id


async def add_item(core: Any, pid: int, channel: str = "email", at: datetime = T0, priority: int = 0,
                   queue: str = "default", skills: dict[str, int] | None = None) -> int:
    async with core.sessions() as s:
        c = Contact(project_id=pid)
        s.add(c)
        await s.flush()
        conv = Conversation(project_id=pid, contact_id=c.id, channel=channel, token=secrets.token_hex(6))
        s.add(conv)
        await s.flush()
        item = core.queue.enqueue(s, project_id=pid, conversation_id=conv.id, message_id=None, queue=queue,
                                  channel=channel, priority=priority, skills=skills, now=at)
        await s.commit()
        core.events.notify()
        return int(item.id)

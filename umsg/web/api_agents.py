"""Agents: listing, creating (admin), reading, and changing presence state.

A state change closes the agent's open history row and opens a new one in
the same transaction, and reports `agent.state` to every project the agent
works in (one event per project, so project-scoped feeds see it).
"""

from __future__ import annotations

from collections import defaultdict

from aiohttp import web
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Agent, AgentProject, AgentSkill, AgentStateHistory, Project, Skill
from storage.types import utcnow
from umsg.errors import Conflict, NotFound
from umsg.tokens import Principal
from umsg.web import serialize
from umsg.web.auth import actor
from umsg.web.endpoints import Ctx, json_ok
from umsg.web.errors import forbidden, invalid
from umsg.web.schemas import AgentIn, AgentStateIn, Page


async def _project_ids_of(s: AsyncSession, agent_id: int) -> list[int]:
    rows = await s.scalars(select(AgentProject.project_id).where(AgentProject.agent_id == agent_id))
    return sorted(int(p) for p in rows)


async def _load(s: AsyncSession, principal: Principal, agent_id: int) -> Agent:
    agent = await s.get(Agent, agent_id)
    if agent is None:
        raise NotFound(f"agent {agent_id} not found")
    if principal.project_ids is not None and principal.agent_id != agent_id:
        # Colleagues are visible; agents of other projects do not exist for the caller.
        if not set(await _project_ids_of(s, agent_id)) & principal.project_ids:
            raise NotFound(f"agent {agent_id} not found")
    return agent


async def _describe(s: AsyncSession, agent: Agent) -> serialize.Json:
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
    return serialize.agent(agent, list(slugs), skills)


async def list_agents(ctx: Ctx) -> web.StreamResponse:
    q = ctx.query_as(Page)
    me = ctx.me
    stmt = select(Agent).where(Agent.id > q.after_id).order_by(Agent.id).limit(q.limit)
    if me.project_ids is not None:
        colleagues = select(AgentProject.agent_id).where(AgentProject.project_id.in_(sorted(me.project_ids)))
        stmt = stmt.where(Agent.id.in_(colleagues) | (Agent.id == (me.agent_id or 0)))
    async with ctx.core.sessions() as s:
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
    return json_ok(serialize.page([serialize.agent(a, projects[a.id]) for a in agents], q.limit))


async def create_agent(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(AgentIn)
    me = ctx.me
    if body.skills and not body.projects:
        raise invalid([{"field": "body.skills", "message": "skills belong to projects; give projects too"}])
    now = utcnow()
    async with ctx.core.sessions() as s:
        if await s.scalar(select(Agent.id).where(Agent.login == body.login)) is not None:
            raise Conflict(f"an agent with login {body.login!r} already exists")
        project_ids: list[int] = []
        for i, slug in enumerate(body.projects):
            pid = await s.scalar(select(Project.id).where(Project.slug == slug))
            if pid is None or not me.sees(pid):
                raise invalid([{"field": f"body.projects[{i}]", "message": f"unknown project '{slug}'"}])
            if pid not in project_ids:
                project_ids.append(pid)
        agent = Agent(
            login=body.login,
            display_name=body.display_name,
            email=body.email,
            capacity=body.capacity,
            state="offline",
            state_since=now,
        )
        s.add(agent)
        await s.flush()
        for pid in project_ids:
            s.add(AgentProject(agent_id=agent.id, project_id=pid))
            for name, proficiency in body.skills.items():
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
            raise Conflict(f"agent {body.login!r} conflicts with a concurrent change; try again") from exc
        return json_ok(await _describe(s, agent), status=201)


async def get_agent(ctx: Ctx) -> web.StreamResponse:
    async with ctx.core.sessions() as s:
        agent = await _load(s, ctx.me, ctx.path_id("agent"))
        return json_ok(await _describe(s, agent))


async def put_agent_state(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(AgentStateIn)
    me = ctx.me
    agent_id = ctx.path_id("agent")
    if me.role == "agent" and me.agent_id != agent_id:
        raise forbidden("an agent token may only change its own state")
    if (problem := ctx.core.settings.router.check_reason(body.state, body.reason)) is not None:
        raise invalid([{"field": "body.reason", "message": problem}])
    async with ctx.core.sessions() as s:
        agent = await _load(s, me, agent_id)
        if agent.state == body.state and agent.state_reason == body.reason:
            return json_ok(await _describe(s, agent))  # idempotent: no new history row
        now = utcnow()
        previous = agent.state
        await s.execute(
            update(AgentStateHistory)
            .where(AgentStateHistory.agent_id == agent_id, AgentStateHistory.ended_at.is_(None))
            .values(ended_at=now)
        )
        s.add(AgentStateHistory(agent_id=agent_id, state=body.state, reason=body.reason, started_at=now))
        agent.state, agent.state_reason, agent.state_since = body.state, body.reason, now
        payload = {
            "agent_id": agent_id,
            "state": body.state,
            "reason": body.reason,
            "previous": previous,
            "since": serialize.ts(now),
            "by": actor(me),
        }
        # An agent in no project still has a presence; only unscoped readers see that event.
        targets: list[int | None] = [*await _project_ids_of(s, agent_id)] or [None]
        for pid in targets:
            ctx.core.events.add(s, pid, "agent.state", payload)
        await s.commit()
        ctx.core.events.notify()
        return json_ok(await _describe(s, agent))

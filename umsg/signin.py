"""Browser sessions as the web API opens, reads and ends them, and agents' passwords.

The caller (umsg.web.api.session) parses, checks roles, checks and hashes passwords (in a
thread, umsg.web.passwords) and serialises; this module runs the SQL. A browser session is
an ordinary API token bound to the agent and labelled SESSION_LABEL, so a new password can
end the agent's other sessions without touching its API tokens.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import select, update

from storage.db import SessionFactory
from storage.models import Agent, AgentProject, ApiToken, Project, WrapupCode
from storage.types import utcnow
from umsg.canned import wrapup_codes_query
from umsg.errors import NotFound
from umsg.tokens import Principal, create_token, revoke

SESSION_LABEL = "inbox session"


@dataclass(frozen=True)
class Candidate:
    """The agent a login names, before its password is checked, and the role its session gets."""

    agent: Agent
    roles: frozenset[str]  # its role in each of its projects

    @property
    def role(self) -> str:
        """`supervisor` when the agent supervises any of its projects, else `agent`."""
        return "supervisor" if "supervisor" in self.roles else "agent"


@dataclass(frozen=True)
class ProjectRef:
    id: int
    slug: str
    name: str


@dataclass(frozen=True)
class WhoAmI:
    """What the inbox needs to know about its caller: its agent (None for a bare token),
    the projects it sees by slug, and their wrap-up codes by project then code."""

    agent: Agent | None
    projects: list[ProjectRef]
    wrapup_codes: list[WrapupCode]


class SignIn:
    """Opening, reading and ending browser sessions, and setting passwords, for the web API."""

    def __init__(self, sessions: SessionFactory, readers: SessionFactory) -> None:
        self.sessions = sessions
        self.readers = readers

    async def candidate(self, login: str) -> Candidate | None:
        """The agent with this login, or None."""
        async with self.readers() as s:
            agent = await s.scalar(select(Agent).where(Agent.login == login))
            if agent is None:
                return None
            roles = await s.scalars(select(AgentProject.role).where(AgentProject.agent_id == agent.id))
            return Candidate(agent, frozenset(roles.all()))

    async def open(self, candidate: Candidate) -> str:
        """A new session token (in clear) for an agent whose password was checked."""
        return await create_token(self.sessions, candidate.role, agent_id=candidate.agent.id, label=SESSION_LABEL)

    async def close(self, token_id: int) -> None:
        """Revoke the caller's token (already revoked is fine: signing out twice is no error)."""
        await revoke(self.sessions, token_id)

    async def who(self, me: Principal) -> WhoAmI:
        """The caller's agent, projects and wrap-up codes, read in one transaction."""
        scope: Collection[int] | None = me.project_ids
        stmt = select(Project.id, Project.slug, Project.name).order_by(Project.slug)
        if scope is not None:
            stmt = stmt.where(Project.id.in_(sorted(scope)))
        async with self.readers() as s:
            agent = None if me.agent_id is None else await s.get(Agent, me.agent_id)
            projects = [ProjectRef(i, slug, name) for i, slug, name in (await s.execute(stmt)).all()]
            codes = list((await s.scalars(wrapup_codes_query(scope, per_project=True))).all())
        return WhoAmI(agent, projects, codes)

    async def set_password(self, agent_id: int, viewer: Principal, hashed: str, role: str | None) -> None:
        """Store `hashed` as the agent's password and, when given, `role` in every one of its projects.

        NotFound when the agent does not exist, or when `viewer` is tied to projects and is not
        that agent. A new password ends the agent's other browser sessions (a leaked one stops
        working) but keeps the viewer's own, in the same transaction.
        """
        async with self.sessions() as s:
            agent = await s.get(Agent, agent_id)
            if agent is None or (viewer.project_ids is not None and viewer.agent_id != agent_id):
                raise NotFound(f"agent {agent_id} not found")
            agent.password_hash = hashed
            if role is not None:
                await s.execute(update(AgentProject).where(AgentProject.agent_id == agent_id).values(role=role))
            await s.execute(
                update(ApiToken)
                .where(ApiToken.agent_id == agent_id, ApiToken.label == SESSION_LABEL,
                       ApiToken.id != viewer.token_id, ApiToken.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            await s.commit()

"""The router as the web API reads and configures it: offers, and agents' queue memberships.

The caller (umsg.web.api.router) parses, authorises and serialises; this module runs the
SQL. Settling offers and moving items stay `RouterService` commands (compare-and-swap in
umsg.router.store); what is here are the reads around them and the one configuration
write the router learns of from the event outbox: which queues an agent serves.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select

from storage.db import SessionFactory
from storage.models import AgentProject, AgentQueue, Project, RouterOffer
from umsg.conversations import Guard
from umsg.errors import NotFound, PermanentError
from umsg.events.log import EventLog

# The event that tells the router leader to reload an agent (umsg.router.service follows it).
ROUTER_AGENT = "router.agent"


class NotAgentsProject(PermanentError):
    """A queue membership names a project the agent does not work in (or the caller does not see)."""

    def __init__(self, index: int, agent_id: int, slug: str) -> None:
        self.index, self.agent_id, self.slug = index, agent_id, slug
        super().__init__(f"agent {agent_id} does not work in project '{slug}'")


@dataclass(frozen=True)
class OfferFilter:
    """Which offers a listing returns: the newest `limit`, narrowed by the fields that are set."""

    limit: int
    agent_id: int | None = None
    status: str | None = None
    project_ids: Collection[int] | None = None  # None: every project


@dataclass(frozen=True)
class Membership:
    """One queue an agent serves in one project (by slug); a lower rank is asked first."""

    project: str
    queue: str
    rank: int = 0


class RouterAdmin:
    """Reads of offers and the agents' queue memberships for the web API."""

    def __init__(self, sessions: SessionFactory, readers: SessionFactory, events: EventLog) -> None:
        self.sessions = sessions
        self.readers = readers
        self.events = events

    async def offers(self, f: OfferFilter) -> list[RouterOffer]:
        """The newest offers first."""
        stmt = select(RouterOffer).order_by(RouterOffer.id.desc()).limit(f.limit)
        if f.agent_id is not None:
            stmt = stmt.where(RouterOffer.agent_id == f.agent_id)
        if f.status is not None:
            stmt = stmt.where(RouterOffer.status == f.status)
        if f.project_ids is not None:
            stmt = stmt.where(RouterOffer.project_id.in_(sorted(f.project_ids)))
        async with self.readers() as s:
            return list((await s.scalars(stmt)).all())

    async def offer(self, offer_id: int, guard: Guard) -> RouterOffer:
        """One offer as read now; NotFound when it does not exist, whatever `guard` raises when hidden.

        A read-only session (no write lock on SQLite) is enough: the command that follows
        re-reads the offer under its compare-and-swap, so a copy changed meanwhile settles nothing.
        """
        async with self.readers() as s:
            offer = await s.get(RouterOffer, offer_id)
        if offer is None:
            raise NotFound(f"offer {offer_id} not found")
        guard(offer.project_id)
        return offer

    async def works_in(self, agent_id: int, project_id: int) -> bool:
        """Whether the agent is a member of the project (a transfer's target must be)."""
        async with self.readers() as s:
            member = await s.scalar(select(AgentProject.agent_id).where(
                AgentProject.agent_id == agent_id, AgentProject.project_id == project_id))
        return member is not None

    async def set_queues(self, agent_id: int, queues: Sequence[Membership],
                         sees: Callable[[int], bool]) -> None:
        """Replace the agent's queue memberships in the projects `sees` allows (none: it serves
        every queue of those projects); memberships in the agent's other projects stay.

        Raises NotFound when the agent is in no project the caller sees (an agent of another
        project does not exist for the caller), NotAgentsProject (naming the first offending
        membership) when one names a project the agent is not in or `sees` refuses. The change
        commits with one `router.agent` event per project of the agent, so every shard's leader
        reloads it.
        """
        async with self.sessions() as s:
            projects = {slug: pid for slug, pid in (await s.execute(select(Project.slug, Project.id))).all()}
            mine = set((await s.scalars(select(AgentProject.project_id)
                                        .where(AgentProject.agent_id == agent_id))).all())
            shared = {pid for pid in mine if sees(pid)}
            if not shared:
                raise NotFound(f"agent {agent_id} not found (or in no project)")
            rows = []
            for i, m in enumerate(queues):
                pid = projects.get(m.project)
                if pid is None or pid not in shared:
                    raise NotAgentsProject(i, agent_id, m.project)
                rows.append(AgentQueue(agent_id=agent_id, project_id=pid, queue=m.queue, rank=m.rank))
            # Only the caller's projects: a supervisor of one project never empties another's.
            await s.execute(delete(AgentQueue).where(AgentQueue.agent_id == agent_id,
                                                     AgentQueue.project_id.in_(sorted(shared))))
            s.add_all(rows)
            for pid in sorted(mine):
                self.events.add(s, pid, ROUTER_AGENT, {"agent_id": agent_id, "queues": len(rows)})
            await s.commit()
        self.events.notify()

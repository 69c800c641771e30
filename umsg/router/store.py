"""The router's side of the store: snapshots for the leader, and offers as leases.

An offer is a `RouterOffer` row plus the queue item leased to `offer:<id>`
(so the universal queue's status stays truthful: an offered item is leased);
accepting moves the lease to `agent:<id>`, the owner the queue API already
uses for agent tokens, so the agent completes the item through it. Every
transition is a compare-and-swap on the row it read, in one transaction with
its events, so settling an offer twice, or offering an item someone else took,
is impossible whichever process tries.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy import CursorResult, Select, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import SessionFactory
from storage.models import (
    Agent,
    AgentProject,
    AgentQueue,
    AgentSkill,
    AgentStateHistory,
    QueueItem,
    RouterOffer,
    RouterPin,
    Skill,
)
from storage.states import OfferStatus, QueueItemStatus
from umsg.errors import Conflict, NotFound
from umsg.events.log import EventLog
from umsg.router.settings import RouterSettings
from umsg.router.views import AgentSpec, ItemSpec, Offer

Holder = Literal["waiting", "offered", "accepted", "held", "gone"]
ProjectFilter = Callable[[int], bool]


def ts(dt: datetime) -> float:
    return dt.timestamp()


def dt(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def agent_owner(agent_id: int) -> str:
    return f"agent:{agent_id}"


def _id_after(owner: str | None, prefix: str) -> int | None:
    if owner and owner.startswith(prefix) and owner[len(prefix):].isdigit():
        return int(owner[len(prefix):])
    return None


def _rows(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


@dataclass
class ItemRow:
    """A queue item as the router sees it: its facts and who holds it."""

    spec: ItemSpec
    holder: Holder
    agent_id: int | None = None
    offer_expires: float | None = None
    pin: tuple[int, float] | None = None
    declined: dict[int, float] = field(default_factory=dict)


class RouterStore:
    def __init__(self, sessions: SessionFactory, readers: SessionFactory, events: EventLog,
                 settings: RouterSettings) -> None:
        self._sessions = sessions
        self._readers = readers
        self._events = events
        self._settings = settings

    # -- snapshots ---------------------------------------------------------------------------

    async def load_agents(self, agent_ids: Collection[int] | None, wanted: ProjectFilter) -> list[AgentSpec]:
        """Agents (all, or these ids) with their projects, skills and queues in wanted projects."""
        async with self._readers() as s:
            q = select(Agent)
            if agent_ids is not None:
                q = q.where(Agent.id.in_(sorted(agent_ids)))
            agents = list((await s.scalars(q)).all())
            ids = [a.id for a in agents]
            projects: dict[int, set[int]] = {}
            skills: dict[int, dict[tuple[int, str], int]] = {}
            queues: dict[int, dict[int, dict[str, int]]] = {}
            for chunk in _chunks(ids):
                for aid, pid in (await s.execute(select(AgentProject.agent_id, AgentProject.project_id)
                                                 .where(AgentProject.agent_id.in_(chunk)))).all():
                    if wanted(pid):
                        projects.setdefault(aid, set()).add(pid)
                rows = await s.execute(select(AgentSkill.agent_id, Skill.project_id, Skill.name,
                                              AgentSkill.proficiency)
                                       .join(Skill, Skill.id == AgentSkill.skill_id)
                                       .where(AgentSkill.agent_id.in_(chunk)))
                for aid, pid, name, prof in rows.all():
                    skills.setdefault(aid, {})[(pid, name)] = prof
                rows = await s.execute(select(AgentQueue.agent_id, AgentQueue.project_id, AgentQueue.queue,
                                              AgentQueue.rank).where(AgentQueue.agent_id.in_(chunk)))
                for aid, pid, qname, rank in rows.all():
                    queues.setdefault(aid, {}).setdefault(pid, {})[qname] = rank
        out = []
        for a in agents:
            until = None
            if a.state == "after_work":
                until = ts(a.state_since) + self._settings.after_work_seconds
            out.append(AgentSpec(id=a.id, capacity=a.capacity, state=a.state,
                                 projects=frozenset(projects.get(a.id, ())), skills=skills.get(a.id, {}),
                                 queues=queues.get(a.id, {}), state_until=until))
        return out

    async def load_items(
        self, now: datetime, wanted: ProjectFilter, *, item_ids: Collection[int] | None = None,
        conversation_ids: Collection[int] | None = None, project_id: int | None = None,
    ) -> list[ItemRow]:
        """Items by id (any status), or the open (waiting/leased) ones of conversations or projects."""
        q: Select[Any] = select(QueueItem)
        if item_ids is not None:
            q = q.where(QueueItem.id.in_(sorted(item_ids)))
        else:
            q = q.where(QueueItem.status.in_((QueueItemStatus.WAITING, QueueItemStatus.LEASED)))
            if conversation_ids is not None:
                q = q.where(QueueItem.conversation_id.in_(sorted(conversation_ids)))
            if project_id is not None:
                q = q.where(QueueItem.project_id == project_id)
        async with self._readers() as s:
            found: Sequence[QueueItem] = (await s.scalars(q.order_by(QueueItem.id))).all()
            items = [i for i in found if wanted(i.project_id)]
            return await self._describe(s, items, now)

    async def _describe(self, s: AsyncSession, items: Sequence[QueueItem], now: datetime) -> list[ItemRow]:
        ids = [i.id for i in items]
        offer_ids = [o for i in items if (o := _id_after(i.lease_owner, "offer:")) is not None]
        offers: dict[int, RouterOffer] = {}
        pins: dict[int, RouterPin] = {}
        declined: dict[int, dict[int, float]] = {}
        block = timedelta(seconds=self._settings.decline_block_seconds)
        for chunk in _chunks(offer_ids):
            offers.update({o.id: o for o in (await s.scalars(select(RouterOffer)
                                                              .where(RouterOffer.id.in_(chunk)))).all()})
        for chunk in _chunks(ids):
            pins.update({p.item_id: p for p in (await s.scalars(select(RouterPin)
                                                                .where(RouterPin.item_id.in_(chunk)))).all()})
            rows = await s.execute(select(RouterOffer.item_id, RouterOffer.agent_id, RouterOffer.decided_at)
                                   .where(RouterOffer.item_id.in_(chunk),
                                          RouterOffer.status.in_((OfferStatus.DECLINED, OfferStatus.TIMED_OUT)),
                                          RouterOffer.decided_at > now - block))
            for item_id, agent_id, decided in rows.all():
                if decided is None:
                    continue
                declined.setdefault(item_id, {})[agent_id] = ts(decided + block)
        waiting = [i for i in items if i.status == QueueItemStatus.WAITING and i.id not in pins]
        last = await self._last_agents(s, waiting, now)
        out = []
        for i in items:
            spec = ItemSpec(i.id, i.project_id, i.queue, i.channel, i.priority, dict(i.skills),
                            ts(i.enqueued_at), i.conversation_id)
            row = ItemRow(spec, "gone", declined=declined.get(i.id, {}))
            if i.status == QueueItemStatus.WAITING:
                row.holder = "waiting"
                pin = pins.get(i.id)
                row.pin = (pin.agent_id, ts(pin.until)) if pin is not None else last.get(i.id)
            elif i.status == QueueItemStatus.LEASED:
                offer = offers.get(_id_after(i.lease_owner, "offer:") or 0)
                accepted = _id_after(i.lease_owner, "agent:")
                if offer is not None and offer.status == OfferStatus.OFFERED:
                    row.holder, row.agent_id, row.offer_expires = "offered", offer.agent_id, ts(offer.expires_at)
                elif accepted is not None:
                    row.holder, row.agent_id = "accepted", accepted
                else:
                    row.holder = "held"
            out.append(row)
        return out

    async def _last_agents(self, s: AsyncSession, items: list[QueueItem], now: datetime
                           ) -> dict[int, tuple[int, float]]:
        """Last-agent pins: who accepted an earlier item of the same conversation, recently."""
        wait = self._settings.last_agent_wait_seconds
        if wait <= 0 or not items:
            return {}
        since = now - timedelta(seconds=self._settings.last_agent_memory_seconds)
        by_conv: dict[int, tuple[datetime, int]] = {}
        for chunk in _chunks(sorted({i.conversation_id for i in items})):
            rows = await s.execute(select(RouterOffer.conversation_id, RouterOffer.decided_at, RouterOffer.agent_id)
                                   .where(RouterOffer.conversation_id.in_(chunk),
                                          RouterOffer.status == OfferStatus.ACCEPTED,
                                          RouterOffer.decided_at > since))
            for conv, decided, agent_id in rows.all():
                if decided is None:
                    continue
                if conv not in by_conv or decided > by_conv[conv][0]:
                    by_conv[conv] = (decided, agent_id)
        return {i.id: (by_conv[i.conversation_id][1], ts(i.enqueued_at) + wait)
                for i in items if i.conversation_id in by_conv}

    # -- offers ------------------------------------------------------------------------------

    async def record_offers(self, offers: Sequence[tuple[Offer, ItemSpec]], now: datetime) -> set[int]:
        """Persist decisions in one transaction; returns the item ids whose CAS lost (not offered)."""
        lost: set[int] = set()
        grace = timedelta(seconds=self._settings.offer_lease_grace_seconds)
        async with self._sessions() as s:
            rows = [RouterOffer(project_id=spec.project_id, item_id=o.item_id, conversation_id=spec.conversation_id,
                                agent_id=o.agent_id, status=OfferStatus.OFFERED, why=o.why, created_at=now,
                                expires_at=dt(o.expires)) for o, spec in offers]
            s.add_all(rows)
            await s.flush()
            for row, (o, spec) in zip(rows, offers, strict=True):
                owner = f"offer:{row.id}"
                res = await s.execute(update(QueueItem)
                                      .where(QueueItem.id == o.item_id, QueueItem.status == QueueItemStatus.WAITING)
                                      .values(status=QueueItemStatus.LEASED, lease_owner=owner, agent_id=o.agent_id,
                                              lease_until=dt(o.expires) + grace, updated_at=now)
                                      .execution_options(synchronize_session=False))
                if _rows(res) != 1:
                    lost.add(o.item_id)
                    await s.delete(row)
                    continue
                await s.execute(delete(RouterPin).where(RouterPin.item_id == o.item_id))
                facts = {"item_id": o.item_id, "conversation_id": spec.conversation_id, "queue": spec.queue,
                         "channel": spec.channel, "status": QueueItemStatus.LEASED, "owner": owner}
                self._events.add(s, spec.project_id, "queue.claimed", facts)
                self._events.add(s, spec.project_id, "router.offered",
                                 {"offer_id": row.id, "item_id": o.item_id, "agent_id": o.agent_id,
                                  "expires_at": dt(o.expires).isoformat()})
            await s.commit()
        self._events.notify()
        return lost

    async def accept(self, offer_id: int, agent_id: int | None, now: datetime) -> RouterOffer:
        """The agent takes the offer: the lease moves to `agent:<id>` (compare-and-swap)."""
        async with self._sessions() as s:
            offer = await self._open_offer(s, offer_id, agent_id, now)
            lease = now + timedelta(seconds=self._settings.work_lease_seconds)
            await self._settle(s, offer, OfferStatus.ACCEPTED, now, None,
                               dict(lease_owner=agent_owner(offer.agent_id), lease_until=lease, updated_at=now))
            self._events.add(s, offer.project_id, "router.accepted",
                             {"offer_id": offer.id, "item_id": offer.item_id, "agent_id": offer.agent_id})
            await s.commit()
        self._events.notify()
        return offer

    async def decline(self, offer_id: int, agent_id: int | None, now: datetime, reason: str | None) -> RouterOffer:
        """The agent refuses: the item waits again with its original age."""
        async with self._sessions() as s:
            offer = await self._open_offer(s, offer_id, agent_id, now, allow_expired=True)
            await self._settle(s, offer, OfferStatus.DECLINED, now, reason, _back_to_waiting(now))
            self._released(s, offer, "declined")
            await s.commit()
        self._events.notify()
        return offer

    async def time_out(self, item_id: int, agent_id: int, now: datetime) -> bool:
        """The leader's timeout: settle the open offer, re-queue the item, mark the agent missed."""
        async with self._sessions() as s:
            offer = await s.scalar(select(RouterOffer).where(RouterOffer.item_id == item_id,
                                                             RouterOffer.agent_id == agent_id,
                                                             RouterOffer.status == OfferStatus.OFFERED))
            if offer is None:
                return False
            res = await s.execute(update(RouterOffer).where(RouterOffer.id == offer.id,
                                                            RouterOffer.status == OfferStatus.OFFERED)
                                  .values(status=OfferStatus.TIMED_OUT, decided_at=now,
                                          reason=self._settings.missed_reason))
            if _rows(res) != 1:
                await s.rollback()
                return False
            # The generic lease sweeper may have re-queued it already; that is the same outcome.
            await s.execute(update(QueueItem).where(QueueItem.id == item_id, QueueItem.status == QueueItemStatus.LEASED,
                                                    QueueItem.lease_owner == f"offer:{offer.id}")
                            .values(**_back_to_waiting(now)).execution_options(synchronize_session=False))
            self._released(s, offer, "offer timed out")
            await self.set_agent_state(s, agent_id, "missed", self._settings.missed_reason, now,
                                       only_from=("available",))
            await s.commit()
        self._events.notify()
        return True

    async def _open_offer(self, s: AsyncSession, offer_id: int, agent_id: int | None, now: datetime,
                          allow_expired: bool = False) -> RouterOffer:
        offer = await s.get(RouterOffer, offer_id)
        if offer is None:
            raise NotFound(f"offer {offer_id} not found")
        if agent_id is not None and offer.agent_id != agent_id:
            raise Conflict(f"offer {offer_id} was made to agent {offer.agent_id}, not {agent_id}")
        if offer.status != OfferStatus.OFFERED:
            raise Conflict(f"offer {offer_id} is already {offer.status}")
        if not allow_expired and offer.expires_at <= now:
            raise Conflict(f"offer {offer_id} expired at {offer.expires_at.isoformat()}")
        return offer

    async def _settle(self, s: AsyncSession, offer: RouterOffer, status: str, now: datetime,
                      reason: str | None, item_values: dict[str, Any]) -> None:
        res = await s.execute(update(RouterOffer)
                              .where(RouterOffer.id == offer.id, RouterOffer.status == OfferStatus.OFFERED)
                              .values(status=status, decided_at=now, reason=reason))
        res2 = await s.execute(update(QueueItem).where(QueueItem.id == offer.item_id,
                                                       QueueItem.status == QueueItemStatus.LEASED,
                                                       QueueItem.lease_owner == f"offer:{offer.id}")
                               .values(**item_values).execution_options(synchronize_session=False))
        if _rows(res) != 1 or _rows(res2) != 1:
            await s.rollback()
            raise Conflict(f"offer {offer.id} changed meanwhile (timed out or settled); nothing was changed")
        offer.status, offer.decided_at, offer.reason = status, now, reason

    def _released(self, s: AsyncSession, offer: RouterOffer, reason: str) -> None:
        self._events.add(s, offer.project_id, "queue.released",
                         {"item_id": offer.item_id, "conversation_id": offer.conversation_id,
                          "status": QueueItemStatus.WAITING, "reason": reason, "owner": f"offer:{offer.id}"})
        self._events.add(s, offer.project_id, f"router.{offer.status}",
                         {"offer_id": offer.id, "item_id": offer.item_id, "agent_id": offer.agent_id})

    # -- transfers, logout, presence -----------------------------------------------------------

    async def requeue(self, item_id: int, now: datetime, reason: str, *, queue: str | None = None,
                      pin_agent: int | None = None, only_agent: int | None = None) -> QueueItem:
        """Back to waiting with the original age (maybe in another queue, maybe pinned to an agent)."""
        async with self._sessions() as s:
            item = await s.get(QueueItem, item_id)
            if item is None:
                raise NotFound(f"queue item {item_id} not found")
            if item.status not in (QueueItemStatus.WAITING, QueueItemStatus.LEASED):
                raise Conflict(f"queue item {item_id} is {item.status}; only open items can move")
            owner = item.lease_owner
            if only_agent is not None and item.agent_id != only_agent and owner != agent_owner(only_agent):
                raise Conflict(f"queue item {item_id} is not held by agent {only_agent}")
            values = _back_to_waiting(now)
            if queue is not None:
                values["queue"] = queue
            res = await s.execute(update(QueueItem).where(
                QueueItem.id == item_id, QueueItem.status == item.status,
                QueueItem.lease_owner.is_(None) if owner is None else QueueItem.lease_owner == owner,
            ).values(**values).execution_options(synchronize_session=False))
            if _rows(res) != 1:
                await s.rollback()
                raise Conflict(f"queue item {item_id} changed meanwhile; try again")
            offer_id = _id_after(owner, "offer:")
            if offer_id is not None:
                await s.execute(update(RouterOffer)
                                .where(RouterOffer.id == offer_id, RouterOffer.status == OfferStatus.OFFERED)
                                .values(status=OfferStatus.REVOKED, decided_at=now, reason=reason))
            await s.execute(delete(RouterPin).where(RouterPin.item_id == item_id))
            if pin_agent is not None:
                until = now + timedelta(seconds=self._settings.transfer_pin_seconds)
                s.add(RouterPin(item_id=item_id, agent_id=pin_agent, until=until, kind="transfer"))
            facts = {"item_id": item_id, "conversation_id": item.conversation_id, "status": QueueItemStatus.WAITING,
                     "reason": reason, "owner": owner, "queue": values.get("queue", item.queue),
                     "to_agent": pin_agent}
            self._events.add(s, item.project_id, "queue.released", facts)
            await s.commit()
            await s.refresh(item)
        self._events.notify()
        return item

    async def set_agent_state(self, s: AsyncSession, agent_id: int, state: str, reason: str | None,
                              now: datetime, only_from: Collection[str] | None = None) -> bool:
        """Presence change by the router itself (missed, after-work end), with history and event."""
        agent = await s.get(Agent, agent_id)
        if agent is None or (only_from is not None and agent.state not in only_from):
            return False
        previous = agent.state
        await s.execute(update(AgentStateHistory).where(AgentStateHistory.agent_id == agent_id,
                                                        AgentStateHistory.ended_at.is_(None)).values(ended_at=now))
        s.add(AgentStateHistory(agent_id=agent_id, state=state, reason=reason, started_at=now))
        agent.state, agent.state_reason, agent.state_since = state, reason, now
        pids = (await s.scalars(select(AgentProject.project_id).where(AgentProject.agent_id == agent_id))).all()
        payload = {"agent_id": agent_id, "state": state, "reason": reason, "previous": previous,
                   "since": now.isoformat(), "by": "router"}
        targets: list[int | None] = [*pids] or [None]
        for pid in targets:
            self._events.add(s, pid, "agent.state", payload)
        return True

    async def end_after_work(self, agent_id: int, now: datetime) -> None:
        async with self._sessions() as s:
            if await self.set_agent_state(s, agent_id, "available", "after_work_done", now, only_from=("after_work",)):
                await s.commit()
                self._events.notify()

    async def heartbeat(self, agent_id: int, now: datetime, project_ids: Collection[int] | None = None) -> int:
        """Renew the leases the agent holds (only those of `project_ids` when given: a supervisor
        renews only its own projects' items); an agent who stops calling loses its items to the sweeper."""
        lease = now + timedelta(seconds=self._settings.work_lease_seconds)
        held = update(QueueItem).where(QueueItem.status == QueueItemStatus.LEASED,
                                       QueueItem.lease_owner == agent_owner(agent_id))
        if project_ids is not None:
            held = held.where(QueueItem.project_id.in_(sorted(project_ids)))
        async with self._sessions() as s:
            res = await s.execute(held.values(lease_until=lease).execution_options(synchronize_session=False))
            await s.commit()
        return _rows(res)

    async def offers_of(self, item_id: int) -> list[RouterOffer]:
        async with self._readers() as s:
            q = select(RouterOffer).where(RouterOffer.item_id == item_id).order_by(RouterOffer.id)
            return list((await s.scalars(q)).all())


def _back_to_waiting(now: datetime) -> dict[str, Any]:
    return {"status": QueueItemStatus.WAITING, "lease_owner": None, "lease_until": None, "agent_id": None,
            "updated_at": now}


def _chunks(ids: Sequence[int], size: int = 500) -> list[list[int]]:
    return [list(ids[i:i + size]) for i in range(0, len(ids), size)]

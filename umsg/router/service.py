"""The router service: one leader task per shard, plus the commands the API calls.

The leader rebuilds its `Engine` from the store when it takes the role, then
loops: follow the event outbox (re-reading every item and agent an event
names, so it converges on the store's truth whoever made the change), fire
due timers, decide, and persist the decisions as offers. Commands (accept,
decline, transfer, heartbeat) may run in any process: they change the store
by compare-and-swap and the leader learns of them from the outbox.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from storage.db import SessionFactory
from storage.models import QueueItem, RouterOffer
from storage.types import utcnow
from umsg.errors import Conflict, NotFound
from umsg.events.log import EventLog
from umsg.router.engine import Engine
from umsg.router.explain import explain
from umsg.router.leader import Leadership
from umsg.router.settings import RouterSettings
from umsg.router.store import ItemRow, RouterStore, ts
from umsg.router.views import ItemSpec, Offer, Released

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
_EVENT_PAGE = 1000


def apply_row(engine: Engine, row: ItemRow, now: float) -> None:
    """Make the engine agree with what the store says about one item."""
    spec = row.spec
    item = engine.items.get(spec.id)
    if row.holder == "gone":
        engine.remove_item(spec.id, now)
        return
    if item is not None and item.spec != spec and row.holder == "waiting":
        engine.remove_item(spec.id, now)  # moved to another queue while waiting: place it afresh
        item = None
    if item is None:
        item = engine.add_item(spec, now, row.pin if row.holder == "waiting" else None)
        _declined(engine, row)
        if row.holder == "held" or (row.agent_id is not None and row.agent_id not in engine.agents):
            engine.hold(spec.id, now)
        elif row.holder in ("offered", "accepted") and row.agent_id is not None:
            engine.set_offered(spec.id, row.agent_id, row.offer_expires if row.holder == "offered" else None)
        return
    _declined(engine, row)
    if row.holder == "waiting":
        pinned = row.pin is not None and row.pin[1] > now
        if item.status not in ("waiting", "pinned") or (pinned and item.status != "pinned"):
            engine.requeue(spec.id, now, pin=row.pin if pinned else None)
    elif row.holder == "held":
        if item.status != "held":
            engine.hold(spec.id, now)
    elif row.agent_id is not None and row.agent_id in engine.agents:
        want = "offered" if row.holder == "offered" else "accepted"
        if item.status != want or item.agent_id != row.agent_id:
            engine.set_offered(spec.id, row.agent_id, row.offer_expires if want == "offered" else None)
    else:
        engine.hold(spec.id, now)


def _declined(engine: Engine, row: ItemRow) -> None:
    for agent_id, until in row.declined.items():
        engine.note_declined(row.spec.id, agent_id, until)


class RouterService:
    def __init__(self, sessions: SessionFactory, readers: SessionFactory, events: EventLog, db: AsyncEngine,
                 settings: RouterSettings, schema: str | None = None, clock: Clock = utcnow) -> None:
        self.settings = settings
        self.store = RouterStore(sessions, readers, events, settings)
        self._events = events
        self._db = db
        self._schema = schema
        self._clock = clock
        self._leading: dict[int, Engine] = {}  # shard -> live engine, while this process leads it

    def shard_of(self, project_id: int) -> int:
        return project_id % self.settings.shards

    # -- the background task ---------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Compete for (and exercise) the router role of every shard until `stop`."""
        if not self.settings.enabled:
            await stop.wait()
            return
        await asyncio.gather(*(self._shard(i, stop) for i in range(self.settings.shards)))

    async def _shard(self, shard: int, stop: asyncio.Event) -> None:
        lock = Leadership(self._db, self._schema, shard)
        try:
            while not stop.is_set():
                if await lock.try_acquire():
                    log.info("router role taken", extra={"kv": {"shard": shard}})
                    try:
                        await self.lead(shard, lock, stop)
                    finally:
                        self._leading.pop(shard, None)
                        await lock.close()
                    continue
                await _wait_or_stop(stop, self.settings.leader_poll_seconds)
        finally:
            await lock.close()

    async def lead(self, shard: int, lock: Leadership, stop: asyncio.Event) -> None:
        cursor = await self._events.latest_id()  # before the snapshot: nothing slips between
        engine = await self.snapshot(lambda p: self.shard_of(p) == shard)
        self._leading[shard] = engine
        while not stop.is_set() and await lock.alive():
            cursor = await self.sync(engine, shard, cursor)
            await self.step(engine)
            now = ts(self._clock())
            due = engine.next_timer()
            wait = self.settings.sync_poll_seconds if due is None else min(self.settings.sync_poll_seconds,
                                                                           max(0.0, due - now))
            if wait > 0:
                await self._events.wait(wait)

    async def snapshot(self, wanted: Callable[[int], bool], project_id: int | None = None) -> Engine:
        """A fresh engine holding the store's agents and open items (of one project, if given)."""
        now = self._clock()
        engine = Engine(self.settings)
        if project_id is not None:
            wanted = (lambda p: p == project_id)  # noqa: E731 - narrows the caller's filter
        for spec in await self.store.load_agents(None, wanted):
            engine.upsert_agent(spec, ts(now))
        for row in await self.store.load_items(now, wanted, project_id=project_id):
            apply_row(engine, row, ts(now))
        return engine

    async def sync(self, engine: Engine, shard: int, cursor: int) -> int:
        """Apply every event after `cursor` by re-reading what it names; returns the new cursor."""
        items: set[int] = set()
        convs: set[int] = set()
        agents: set[int] = set()
        while True:
            page = await self._events.since(cursor, None, limit=_EVENT_PAGE)
            for ev in page:
                cursor = ev.id
                if ev.project_id is not None and self.shard_of(ev.project_id) != shard:
                    continue
                p = ev.payload
                if ev.kind == "agent.state" or ev.kind == "router.agent":
                    agents.add(int(p["agent_id"]))
                elif ev.kind == "queue.enqueued" and "conversation_id" in p:
                    convs.add(int(p["conversation_id"]))
                elif (ev.kind.startswith("queue.") or ev.kind.startswith("router.")) and "item_id" in p:
                    items.add(int(p["item_id"]))
            if len(page) < _EVENT_PAGE:
                break
        now = self._clock()
        wanted: Callable[[int], bool] = lambda p: self.shard_of(p) == shard  # noqa: E731
        if agents:
            await self._apply_agents(engine, agents, wanted, now)
        rows: list[ItemRow] = []
        if items:
            rows += await self.store.load_items(now, wanted, item_ids=items)
        if convs:
            rows += [r for r in await self.store.load_items(now, wanted, conversation_ids=convs)
                     if r.spec.id not in engine.items and r.spec.id not in items]
        for row in rows:
            apply_row(engine, row, ts(now))
        return cursor

    async def _apply_agents(self, engine: Engine, ids: Collection[int], wanted: Callable[[int], bool],
                            now: datetime) -> None:
        for spec in await self.store.load_agents(ids, wanted):
            for r in engine.upsert_agent(spec, ts(now)):
                await self._follow(engine, r, now)

    async def step(self, engine: Engine) -> int:
        """Fire due timers and persist what the engine decides; returns offers made."""
        now = self._clock()
        for r in engine.tick(ts(now)):
            await self._follow(engine, r, now)
        for agent_id in engine.take_state_changes():
            await self.store.end_after_work(agent_id, now)
        offers = engine.decide(ts(now))
        if not offers:
            return 0
        pairs: list[tuple[Offer, ItemSpec]] = [(o, engine.items[o.item_id].spec) for o in offers]
        lost = await self.store.record_offers(pairs, now)
        if lost:
            # Someone changed these items under us: believe the store.
            for row in await self.store.load_items(now, lambda p: True, item_ids=lost):
                apply_row(engine, row, ts(now))
        return len(offers) - len(lost)

    async def _follow(self, engine: Engine, r: Released, now: datetime) -> None:
        """Persist a release the engine already made; on a lost race re-read the truth."""
        try:
            if r.reason == "timeout":
                done = await self.store.time_out(r.item_id, r.agent_id, now)
            else:
                await self.store.requeue(r.item_id, now, r.reason, only_agent=r.agent_id)
                done = True
        except (Conflict, NotFound):
            done = False
        if not done:
            for row in await self.store.load_items(now, lambda p: True, item_ids=[r.item_id]):
                apply_row(engine, row, ts(now))
            await self._apply_agents(engine, [r.agent_id], lambda p: True, now)

    # -- commands (any process) ---------------------------------------------------------------

    async def accept(self, offer_id: int, agent_id: int | None) -> RouterOffer:
        return await self.store.accept(offer_id, agent_id, self._clock())

    async def decline(self, offer_id: int, agent_id: int | None, reason: str | None = None) -> RouterOffer:
        return await self.store.decline(offer_id, agent_id, self._clock(), reason)

    async def transfer(self, item_id: int, *, agent_id: int | None = None, queue: str | None = None) -> QueueItem:
        if (agent_id is None) == (queue is None):
            raise Conflict("a transfer names exactly one target: agent_id or queue")
        return await self.store.requeue(item_id, self._clock(), "transfer", queue=queue, pin_agent=agent_id)

    async def heartbeat(self, agent_id: int, project_ids: Collection[int] | None = None) -> int:
        """Renew the agent's item leases (in `project_ids` only, when given); how many were renewed."""
        return await self.store.heartbeat(agent_id, self._clock(), project_ids)

    async def explain(self, item: QueueItem) -> dict[str, Any]:
        """Why the item waits or went where it went (live engine if leading, else a fresh snapshot)."""
        engine = self._leading.get(self.shard_of(item.project_id))
        if engine is None:
            engine = await self.snapshot(lambda p: True, project_id=item.project_id)
        out = explain(engine, item.id, ts(self._clock()))
        out["queue_status"] = item.status
        out["router_leader_here"] = self.shard_of(item.project_id) in self._leading
        out["offers"] = [{"id": o.id, "agent_id": o.agent_id, "status": o.status, "reason": o.reason,
                          "why": o.why, "created_at": o.created_at.isoformat(),
                          "decided_at": o.decided_at.isoformat() if o.decided_at else None}
                         for o in await self.store.offers_of(item.id)]
        return out


async def _wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return

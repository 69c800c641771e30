"""The decision core: picks an (item, agent) pair in O(log n) and keeps offers' lifecycle.

`Engine` adds the commands and the policy to `PoolIndex` (umsg.router.indexes):
deciding walks the ready heap in global effective-time order and, per pool,
takes the strategy's best agent with room from the heads of the few agent
heaps that serve the pool; pinned items (last agent, transfer
to an agent) are offered to their agent first; a timer heap drives offer
timeouts (the agent goes to "missed"), pin expiry, relaxation steps,
decline blocks and after-work. The engine never reads a clock and never does
I/O: callers pass `now`, and the service persists what it decides.
"""

from __future__ import annotations

from heapq import heappop, heappush
from typing import Any

from umsg.errors import Conflict
from umsg.router.indexes import AgentEntry, ItemEntry, Pool, PoolIndex
from umsg.router.views import OFFERABLE_STATES, AgentSpec, AgentView, ItemSpec, ItemView, Offer, Released


class Engine(PoolIndex):
    """Decides which agent gets which item; commands keep it in step with the store."""

    def upsert_agent(self, spec: AgentSpec, now: float) -> list[Released]:
        """Add or replace an agent's facts (skills, projects, queues, capacity) and state."""
        a = self.agents.get(spec.id)
        if a is None:
            a = AgentView(spec=spec, state="offline", idle_since=now)
            self.agents[spec.id] = a
        else:
            for p in a.spec.projects - spec.projects:
                self._by_project.get(p, set()).discard(a.id)
            a.spec = spec
        for p in spec.projects:
            self._by_project.setdefault(p, set()).add(a.id)
        self._refamily(a)  # set_state below pushes its entries
        released = self.set_state(a.id, spec.state, now, spec.state_until)
        return released

    def set_state(self, agent_id: int, state: str, now: float, until: float | None = None) -> list[Released]:
        """Change presence; going offline gives back everything the agent holds."""
        a = self._agent(agent_id)
        released: list[Released] = []
        if state in OFFERABLE_STATES and a.state not in OFFERABLE_STATES:
            a.idle_since = now
        a.state, a.state_until = state, until
        if until is not None:
            self._timer(until, "state", agent_id, 0)
        if state == "offline":
            for item_id in sorted(a.holding):
                released.append(Released(item_id, agent_id, "logout"))
                self._release_held(self.items[item_id], now)
        self._touch(a)
        return released

    def add_item(self, spec: ItemSpec, now: float, pin: tuple[int, float] | None = None) -> ItemView:
        """A new waiting item; `pin` = (agent, until) reserves it for that agent first."""
        if spec.id in self.items:
            raise Conflict(f"queue item {spec.id} is already known to the router")
        item = ItemView(spec=spec, eff=self._eff(spec))
        self.items[spec.id] = item
        self._wait(item, now, pin)
        return item

    def _wait(self, item: ItemView, now: float, pin: tuple[int, float] | None = None) -> None:
        if pin is not None and pin[1] > now:
            item.status, item.pin_agent, item.pin_until = "pinned", pin[0], pin[1]
            item.version += 1
            heappush(self._pinned.setdefault(pin[0], []), (item.eff, item.id, item.version))
            self._timer(pin[1], "pin", item.id, item.version)
            self._pin_dirty.add(pin[0])
        else:
            self._place(item, now)

    def remove_item(self, item_id: int, now: float) -> None:
        """The item left the queue (done, dead) or was taken outside the router."""
        item = self.items.pop(item_id, None)
        if item is None:
            return
        self._unwait(item)
        if item.agent_id is not None:
            self._free(item, now, finished=True)

    def hold(self, item_id: int, now: float) -> None:
        """Leased by someone other than the router's offers (a manual claim): not routable."""
        item = self._item(item_id)
        self._unwait(item)
        if item.agent_id is not None:
            self._free(item, now, finished=False)
        item.status = "held"

    def _free(self, item: ItemView, now: float, finished: bool) -> None:
        a = self.agents.get(item.agent_id) if item.agent_id is not None else None
        item.agent_id, item.offer_expires = None, None
        if a is None or item.id not in a.holding:
            return
        a.holding.discard(item.id)
        a.load -= self.settings.cost(item.spec.channel)
        a.per_channel[item.spec.channel] -= 1
        if finished:
            a.idle_since = now  # finishing work counts as activity for "longest idle"
        self._touch(a)

    def _release_held(self, item: ItemView, now: float, pin: tuple[int, float] | None = None) -> None:
        self._free(item, now, finished=False)
        self._unwait(item)
        self._wait(item, now, pin)

    def accept(self, item_id: int, agent_id: int) -> None:
        item = self._item(item_id)
        if item.status != "offered" or item.agent_id != agent_id:
            raise Conflict(f"queue item {item_id} is not offered to agent {agent_id}")
        item.status, item.offer_expires = "accepted", None
        item.version += 1

    def decline(self, item_id: int, agent_id: int, now: float) -> None:
        item = self._item(item_id)
        if item.status not in ("offered", "accepted") or item.agent_id != agent_id:
            raise Conflict(f"queue item {item_id} is not held by agent {agent_id}")
        self._block(item, agent_id, now)
        self._release_held(item, now)

    def _block(self, item: ItemView, agent_id: int, now: float) -> None:
        self.note_declined(item.id, agent_id, now + self.settings.decline_block_seconds)

    def note_declined(self, item_id: int, agent_id: int, until: float) -> None:
        """`agent_id` declined (or let time out) this item: skip them for it until `until`."""
        item = self._item(item_id)
        if until > item.declined.get(agent_id, 0.0):
            item.declined[agent_id] = until
            self._timer(until, "unblock", item_id, 0)

    def requeue(
        self, item_id: int, now: float, *, queue: str | None = None, pin: tuple[int, float] | None = None
    ) -> None:
        """Transfer or unassign: back to waiting with its original age, maybe in another queue."""
        item = self._item(item_id)
        if queue is not None and queue != item.spec.queue:
            old = item.spec
            item.spec = ItemSpec(old.id, old.project_id, queue, old.channel, old.priority, old.skills,
                                 old.enqueued_at, old.conversation_id)
            item.eff = self._eff(item.spec)
        self._release_held(item, now, pin)

    def set_offered(self, item_id: int, agent_id: int, expires: float | None) -> None:
        """Make the engine agree with the store: the item is offered (expires) or accepted (None)."""
        item = self._item(item_id)
        a = self._agent(agent_id)
        if item.agent_id == agent_id:
            self._unwait(item)
        else:
            if item.agent_id is not None:
                self._free(item, 0.0, finished=False)
            self._unwait(item)
            self._assign(item, a)
            self._touch(a, gained=False)
        item.status = "offered" if expires is not None else "accepted"
        item.offer_expires = expires
        if expires is not None:
            self._timer(expires, "offer", item.id, item.version)

    def _assign(self, item: ItemView, a: AgentView) -> None:
        item.agent_id = a.id
        a.holding.add(item.id)
        a.load += self.settings.cost(item.spec.channel)
        a.per_channel[item.spec.channel] += 1
        a.rr_seq = next(self._rr)

    def _offer(self, item: ItemView, a: AgentView, now: float, why: dict[str, Any]) -> Offer:
        self._unwait(item)
        self._assign(item, a)
        a.idle_since = now
        expires = now + self.settings.offer_timeout_seconds
        item.status, item.offer_expires = "offered", expires
        self._timer(expires, "offer", item.id, item.version)
        self._touch(a, gained=False)
        return Offer(item.id, a.id, expires, why)

    def decide(self, now: float, limit: int | None = None) -> list[Offer]:
        """Make every offer that can be made now (at most `limit`), best items first."""
        out: list[Offer] = []
        self._decide_pins(now, out, limit)
        ready = self._ready
        while ready and (limit is None or len(out) < limit):
            eff, _, pool = heappop(ready)
            if pool.marked != eff:
                continue  # superseded by a newer entry for this pool
            pool.marked = None
            self._serve(pool, now, out)
            if self._pin_dirty:
                self._decide_pins(now, out, limit)
        return out

    def _serve(self, pool: Pool, now: float, out: list[Offer]) -> None:
        """Offer the pool's best item that some agent can take, unless another pool's is older."""
        aside: list[ItemEntry] = []
        heap = pool.items
        others = self._ready[0][0] if self._ready else float("inf")
        served = False
        while (head := self._head(pool)) is not None:
            if head.eff > others:
                break  # an older item of another pool goes first; this pool is marked again below
            agent, excluded = self._best_agent(pool, head, now)
            if agent is not None:
                why = {"step": "strategy", "strategy": pool.kind[0], "eligible_agents": pool.eligible(),
                       "relax_level": head.relax_level, "requirement": dict(pool.req),
                       "declined_by": len(head.declined)}
                out.append(self._offer(head, agent, now, why))
                served = True
                break
            if not excluded:
                break  # nobody can take it: the pool waits until one of its agents changes
            aside.append(heappop(heap))  # every fitting agent declined this one: try the next
        if head is not None and not served and head.eff > others:
            pool.marked = head.eff
            heappush(self._ready, (head.eff, next(self._seq), pool))
        for entry in aside:
            heappush(heap, entry)
        if served:
            self._mark(pool)
        elif pool.marked is None and pool.waiting:
            self._park(pool)

    def _best_agent(self, pool: Pool, item: ItemView, now: float) -> tuple[AgentView | None, bool]:
        """The strategy's best agent with room for the item; also whether a decliner was skipped.

        A k-way look at the heads of the pool's agent heaps (its families' bands with room):
        stale entries are dropped as they surface; an agent at its channel cap or who declined
        the item is set aside and the next best is looked at.
        """
        heaps = pool.heaps
        channel = pool.channel
        cap = self.settings.channel_caps.get(channel)
        declined_by = item.declined
        stash: list[tuple[list[AgentEntry], AgentEntry]] = []
        declined = False
        found: AgentView | None = None
        while True:
            best: AgentEntry | None = None
            best_heap = heaps[0] if heaps else []
            for h in heaps:
                while h:
                    e = h[0]
                    if e[4].version == e[2]:
                        if best is None or e < best:
                            best, best_heap = e, h
                        break
                    heappop(h)
            if best is None:
                break
            a = best[4]
            if cap is not None and a.per_channel[channel] >= cap:
                stash.append((best_heap, heappop(best_heap)))  # only this channel's cap is reached
                continue
            if declined_by and declined_by.get(a.id, 0.0) > now:
                declined = True
                stash.append((best_heap, heappop(best_heap)))
                continue
            found = a
            break
        for h, e in stash:
            heappush(h, e)
        return found, declined

    def _decide_pins(self, now: float, out: list[Offer], limit: int | None) -> None:
        while self._pin_dirty and (limit is None or len(out) < limit):
            agent_id = self._pin_dirty.pop()
            heap = self._pinned.get(agent_id, [])
            a = self.agents.get(agent_id)
            while heap:
                if limit is not None and len(out) >= limit:
                    self._pin_dirty.add(agent_id)
                    return
                item = self.items.get(heap[0][1])
                if item is None or item.version != heap[0][2] or item.status != "pinned":
                    heappop(heap)
                    continue
                if a is None or not self._may_take_pinned(a, item):
                    break
                heappop(heap)
                out.append(self._offer(item, a, now, {"step": "pinned", "pinned_until": item.pin_until}))

    def _may_take_pinned(self, a: AgentView, item: ItemView) -> bool:
        return item.spec.project_id in a.spec.projects and self.fits(a, item.spec.channel)

    def take_state_changes(self) -> list[int]:
        """Agents whose after-work timer ended (now available) since the last call."""
        ended, self._ended_after_work = self._ended_after_work, []
        return ended

    def next_timer(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def tick(self, now: float) -> list[Released]:
        """Fire every timer due at `now`; returns the offers that timed out."""
        released: list[Released] = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            _when, _, kind, ident, version = heappop(timers)
            item = self.items.get(ident)
            if kind == "state":
                a = self.agents.get(ident)
                if a is not None and a.state == "after_work" and (a.state_until or now + 1) <= now:
                    self.set_state(ident, "available", now)
                    self._ended_after_work.append(ident)
            elif item is None:
                continue
            elif kind == "offer" and item.version == version and item.status == "offered":
                agent_id = item.agent_id
                assert agent_id is not None
                released.append(Released(item.id, agent_id, "timeout"))
                self._block(item, agent_id, now)
                self._release_held(item, now)
                self.set_state(agent_id, "missed", now)
            elif kind in ("pin", "relax") and item.version == version and item.status in ("pinned", "waiting"):
                self._unwait(item)
                self._place(item, now)
            elif kind == "unblock" and item.status == "waiting" and item.slot is not None:
                self._mark(item.slot)
        return released

"""One reader of the event log per process, handing each new event to every subscriber.

Every live consumer in a process (each agent's `/api/v1/events` websocket, the web chat
notices) used to page the log itself after every commit: with 50 agents connected, one
chat line cost 50 queries, and under load those queries queued behind each other. Here
one reader task pages the log (`EventLog.since`, so ids of transactions still committing
are never skipped), keeps the last `BUFFER` events in memory, and wakes the subscribers,
which filter that buffer by project without touching the store.

A subscriber whose cursor is older than the buffer (a resume after a long drop, a slow
socket) pages the store itself, unfiltered so that its cursor always advances, until it
reaches the buffer. The reader runs while there is at least one subscriber; the last one
to leave stops it (cooperatively: a database call is never cancelled midway).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Callable, Collection
from typing import Protocol

from storage.models import Event

log = logging.getLogger(__name__)

# Events kept in memory; a subscriber further behind pages the store instead.
BUFFER = 4096
# One read of the log, and the most a subscriber gets at once.
PAGE = 500
# Other processes do not notify this one: poll at least this often.
POLL_SECONDS = 1.0


class EventSource(Protocol):
    """What the reader needs of the log (`umsg.events.EventLog`, which owns the fan-out)."""

    async def since(self, after_id: int = 0, project_ids: Collection[int] | None = None,
                    limit: int = 100) -> list[Event]: ...

    async def wait(self, timeout: float) -> object: ...  # noqa: ASYNC109 - EventLog's contract


class Subscription:
    """A cursor over the log for one consumer; `next()` returns what it may see after it."""

    def __init__(self, fanout: EventFanout, after: int, project_ids: Collection[int] | None) -> None:
        self._fanout = fanout
        self.cursor = after
        self.project_ids = None if project_ids is None else frozenset(project_ids)
        # True while `next()` queries the store: cancel the caller only when this is False.
        self.querying = False

    def visible(self, ev: Event) -> bool:
        # Events without a project are system-wide: only unscoped readers see them (as `since`).
        return self.project_ids is None or (ev.project_id is not None and ev.project_id in self.project_ids)

    def rendered(self, ev: Event, render: Callable[[Event], str]) -> str:
        """`render(ev)`, computed once per event for all subscribers (e.g. its JSON text)."""
        return self._fanout.rendered(ev, render)

    async def next(self, timeout: float) -> list[Event]:  # noqa: ASYNC109 - a poll interval, not a deadline
        """The next events after the cursor, oldest first; [] when none came within `timeout`."""
        return await self._fanout.next_for(self, timeout)

    async def aclose(self) -> None:
        await self._fanout.leave(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class EventFanout:
    """The per-process reader; get one from `EventLog.subscribe`, not directly."""

    def __init__(self, events: EventSource) -> None:
        self._events = events
        self._subs: set[Subscription] = set()
        self._ids: list[int] = []
        self._buffer: list[Event] = []
        # What subscribers made of an event (its JSON text for the sockets), by event id.
        self._rendered: dict[int, str] = {}
        # Every settled event in (floor, head] is in the buffer.
        self._floor = 0
        self._head = 0
        self._changed: asyncio.Event | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stopping = False
        self._reader_waiting = False
        self._lifecycle = asyncio.Lock()

    async def join(self, after: int, project_ids: Collection[int] | None) -> Subscription:
        sub = Subscription(self, after, project_ids)
        async with self._lifecycle:
            if self._reader is None:
                # A fresh reader starts where its first subscriber stands: nothing before is owed.
                self._ids, self._buffer, self._rendered = [], [], {}
                self._floor = self._head = after
                self._stopping = False
                self._reader = asyncio.create_task(self._read(), name="umsg-event-fanout")
            self._subs.add(sub)
        return sub

    async def leave(self, sub: Subscription) -> None:
        async with self._lifecycle:
            self._subs.discard(sub)
            if self._subs or self._reader is None:
                return
            reader, self._reader = self._reader, None
            self._stopping = True
            if self._reader_waiting:
                reader.cancel()
            # Shielded: a subscriber cancelled while leaving must not cancel a query midway.
            await asyncio.shield(asyncio.wait({reader}))
            if not reader.cancelled() and reader.exception() is not None:
                log.error("event fan-out reader ended with %r", reader.exception())
            self._ids, self._buffer, self._rendered = [], [], {}

    def rendered(self, ev: Event, render: Callable[[Event], str]) -> str:
        if ev.id <= self._floor:
            return render(ev)  # read from the store by a lagging subscriber: not worth keeping
        text = self._rendered.get(ev.id)
        if text is None:
            text = self._rendered[ev.id] = render(ev)
        return text

    async def _read(self) -> None:
        while not self._stopping:
            batch: list[Event] = []
            try:
                batch = await self._events.since(self._head, None, PAGE)
            except Exception:
                log.exception("reading the event log failed; retrying")
            if batch:
                self._append(batch)
            if len(batch) < PAGE and not self._stopping:
                self._reader_waiting = True
                try:
                    await self._events.wait(POLL_SECONDS)
                finally:
                    self._reader_waiting = False

    def _append(self, batch: list[Event]) -> None:
        self._buffer.extend(batch)
        self._ids.extend(e.id for e in batch)
        self._head = batch[-1].id
        if len(self._buffer) > 2 * BUFFER:
            # Trim in chunks so that appending stays cheap; the floor follows what was dropped.
            cut = len(self._buffer) - BUFFER
            self._floor = self._ids[cut - 1]
            del self._buffer[:cut]
            del self._ids[:cut]
            self._rendered = {k: v for k, v in self._rendered.items() if k > self._floor}
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    async def next_for(self, sub: Subscription, timeout: float) -> list[Event]:  # noqa: ASYNC109
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if sub.cursor < self._floor:
                sub.querying = True
                try:
                    page = await self._events.since(sub.cursor, None, PAGE)
                finally:
                    sub.querying = False
                if page:
                    # Return after every query, even with nothing visible: the caller may be stopping.
                    sub.cursor = max(sub.cursor, page[-1].id)
                    return [e for e in page if sub.visible(e)]
            else:
                start = bisect.bisect_right(self._ids, sub.cursor)
                seen = []
                for ev in self._buffer[start:]:
                    sub.cursor = ev.id
                    if sub.visible(ev):
                        seen.append(ev)
                        if len(seen) >= PAGE:
                            return seen
                # Everything up to the head was settled when the reader read it.
                sub.cursor = max(sub.cursor, self._head)
                if seen:
                    return seen
            left = deadline - loop.time()
            if left <= 0 or not await self._wait(left):
                return []

    async def _wait(self, timeout: float) -> bool:  # noqa: ASYNC109
        if self._changed is None:
            self._changed = asyncio.Event()
        changed = self._changed
        try:
            async with asyncio.timeout(timeout):
                await changed.wait()
        except TimeoutError:
            return False
        return True

"""The event outbox: written with the caller's transaction, read back by id, waking waiters."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from storage.db import create_engine, session_factory
from storage.types import utcnow
from umsg.core import Core
from umsg.events.log import GAP_GRACE, EventLog, WaitOutcome, add_event


async def test_event_exists_only_when_its_transaction_commits(core: Core) -> None:
    pid = await core.ensure_project("default")
    start = await core.events.latest_id()
    async with core.sessions() as s:
        core.events.add(s, pid, "conversation.updated", {"conversation_id": 1})
        await s.rollback()
    assert await core.events.since(start) == []

    async with core.sessions() as s:
        ev = core.events.add(s, pid, "conversation.updated", {"conversation_id": 2})
        await s.commit()
    got = await core.events.since(start)
    assert [(e.id, e.kind, e.payload) for e in got] == [
        (ev.id, "conversation.updated", {"conversation_id": 2})
    ]
    assert await core.events.latest_id() == ev.id


async def test_since_pages_in_id_order_and_filters_projects(core: Core) -> None:
    alpha = await core.ensure_project("alpha")
    beta = await core.ensure_project("beta")
    start = await core.events.latest_id()
    async with core.sessions() as s:
        for n in range(5):
            add_event(s, alpha if n % 2 == 0 else beta, "message.created", {"n": n})
        add_event(s, None, "agent.state", {"n": 5})
        await s.commit()

    everything = await core.events.since(start, None, 100)
    assert [e.payload["n"] for e in everything] == [0, 1, 2, 3, 4, 5]
    ids = [e.id for e in everything]
    assert ids == sorted(ids)

    first = await core.events.since(start, None, 2)
    rest = await core.events.since(first[-1].id, None, 100)
    assert [e.id for e in first + rest] == ids

    assert [e.payload["n"] for e in await core.events.since(start, [alpha])] == [0, 2, 4]
    assert [e.payload["n"] for e in await core.events.since(start, [alpha, beta])] == [0, 1, 2, 3, 4]
    assert await core.events.since(start, []) == []


async def test_malformed_kind_is_refused(core: Core) -> None:
    async with core.sessions() as s:
        with pytest.raises(ValueError, match="noun.verb"):
            core.events.add(s, None, "Message Created", {})


async def test_notify_wakes_a_waiter(core: Core) -> None:
    pid = await core.ensure_project("default")

    async def writer() -> int:
        async with core.sessions() as s:
            ev = core.events.add(s, pid, "message.status", {"status": "sent"})
            await s.commit()
        core.events.notify()
        return ev.id

    # gather starts the waiter first, so it is parked before the writer notifies.
    outcome, ev_id = await asyncio.gather(core.events.wait(30), writer())
    assert outcome is WaitOutcome.NOTIFIED
    assert (await core.events.since(ev_id - 1))[0].id == ev_id


async def test_wait_times_out_and_past_notifies_are_not_replayed(core: Core) -> None:
    core.events.notify()  # nobody is waiting: nothing to wake, nothing remembered
    assert await core.events.wait(0.01) is WaitOutcome.TIMED_OUT


async def test_every_waiter_is_woken(core: Core) -> None:
    async def notifier() -> None:
        core.events.notify()

    *outcomes, _ = await asyncio.gather(core.events.wait(30), core.events.wait(30), notifier())
    assert outcomes == [WaitOutcome.NOTIFIED, WaitOutcome.NOTIFIED]


async def test_another_process_sees_committed_events(core: Core) -> None:
    pid = await core.ensure_project("default")
    settings = core.settings
    engine = create_engine(settings.database_url, schema=settings.database.schema_name)
    try:
        other = EventLog(session_factory(engine))
        start = await other.latest_id()
        async with core.sessions() as s:
            core.events.add(s, pid, "queue.enqueued", {"item": 1})
            await s.commit()
        seen = await other.since(start, [pid])
        assert [e.kind for e in seen] == ["queue.enqueued"]
        assert await other.latest_id() == seen[0].id
    finally:
        await engine.dispose()


# PostgreSQL only: SQLite serialises writers, so there event ids become visible in id order.
@pytest.mark.postgres
async def test_reader_never_skips_an_event_still_committing(core: Core) -> None:
    pid = await core.ensure_project("default")
    start = await core.events.latest_id()
    async with core.sessions() as slow:
        early = core.events.add(slow, pid, "message.created", {"n": 1})
        await slow.flush()  # the id is taken, the row not yet visible
        async with core.sessions() as fast:
            late = core.events.add(fast, pid, "message.created", {"n": 2})
            await fast.commit()
        assert late.id > early.id
        # Handing out `late` now would move the reader's cursor past `early` forever.
        assert await core.events.since(start) == []
        assert await core.events.since(start, [pid]) == []
        await slow.commit()
    assert [e.id for e in await core.events.since(start)] == [early.id, late.id]

    # A rolled-back id is a permanent gap: it holds readers back only for GAP_GRACE.
    async with core.sessions() as s:
        core.events.add(s, pid, "message.created", {"n": 3})
        await s.flush()
        await s.rollback()
    async with core.sessions() as s:
        after_gap = core.events.add(s, pid, "message.created", {"n": 4})
        await s.commit()
    assert await core.events.since(late.id) == []
    later = EventLog(core.sessions, clock=lambda: utcnow() + GAP_GRACE + timedelta(seconds=1))
    assert [e.id for e in await later.since(late.id)] == [after_gap.id]


async def _collect(sub: object, count: int) -> list[int]:
    """Payload `n`s from a subscription until `count` have come (fails after 10 s)."""
    from umsg.events.fanout import Subscription

    assert isinstance(sub, Subscription)
    got: list[int] = []
    async with asyncio.timeout(10):
        while len(got) < count:
            got += [e.payload["n"] for e in await sub.next(1.0)]
    return got


async def test_subscriptions_share_one_reader_and_see_only_their_projects(core: Core) -> None:
    alpha = await core.ensure_project("alpha")
    beta = await core.ensure_project("beta")
    start = await core.events.latest_id()
    subs = [await core.events.subscribe(start, ids) for ids in ([alpha], [beta], None, [])]
    readers = [t for t in asyncio.all_tasks() if t.get_name() == "umsg-event-fanout"]
    assert len(readers) == 1
    async with core.sessions() as s:
        for n in range(6):
            add_event(s, alpha if n % 2 == 0 else beta, "message.created", {"n": n})
        add_event(s, None, "agent.state", {"n": 6})
        await s.commit()
    core.events.notify()
    assert await _collect(subs[0], 3) == [0, 2, 4]
    assert await _collect(subs[1], 3) == [1, 3, 5]
    assert await _collect(subs[2], 7) == [0, 1, 2, 3, 4, 5, 6]
    assert await subs[3].next(0.2) == []
    # The cursor moves past what the subscriber may not see: a resume from it misses nothing.
    assert subs[0].cursor == subs[2].cursor
    for sub in subs:
        await sub.aclose()
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "umsg-event-fanout"]


async def test_a_subscriber_behind_the_buffer_pages_the_store(core: Core, monkeypatch: pytest.MonkeyPatch) -> None:
    from umsg.events import fanout as event_fanout

    monkeypatch.setattr(event_fanout, "BUFFER", 2)
    start = await core.events.latest_id()
    pid = await core.ensure_project("default")
    async with await core.events.subscribe(start) as live:
        for n in range(12):
            async with core.sessions() as s:
                add_event(s, pid, "message.created", {"n": n})
                await s.commit()
            core.events.notify()
        assert await _collect(live, 12) == list(range(12))
        # The buffer now holds the last few only; an old cursor is served from the store, once each.
        async with await core.events.subscribe(start, [pid]) as late:
            assert await _collect(late, 12) == list(range(12))
            assert await late.next(0.2) == []

"""The universal queue on both stores: order, leases, transitions, events and racing claimers."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from storage.db import create_engine, session_factory
from storage.models import Contact, Conversation, Event
from umsg.config import QueueSettings
from umsg.core import Core
from umsg.errors import Conflict, NotFound
from umsg.events.log import EventLog
from umsg.queue import Queue

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


def sec(n: float) -> timedelta:
    return timedelta(seconds=n)


async def seed_conversation(core: Core, project: str = "default") -> tuple[int, int]:
    pid = await core.ensure_project(project)
    async with core.sessions() as s:
        contact = Contact(project_id=pid, display_name="Ada")
        s.add(contact)
        await s.flush()
        conv = Conversation(project_id=pid, contact_id=contact.id, channel="email", token=uuid.uuid4().hex)
        s.add(conv)
        await s.commit()
        return pid, conv.id


async def put(
    core: Core,
    pid: int,
    conv_id: int,
    *,
    at: datetime = T0,
    priority: int = 0,
    queue: str = "default",
    q: Queue | None = None,
) -> int:
    q = q or core.queue
    async with core.sessions() as s:
        item = q.enqueue(
            s,
            project_id=pid,
            conversation_id=conv_id,
            message_id=None,
            queue=queue,
            channel="email",
            priority=priority,
            now=at,
        )
        await s.commit()
        return item.id


async def event_kinds(core: Core) -> list[str]:
    return [e.kind for e in await core.events.since(0, None, 1000) if e.kind.startswith("queue.")]


async def test_claim_order_is_priority_then_age(core: Core) -> None:
    pid, conv = await seed_conversation(core)
    old_low = await put(core, pid, conv, at=T0, priority=0)
    new_high = await put(core, pid, conv, at=T0 + sec(60), priority=5)
    old_high = await put(core, pid, conv, at=T0 + sec(30), priority=5)
    newest_low = await put(core, pid, conv, at=T0 + sec(90), priority=0)

    order = []
    for _ in range(4):
        item = await core.queue.claim("w1", now=T0 + sec(100))
        assert item is not None and item.status == "leased" and item.lease_owner == "w1"
        assert item.lease_until == T0 + sec(100) + sec(core.settings.queue.lease_seconds)
        order.append(item.id)
    assert order == [old_high, new_high, old_low, newest_low]
    assert await core.queue.claim("w1", now=T0 + sec(100)) is None


async def test_claim_filters_by_project_and_queue(core: Core) -> None:
    pid_a, conv_a = await seed_conversation(core, "alpha")
    pid_b, conv_b = await seed_conversation(core, "beta")
    a_sales = await put(core, pid_a, conv_a, queue="sales")
    b_support = await put(core, pid_b, conv_b, queue="support")

    assert await core.queue.claim("w", project_ids=[]) is None
    assert await core.queue.claim("w", project_ids=[pid_a], queue="support") is None
    got = await core.queue.claim("w", project_ids=[pid_b], queue=["support", "billing"])
    assert got is not None and got.id == b_support
    got = await core.queue.claim("w", project_ids=[pid_a, pid_b])
    assert got is not None and got.id == a_sales


async def test_complete_release_and_ownership(core: Core) -> None:
    pid, conv = await seed_conversation(core)
    item_id = await put(core, pid, conv, at=T0)
    item = await core.queue.claim("w1", now=T0 + sec(1))
    assert item is not None and item.id == item_id

    with pytest.raises(Conflict, match="leased by 'w1'"):
        await core.queue.complete(item_id, "w2")
    with pytest.raises(NotFound):
        await core.queue.complete(item_id + 1000, "w1")

    released = await core.queue.release(item_id, "w1", now=T0 + sec(2))
    assert (released.status, released.lease_owner, released.attempts) == ("waiting", None, 0)
    assert released.enqueued_at == T0
    with pytest.raises(Conflict, match="waiting, not leased"):
        await core.queue.release(item_id, "w1")

    again = await core.queue.claim("w2", now=T0 + sec(3))
    assert again is not None and again.id == item_id
    done = await core.queue.complete(item_id, "w2", now=T0 + sec(4))
    assert done.status == "done" and done.lease_until is None
    stored = await core.queue.get(item_id)
    assert stored.status == "done"
    with pytest.raises(Conflict):
        await core.queue.complete(item_id, "w2")
    assert await event_kinds(core) == [
        "queue.enqueued",
        "queue.claimed",
        "queue.released",
        "queue.claimed",
        "queue.completed",
    ]


async def test_fail_retries_then_dead_letters(core: Core) -> None:
    q = Queue(core.sessions, core.events, QueueSettings(max_attempts=2))
    pid, conv = await seed_conversation(core)
    item_id = await put(core, pid, conv, q=q)

    assert (await q.claim("w")) is not None
    first = await q.fail(item_id, "w", "agent browser crashed")
    assert (first.status, first.attempts, first.last_error) == ("waiting", 1, "agent browser crashed")
    assert first.enqueued_at == T0

    assert (await q.claim("w")) is not None
    second = await q.fail(item_id, "w", "again")
    assert (second.status, second.attempts, second.last_error) == ("dead", 2, "again")
    assert await q.claim("w") is None

    dead = [e for e in await core.events.since(0, [pid], 100) if e.kind == "queue.dead"]
    assert len(dead) == 1 and dead[0].payload["reason"] == "again"
    assert dead[0].payload["item_id"] == item_id


async def test_permanent_failure_dead_letters_at_once(core: Core) -> None:
    pid, conv = await seed_conversation(core)
    item_id = await put(core, pid, conv)
    assert await core.queue.claim("w") is not None
    item = await core.queue.fail(item_id, "w", "conversation deleted", permanent=True)
    assert (item.status, item.attempts, item.last_error) == ("dead", 1, "conversation deleted")
    assert (await core.queue.stats([pid]))["dead"] == 1


async def test_expired_lease_is_recovered_with_original_age(core: Core) -> None:
    pid, conv = await seed_conversation(core)
    first = await put(core, pid, conv, at=T0)
    item = await core.queue.claim("crashed-worker", lease_seconds=1, now=T0 + sec(10))
    assert item is not None and item.id == first
    newer = await put(core, pid, conv, at=T0 + sec(20))

    assert await core.queue.recover_expired(now=T0 + sec(10.5)) == 0
    assert await core.queue.recover_expired(now=T0 + sec(12)) == 1
    back = await core.queue.get(first)
    assert (back.status, back.lease_owner, back.lease_until, back.attempts) == ("waiting", None, None, 1)
    assert back.enqueued_at == T0
    assert back.last_error == "lease expired (held by crashed-worker)"

    with pytest.raises(Conflict):
        await core.queue.complete(first, "crashed-worker")
    # The recovered item is older than the one enqueued meanwhile, so it is served first.
    nxt = await core.queue.claim("w2", now=T0 + sec(13))
    assert nxt is not None and nxt.id == first
    assert (await core.queue.claim("w2", now=T0 + sec(13))).id == newer  # type: ignore[union-attr]
    released = [e for e in await core.events.since(0, [pid], 100) if e.kind == "queue.released"]
    assert [e.payload["reason"] for e in released] == ["lease expired"]


async def test_renew_keeps_the_lease_alive(core: Core) -> None:
    pid, conv = await seed_conversation(core)
    item_id = await put(core, pid, conv)
    assert await core.queue.claim("w", lease_seconds=1, now=T0) is not None
    renewed = await core.queue.renew(item_id, "w", lease_seconds=1, now=T0 + sec(0.9))
    assert renewed.lease_until == T0 + sec(1.9)
    assert await core.queue.recover_expired(now=T0 + sec(1.5)) == 0
    assert (await core.queue.get(item_id)).lease_owner == "w"
    with pytest.raises(Conflict):
        await core.queue.renew(item_id, "someone-else")
    assert await core.queue.recover_expired(now=T0 + sec(2)) == 1
    with pytest.raises(Conflict):
        await core.queue.renew(item_id, "w", now=T0 + sec(2.1))


async def test_claim_item_is_a_compare_and_swap(core: Core) -> None:
    pid, conv = await seed_conversation(core)
    item_id = await put(core, pid, conv)
    offered = await core.queue.claim_item(item_id, "router:agent-7", lease_seconds=15, now=T0)
    assert offered.lease_until == T0 + sec(15)
    with pytest.raises(Conflict, match="leased, not waiting"):
        await core.queue.claim_item(item_id, "router:agent-8")


async def test_stats_list_and_get(core: Core) -> None:
    pid, conv = await seed_conversation(core, "alpha")
    other_pid, other_conv = await seed_conversation(core, "beta")
    ids = [await put(core, pid, conv, at=T0 + sec(i)) for i in range(5)]
    await put(core, other_pid, other_conv, at=T0 - sec(100))
    assert await core.queue.claim("w", project_ids=[pid]) is not None
    await core.queue.complete(ids[0], "w")

    stats = await core.queue.stats([pid], now=T0 + sec(61))
    assert stats == {"waiting": 4, "leased": 0, "done": 1, "dead": 0, "oldest_waiting_seconds": 60.0}
    everything = await core.queue.stats(now=T0)
    assert everything["waiting"] == 5 and everything["oldest_waiting_seconds"] == 100.0
    assert (await core.queue.stats([], now=T0))["oldest_waiting_seconds"] is None

    page1 = await core.queue.list_items([pid], limit=2)
    page2 = await core.queue.list_items([pid], limit=10, after_id=page1[-1].id)
    assert [i.id for i in page1 + page2] == ids
    assert [i.id for i in await core.queue.list_items([pid], status="done")] == [ids[0]]
    with pytest.raises(NotFound):
        await core.queue.get(ids[1], project_ids=[other_pid])


async def test_events_are_written_with_the_transition(core: Core) -> None:
    pid, conv = await seed_conversation(core)
    async with core.sessions() as s:
        core.queue.enqueue(s, project_id=pid, conversation_id=conv, message_id=None, channel="sms")
        await s.rollback()
    assert await event_kinds(core) == []  # no item, no event

    item_id = await put(core, pid, conv)
    item = await core.queue.claim("w")
    assert item is not None
    async with core.sessions() as s:
        claimed = [e for e in (await core.events.since(0, [pid])) if e.kind == "queue.claimed"]
        assert await s.get(Event, claimed[0].id) is not None
    assert claimed[0].payload["item_id"] == item_id and claimed[0].payload["owner"] == "w"


@pytest.mark.parametrize("workers_per_queue", [4])
async def test_two_instances_never_claim_the_same_item(core: Core, workers_per_queue: int) -> None:
    pid, conv = await seed_conversation(core)
    async with core.sessions() as s:
        for i in range(200):
            core.queue.enqueue(
                s,
                project_id=pid,
                conversation_id=conv,
                message_id=None,
                channel="email",
                priority=i % 3,
                now=T0 + sec(i),
            )
        await s.commit()

    settings = core.settings
    engines = [
        create_engine(
            settings.database_url, schema=settings.database.schema_name, pool_size=workers_per_queue
        )
        for _ in range(2)
    ]
    try:
        queues = []
        for engine in engines:
            sessions = session_factory(engine)
            queues.append(Queue(sessions, EventLog(sessions), settings.queue))

        async def drain(q: Queue, owner: str) -> list[int]:
            got = []
            while (item := await q.claim(owner)) is not None:
                got.append(item.id)
            return got

        results = await asyncio.gather(
            *(drain(q, f"q{n}-w{w}") for n, q in enumerate(queues) for w in range(workers_per_queue))
        )
    finally:
        for engine in engines:
            await engine.dispose()

    claimed = [i for r in results for i in r]
    assert len(claimed) == 200
    assert len(set(claimed)) == 200
    assert {i.id for i in await core.queue.list_items([pid], limit=500)} == set(claimed)
    stats = await core.queue.stats([pid])
    assert stats["leased"] == 200 and stats["waiting"] == 0
    # Both instances did real work, so the race was exercised.
    per_instance = [
        sum(len(r) for r in results[i * workers_per_queue : (i + 1) * workers_per_queue]) for i in (0, 1)
    ]
    assert all(n > 0 for n in per_instance)

"""ChannelJobs, the leased job table channels share (umsg/channel_jobs.py): a job is submitted,
claimed by one owner only, renewed, retried and settled; a lease that ran out goes to the next
claimer and its old owner is refused; a unique payload value makes one job however often (and from
however many engines) it is submitted; the dispatcher's `deliver` jobs and the channels' jobs stay
apart; concurrent claims from two engines take each job exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from router_driver import T0, Clock  # a clock the test moves: leases run out without waiting
from sqlalchemy import select

from storage.models import Job
from umsg.channel_jobs import ChannelJob, ChannelJobs
from umsg.core import Core
from umsg.errors import Conflict
from umsg.outbound.dispatcher import Dispatcher

KIND = "fax-send:test"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def jobs(core: Core, clock: Clock) -> ChannelJobs:
    return ChannelJobs(core.sessions, core.readers, clock=clock)


@pytest.fixture
async def pid(core: Core) -> int:
    return await core.ensure_project(core.settings.project)


async def row(core: Core, job_id: int) -> Job:
    async with core.readers() as s:
        job = await s.get(Job, job_id)
    assert job is not None
    return job


async def claimed(jobs: ChannelJobs, owner: str, lease: float = 30) -> ChannelJob:
    job = await jobs.claim(KIND, owner, lease)
    assert job is not None
    return job


async def test_a_job_is_submitted_claimed_renewed_and_finished(core: Core, jobs: ChannelJobs, clock: Clock,
                                                               pid: int) -> None:
    job_id = await jobs.submit(pid, KIND, {"message_id": 7, "number": "+15550200"}, max_attempts=3)
    assert job_id is not None and await jobs.unfinished(KIND) == 1
    job = await claimed(jobs, "a", lease=30)
    assert (job.id, job.project_id, job.kind, job.owner) == (job_id, pid, KIND, "a")
    assert dict(job.payload) == {"message_id": 7, "number": "+15550200"}
    assert (job.attempts, job.max_attempts, job.recovered, job.last_error) == (1, 3, False, None)
    assert job.lease_until == T0 + timedelta(seconds=30)
    assert await jobs.claim(KIND, "b", 30) is None  # leased: nobody else gets it

    clock.advance(20)
    until = await jobs.renew(job_id, "a", 30, payload={**job.payload, "result": "ok"})
    assert until == T0 + timedelta(seconds=50)
    stored = await row(core, job_id)
    assert (stored.status, stored.lease_owner, stored.lease_until) == ("leased", "a", until)
    assert stored.payload["result"] == "ok"
    clock.advance(20)  # past the first lease, inside the renewed one
    assert await jobs.claim(KIND, "b", 30) is None

    await jobs.finish(job_id, "a")
    stored = await row(core, job_id)
    assert (stored.status, stored.lease_owner, stored.lease_until, stored.attempts) == ("done", "a", None, 1)
    assert await jobs.unfinished(KIND) == 0
    with pytest.raises(Conflict):
        await jobs.renew(job_id, "a", 30)  # settled: nobody holds it any more


async def test_retry_hands_the_job_back_due_at_its_time(core: Core, jobs: ChannelJobs, clock: Clock,
                                                        pid: int) -> None:
    job_id = await jobs.submit(pid, KIND, {"message_id": 1, "history": []})
    assert job_id is not None
    job = await claimed(jobs, "a")
    await jobs.retry(job.id, "a", T0 + timedelta(seconds=60), "busy: 486 Busy Here",
                     payload={"message_id": 1, "history": ["busy"]})
    stored = await row(core, job_id)
    assert (stored.status, stored.lease_owner, stored.last_error) == ("pending", None, "busy: 486 Busy Here")
    assert await jobs.claim(KIND, "b", 30) is None  # not due yet
    clock.advance(60)
    again = await claimed(jobs, "b")
    assert (again.attempts, again.recovered, again.last_error) == (2, False, "busy: 486 Busy Here")
    assert again.payload["history"] == ["busy"]
    with pytest.raises(Conflict):
        await jobs.finish(job_id, "a")  # "a" handed it back
    await jobs.fail(job_id, "b", "busy: 486 Busy Here (after 2 attempts)")
    stored = await row(core, job_id)
    assert (stored.status, stored.last_error) == ("dead", "busy: 486 Busy Here (after 2 attempts)")


async def test_a_lease_that_ran_out_goes_to_the_next_claimer_and_its_old_owner_is_refused(
    core: Core, jobs: ChannelJobs, clock: Clock, pid: int
) -> None:
    job_id = await jobs.submit(pid, KIND, {"message_id": 1})
    job = await claimed(jobs, "a", lease=10)
    clock.advance(10)
    assert await jobs.claim(KIND, "b", 10) is None  # lease_until is not yet in the past
    clock.advance(0.001)
    taken = await claimed(jobs, "b", lease=10)
    assert (taken.id, taken.owner, taken.recovered, taken.attempts) == (job_id, "b", True, 2)  # the lost one counts
    assert taken.last_error == "lease expired (held by a)"
    for settle in (jobs.renew(job.id, "a", 10), jobs.retry(job.id, "a", clock.now, "x"), jobs.finish(job.id, "a"),
                   jobs.fail(job.id, "a", "x")):
        with pytest.raises(Conflict, match="not leased to a"):
            await settle
    await jobs.finish(job_id, "b")
    assert (await row(core, job_id)).status == "done"


async def test_an_expired_lease_not_yet_taken_is_still_its_owners(jobs: ChannelJobs, clock: Clock, pid: int) -> None:
    await jobs.submit(pid, KIND, {"message_id": 1})
    job = await claimed(jobs, "a", lease=10)
    clock.advance(60)
    await jobs.renew(job.id, "a", 10)  # nobody claimed it meanwhile
    assert await jobs.claim(KIND, "b", 10) is None


async def test_claims_take_only_due_jobs_of_their_kind_oldest_first(core: Core, jobs: ChannelJobs, clock: Clock,
                                                                    pid: int) -> None:
    later = await jobs.submit(pid, KIND, {"n": "later"}, T0 + timedelta(seconds=5))
    first = await jobs.submit(pid, KIND, {"n": "first"}, T0 - timedelta(seconds=5))
    await jobs.submit(pid, "fax-send:other", {"n": "other"})
    now = await jobs.submit(pid, KIND, {"n": "now"})
    assert [(await claimed(jobs, "a")).id for _ in range(2)] == [first, now]
    assert await jobs.claim(KIND, "a", 30) is None
    clock.advance(5)
    assert (await claimed(jobs, "a")).id == later
    with pytest.raises(ValueError, match="dispatcher"):
        await jobs.submit(pid, "deliver", {"message_id": 1})


async def test_deliver_jobs_and_channel_jobs_stay_apart(core: Core, pid: int) -> None:
    """The dispatcher neither claims channel jobs nor recovers their expired leases, and a
    channel never claims a `deliver` job."""
    jobs = ChannelJobs(core.sessions, core.readers)
    job_id = await jobs.submit(pid, KIND, {"message_id": 1})
    async with core.sessions() as s:
        s.add(Job(project_id=pid, kind="deliver", payload={}))
        await s.commit()
    with pytest.raises(ValueError, match="dispatcher"):
        await jobs.claim("deliver", "a", 30)
    dispatcher = Dispatcher(core.sessions, core.events, {}, "d", blobs=core.blobs)
    assert await dispatcher.run_once() == 1  # the deliver job (it names no message: dead), not ours
    assert (await row(core, job_id)).status == "pending"
    job = await claimed(jobs, "a", lease=0.5)
    assert await dispatcher.recover_expired(now=job.lease_until + timedelta(hours=1)) == 0
    stored = await row(core, job_id)
    assert (stored.status, stored.lease_owner, stored.attempts) == ("leased", "a", 1)


async def test_a_unique_payload_value_makes_one_job_however_often_it_is_submitted(
    make_settings: Any, pid: int, core: Core
) -> None:
    other = await Core.open(make_settings())
    try:
        one, two = ChannelJobs(core.sessions, core.readers), ChannelJobs(other.sessions, other.readers)
        ids = await asyncio.gather(*(
            (one if n % 2 else two).submit(pid, KIND, {"message_id": 42, "n": n}, unique="message_id")
            for n in range(20)))
        made = [i for i in ids if i is not None]
        assert len(made) == 1, ids
        # Settled jobs count too: a repeated send after the fax went out must not send it again.
        job = await claimed(one, "a")
        await one.finish(job.id, "a")
        assert await two.submit(pid, KIND, {"message_id": 42}, unique="message_id") is None
        # Per kind, and per value (strings compare as strings).
        assert await two.submit(pid, "fax-send:other", {"message_id": 42}, unique="message_id") is not None
        assert await two.submit(pid, KIND, {"message_id": 43}, unique="message_id") is not None
        assert await two.submit(pid, KIND, {"key": "42"}, unique="key") is not None
        assert await two.submit(pid, KIND, {"key": "42"}, unique="key") is None
    finally:
        await other.aclose()


async def test_concurrent_claims_from_two_engines_take_each_job_once(make_settings: Any, core: Core,
                                                                      pid: int) -> None:
    other = await Core.open(make_settings())
    try:
        engines = [ChannelJobs(core.sessions, core.readers), ChannelJobs(other.sessions, other.readers)]
        total = 50
        for n in range(total):
            await engines[n % 2].submit(pid, KIND, {"n": n})

        async def claim(n: int) -> tuple[int, str] | None:
            job = await engines[n % 2].claim(KIND, f"owner-{n}", 3600)
            return (job.id, job.owner) if job is not None else None

        first = [c for c in await asyncio.gather(*(claim(n) for n in range(total))) if c is not None]
        # SKIP LOCKED may let a claim pass by rows other claims hold at that moment; the rest is
        # claimed one by one, and in all no job is taken twice.
        rest = []
        while (job := await engines[0].claim(KIND, "sweeper", 3600)) is not None:
            rest.append((job.id, job.owner))
        taken = Counter(job_id for job_id, _ in first + rest)
        assert len(taken) == total and set(taken.values()) == {1}, taken.most_common(3)
        async with core.readers() as s:
            owners = dict((await s.execute(select(Job.id, Job.lease_owner).where(Job.kind == KIND))).all())
        assert owners == dict(first + rest)  # each job is leased to the one claimer told it got it
    finally:
        await other.aclose()

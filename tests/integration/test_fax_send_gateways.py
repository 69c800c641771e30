"""Two gateways on one store share the fax send jobs: every fax is called exactly once, no job is
called by both at once, a call longer than the lease keeps its job by renewing it, and the job of a
gateway that dies mid-call is taken over once its lease runs out and sent (again) to completion.

The dialling is a test double (it records calls and takes a while): what is under test is the
core's lease (umsg/channel_jobs.py) and the runner on top of it (channels/fax/outgoing.py), not
the telephony (tests/integration/test_fax_send.py calls for real)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fax_doubles import ok_transmission
from sqlalchemy import select

from channels.fax.outgoing import OutgoingFaxes
from channels.fax.settings import FaxSendSettings
from channels.fax.transmit import Transmission
from storage.models import Job, Message
from umsg.core import Core
from umsg.model import Address, IdentityKind, Inbound

FAXES = 24
LEASE = 2.0  # seconds; renewed every third of it
LONG_CALL = 4.5  # longer than two leases: only renewing keeps it
STUCK = "+15559999"  # gateway "a" dies during its call to this number
A_COMPLETES = 3  # calls "a" completes; its later calls hang until it dies


@dataclass
class Call:
    gateway: str
    number: str
    start: float
    end: float | None = None
    completed: bool = False


@dataclass
class Line:
    """The trunk, as a double: who calls which number when, and whether two ever overlap."""

    calls: list[Call] = field(default_factory=list)
    active: dict[str, Call] = field(default_factory=dict)
    overlaps: list[tuple[Call, Call]] = field(default_factory=list)
    stuck: asyncio.Event = field(default_factory=asyncio.Event)

    def completed_by(self, gateway: str) -> list[Call]:
        return [c for c in self.calls if c.gateway == gateway and c.completed]

    def dial_for(self, gateway: str) -> Callable[[str, Path], Awaitable[Transmission]]:
        async def dial(number: str, tiff: Path) -> Transmission:
            assert await asyncio.to_thread(tiff.is_file)  # the TIFF the other gateway stored, too
            call = Call(gateway, number, time.time())
            if number in self.active:
                self.overlaps.append((self.active[number], call))
            self.active[number] = call
            self.calls.append(call)
            try:
                if gateway == "a" and (number == STUCK or len(self.completed_by("a")) >= A_COMPLETES):
                    self.stuck.set()
                    await asyncio.Event().wait()  # until the gateway dies
                await asyncio.sleep(LONG_CALL if number.endswith("00") else 0.05 + 0.01 * (len(self.calls) % 7))
                call.completed = True
                return ok_transmission(number)
            finally:
                call.end = time.time()
                if self.active.get(number) is call:
                    del self.active[number]

        return dial


async def conversation(core: Core) -> tuple[int, int]:
    res = await core.ingest.ingest(Inbound(channel="fax", sender=Address(IdentityKind.FAX, "+15550200"),
                                           recipients=("+15550100",), dedupe_key="seed", raw=b"seed", text="fax me"))
    async with core.readers() as s:
        project_id = await s.scalar(select(Message.project_id).where(Message.id == res.message_id))
    assert project_id is not None
    return project_id, res.conversation_id


def runner(core: Core, line: Line, gateway: str) -> OutgoingFaxes:
    send = FaxSendSettings(trunk="sip:{number}@127.0.0.1:9", retry_seconds=[0.05], max_attempts=3, max_concurrent=3)
    return OutgoingFaxes("fax", "fax", core.channel_services(), send, line.dial_for(gateway), lease_seconds=LEASE,
                         poll_seconds=0.05)


async def until(what: str, check: Callable[[], Awaitable[bool]], core: Core, seconds: float = 60) -> None:
    """Wait for a condition, woken by this process's commits or re-checked every 0.1 s."""
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        await core.events.wait(0.1)


async def test_two_gateways_call_each_fax_once_and_take_over_a_dead_ones_call(make_settings: Any) -> None:
    settings = make_settings()
    one = await Core.open(settings)  # both on one database and one blob store
    two = await Core.open(settings)
    await one.start()
    line = Line()
    a, b = runner(one, line, "a"), runner(two, line, "b")
    try:
        project_id, conversation_id = await conversation(one)
        numbers = [STUCK] + [f"+155502{n:02d}" for n in range(FAXES - 1)]
        messages: dict[str, int] = {}
        for n, number in enumerate(numbers):
            msg = await one.outbox.reply(project_id=project_id, conversation_id=conversation_id, channel="fax",
                                         text=f"fax {n}")
            messages[number] = msg.id

        # "a" alone takes the first fax and hangs in its call; then both gateways share the rest.
        assert await a.submit(messages[STUCK], STUCK, b"II*\x00 stuck", 1, project_id=project_id)
        assert await a.resume() == 1
        await asyncio.wait_for(line.stuck.wait(), 30)
        assert await b.resume() == 1  # the job "a" holds is unfinished, and not "b"'s to call
        for n, number in enumerate(numbers[1:]):
            gateway = a if n % 2 else b
            assert await gateway.submit(messages[number], number, f"II*\x00 {n}".encode(), 1, project_id=project_id)
        # A repeated send (the dispatcher retrying after a timeout) adds no job, on either gateway.
        assert not await b.submit(messages[numbers[1]], numbers[1], b"II*\x00 0", 1, project_id=project_id)

        async def a_is_only_calling() -> bool:
            # "a" completed its calls and settled them: from now on it only sits in calls that
            # hang, or holds jobs it has not dialled yet. (Dying between a call's end and saving
            # its result would call that fax again: at least once is all a lost call allows.)
            done = {c.number for c in line.completed_by("a")}
            async with two.readers() as s:
                payloads = (await s.scalars(select(Job.payload).where(
                    Job.kind == "fax-send:fax", Job.status == "done"))).all()
            settled = {p["number"] for p in payloads}
            return len(done) >= A_COMPLETES and done <= settled

        await until('"a" completes and settles calls of its own', a_is_only_calling, two)
        await a.aclose()  # "a" dies mid-call: no renewal, no settlement, its leases left to run out
        died = time.time()
        async with two.readers() as s:
            orphans = {j.payload["number"]: j.lease_until for j in (await s.scalars(select(Job).where(
                Job.kind == "fax-send:fax", Job.status == "leased", Job.lease_owner == a.owner))).all()}
        assert STUCK in orphans

        async def all_settled() -> bool:
            async with two.readers() as s:
                states = (await s.scalars(select(Job.status).where(Job.kind == "fax-send:fax"))).all()
            return len(states) == FAXES and set(states) == {"done"}

        await until("every fax job done", all_settled, two)
        await b.aclose()

        assert line.overlaps == [], "two gateways called one fax at the same time"
        cut = {c.number for c in line.calls if not c.completed}
        assert all(c.gateway == "a" and c.end is not None and c.end <= died for c in line.calls if not c.completed)
        assert STUCK in cut and cut <= set(orphans)  # the calls "a" was in when it died
        for number in numbers:
            mine = [c for c in line.calls if c.number == number]
            assert sum(c.completed for c in mine) == 1, (number, mine)
            assert len(mine) == 1 + (number in cut), (number, mine)
        for number in cut:
            lost, taken = [c for c in line.calls if c.number == number]
            assert taken.gateway == "b"
            # Taken over only once the dead gateway's lease had run out.
            assert taken.start >= orphans[number].timestamp() > lost.start, (number, taken, orphans[number])
        long_calls = [c for c in line.calls if c.end is not None and c.end - c.start > 2 * LEASE and c.completed]
        assert long_calls  # renewal kept these jobs with their gateway through two leases and more

        async with two.readers() as s:
            sent = {m.id: m for m in (await s.scalars(select(Message).where(Message.id.in_(messages.values())))).all()}
        for number, message_id in messages.items():
            msg = sent[message_id]
            delivery = msg.flags["delivery"]
            assert msg.status == "delivered", (number, msg.status, msg.status_detail)
            outcomes = [h["outcome"] for h in delivery["history"]]
            if number in orphans:  # "a" held it when it died (in a call, or about to dial)
                assert outcomes == ["lost", "ok"] and delivery["attempts"] == 2, delivery
                assert "lease expired" in delivery["history"][0]["reason"]
            else:
                assert outcomes == ["ok"] and delivery["attempts"] == 1, delivery
    finally:
        await a.aclose()
        await b.aclose()
        await two.aclose()
        await one.aclose()

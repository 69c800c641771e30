"""The one group-commit helper (umsg.group_commit): batching, isolation of a bad item, retries,
bounds, and that a cancelled caller neither loses its item nor lets two writes overlap."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from umsg.errors import TransientError
from umsg.group_commit import GroupCommit


class Owner:
    """Commits ints; a negative int fails its batch; records every batch and overlap."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.writing = 0
        self.most_at_once = 0
        self.gate: asyncio.Event | None = None
        self.flaky: dict[int, int] = {}  # item -> how many more times it fails

    async def commit(self, items: Sequence[int]) -> list[int | Exception]:
        self.writing += 1
        self.most_at_once = max(self.most_at_once, self.writing)
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(self.delay)
            for i in items:
                if i < 0:
                    raise ValueError(f"bad {i}")
                if self.flaky.get(i, 0) > 0:
                    self.flaky[i] -= 1
                    raise KeyError(i)
            self.batches.append(list(items))
            return [i * 10 for i in items]
        finally:
            self.writing -= 1


async def test_concurrent_callers_share_a_batch_and_get_their_own_result() -> None:
    owner = Owner(delay=0.01)
    group: GroupCommit[int, int] = GroupCommit(owner.commit, name="t")
    results = await asyncio.gather(*(group.submit(i) for i in range(1, 11)))
    assert results == [i * 10 for i in range(1, 11)]
    assert sum(len(b) for b in owner.batches) == 10
    assert len(owner.batches) < 10  # they shared transactions
    assert owner.most_at_once == 1


async def test_a_bad_item_fails_alone_and_the_others_commit_once() -> None:
    owner = Owner()
    group: GroupCommit[int, int] = GroupCommit(owner.commit, name="t", gather=0)
    outcomes = await asyncio.gather(*(group.submit(i) for i in (1, 2, -3, 4)), return_exceptions=True)
    assert outcomes[:2] == [10, 20] and outcomes[3] == 40
    assert isinstance(outcomes[2], ValueError)
    committed = [i for b in owner.batches for i in b]
    assert sorted(committed) == [1, 2, 4]  # each once, the failed batch wrote nothing


async def test_on_error_runs_an_item_again_or_names_its_error() -> None:
    owner = Owner()
    owner.flaky = {7: 2, 8: 5}
    seen: list[tuple[int, int]] = []

    def on_error(item: int, error: Exception, attempts: int) -> Exception | None:
        seen.append((item, attempts))
        if isinstance(error, KeyError) and attempts <= 3:
            return None
        return TransientError(f"gave up on {item}")

    group: GroupCommit[int, int] = GroupCommit(owner.commit, name="t", on_error=on_error)
    assert await group.submit(7) == 70
    with pytest.raises(TransientError, match="gave up on 8"):
        await group.submit(8)
    assert seen == [(7, 1), (7, 2), (8, 1), (8, 2), (8, 3), (8, 4)]


async def test_batch_max_bounds_a_batch() -> None:
    owner = Owner()
    group: GroupCommit[int, int] = GroupCommit(owner.commit, name="t", batch_max=3, gather=0)
    await asyncio.gather(*(group.submit(i) for i in range(1, 9)))
    assert [len(b) for b in owner.batches] == [3, 3, 2]


async def test_max_pending_makes_callers_wait_for_room() -> None:
    owner = Owner()
    owner.gate = asyncio.Event()
    group: GroupCommit[int, int] = GroupCommit(owner.commit, name="t", max_pending=2)
    first = asyncio.ensure_future(group.submit(1))
    await asyncio.sleep(0.01)  # 1 is being written (its room given back); 2 and 3 fill the queue
    queued = [asyncio.ensure_future(group.submit(i)) for i in (2, 3)]
    waiting = asyncio.ensure_future(group.submit(4))
    await asyncio.sleep(0.01)
    assert group._queued and [i for i, _ in group._queued] == [2, 3]  # 4 has no room yet
    owner.gate.set()
    assert await asyncio.gather(first, *queued, waiting) == [10, 20, 30, 40]


async def test_a_cancelled_caller_keeps_its_item_and_writes_never_overlap() -> None:
    owner = Owner(delay=0.01)
    group: GroupCommit[int, int] = GroupCommit(owner.commit, name="t")
    callers = [asyncio.ensure_future(group.submit(i)) for i in range(1, 21)]
    await asyncio.sleep(0.005)
    for c in callers[::2]:
        c.cancel()  # the writing caller's cancellation must not start a second, overlapping write
    later = [asyncio.ensure_future(group.submit(i)) for i in range(21, 31)]
    await asyncio.gather(*callers[1::2], *later)
    await group.drain()
    assert sorted(i for b in owner.batches for i in b) == list(range(1, 31))
    assert owner.most_at_once == 1


async def test_drain_writes_everything_handed_over() -> None:
    owner = Owner(delay=0.01)
    group: GroupCommit[int, int] = GroupCommit(owner.commit, name="t")
    callers = [asyncio.ensure_future(group.submit(i)) for i in range(5)]
    await asyncio.sleep(0)
    for c in callers:
        c.cancel()
    await group.drain()
    assert sorted(i for b in owner.batches for i in b) == list(range(5))


async def test_an_interrupted_write_answers_every_caller_with_a_transient_error() -> None:
    owner = Owner()
    owner.gate = asyncio.Event()
    group: GroupCommit[int, int] = GroupCommit(owner.commit, name="t")
    callers = [asyncio.ensure_future(group.submit(i)) for i in range(3)]
    await asyncio.sleep(0.01)
    assert group._driver is not None
    group._driver.cancel()  # as a shutdown would
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(o, TransientError) for o in outcomes), outcomes
    assert owner.batches == []

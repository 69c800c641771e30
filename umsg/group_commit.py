"""Group commit: many concurrent callers' writes share one transaction, each returning after it.

A caller hands over an item and waits. Whoever finds no write in progress writes every item
queued so far with the owner's `commit` (one transaction), and each caller gets its own
item's result, or its own error, only after that transaction committed. Items that arrive
while a write runs form the next batch. If a batch fails as a whole, each of its items is
written on its own, so one bad item costs only itself.

A caller cancelled while its batch is being written does not abandon the others: the write
runs on (shielded). An interruption of the write itself (a cancelled task, a shutdown)
answers every caller of the batch with a transient error, so none acknowledges to its peer.

Used by delivery-id binds (`umsg.outbound.reports`) and delivery results (`umsg.outbound.record`);
the ingest's writer (`umsg.ingest.writer`) keeps a task of its own, because it also bounds
how much may queue (back-pressure for the channels).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from umsg.errors import TransientError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

class GroupCommit(Generic[T, R]):
    """One owner's queue of items to write; see the module docstring."""

    def __init__(self, commit: Callable[[Sequence[T]], Awaitable[Sequence[R | Exception]]], *,
                 name: str, gather_first: bool = False) -> None:
        """`commit` writes one batch in one transaction and returns, per item in order, its
        result or the error that item alone gets (raising fails the whole batch)."""
        self._commit = commit
        self._name = name
        # Let callers resumed in the same pass of the event loop (one socket read can answer ten
        # sends) join the batch, instead of each missing it by a moment and waiting for the next.
        self._gather_first = gather_first
        self._queued: list[tuple[T, asyncio.Future[R]]] = []
        self._writing = asyncio.Lock()
        self._writes: set[asyncio.Future[None]] = set()

    async def submit(self, item: T) -> R:
        """Write `item` with whatever else is queued; returns its result once committed."""
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queued.append((item, done))
        async with self._writing:
            if not done.done():
                if self._gather_first:
                    await asyncio.sleep(0)
                batch, self._queued = self._queued, []
                write = asyncio.ensure_future(self._write(batch))
                self._writes.add(write)
                write.add_done_callback(self._writes.discard)
                await asyncio.shield(write)
        return await done

    async def _write(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._commit([item for item, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            log.info("%s: a batch of %d failed (%r); writing each on its own", self._name, len(batch), exc)
            for one in batch:
                await self._write([one])
            return
        except BaseException:
            for _, done in batch:
                _settle(done, TransientError(f"{self._name}: the write was interrupted"))
            raise
        for (_, done), result in zip(batch, results, strict=True):
            _settle(done, result)


def _settle(done: asyncio.Future[R], outcome: R | Exception) -> None:
    if done.done():
        return
    if isinstance(outcome, Exception):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)

"""Group commit: many concurrent callers' writes share one transaction, each returning after it.

The one helper for it: the ingest's writer (`umsg.ingest.writer`), delivery-id binds
(`umsg.outbound.reports`) and delivery results (`umsg.outbound.record`) all use it.

A caller hands over an item and waits. While items are queued, one driver task writes them
batch after batch, each batch in one transaction through the owner's `commit`, and each
caller gets its own item's result, or its own error, only after that transaction committed.
Items that arrive while a batch is written form the next one. There is never more than one
driver, so an owner that holds one connection never writes on it twice at once, and a caller
that is cancelled abandons only its answer: its item is still written with the others.

If a batch fails as a whole, each of its items is written on its own, so one bad item costs
only itself; the owner's `on_error` decides whether an item that failed alone is written
again (a lost race on a unique key) or what error its caller gets. An interruption of the
write itself (a cancelled driver, a shutdown) answers every waiting caller with a transient
error, so none acknowledges to its peer.

`max_pending` bounds how many items may wait (a caller beyond it waits for room: back-pressure
for the channels); `batch_max` bounds a batch; `gather` lets a moment pass before a batch is
taken, so callers resumed in the same pass of the event loop share it.
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

# Given an item that failed on its own, the error and how many times it was tried: None to
# write it again, or the error its caller gets.
OnError = Callable[[T, Exception, int], "Exception | None"]


def _as_is(item: object, error: Exception, attempts: int) -> Exception:
    return error


class GroupCommit(Generic[T, R]):
    """One owner's queue of items to write; see the module docstring."""

    def __init__(self, commit: Callable[[Sequence[T]], Awaitable[Sequence[R | Exception]]], *,
                 name: str, gather: float | None = None, batch_max: int | None = None,
                 max_pending: int | None = None, on_error: OnError[T] = _as_is) -> None:
        """`commit` writes one batch in one transaction and returns, per item in order, its
        result or the error that item alone gets (raising fails the whole batch). `gather` is
        how long (seconds) to wait before taking a batch: None not at all, 0 one pass of the
        event loop."""
        self._commit = commit
        self._name = name
        self._gather = gather
        self._batch_max = batch_max
        self._room = asyncio.Semaphore(max_pending) if max_pending else None
        self._on_error = on_error
        self._queued: list[tuple[T, asyncio.Future[R]]] = []
        self._driver: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Write `item` with whatever else is queued; returns its result once committed."""
        if self._room is not None:
            await self._room.acquire()  # released when the item leaves the queue for a batch
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queued.append((item, done))
        if self._driver is None or self._driver.done():
            self._driver = asyncio.create_task(self._drive(), name=f"umsg-group-commit:{self._name}")
        return await done

    async def drain(self) -> None:
        """Return once every item handed over so far is written (or has failed)."""
        while self._driver is not None and not self._driver.done():
            await asyncio.shield(self._driver)

    async def _drive(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._queued:
                if self._gather is not None:
                    await asyncio.sleep(self._gather)
                batch = self._take()
                await self._write(batch)
        except BaseException:
            for _, done in batch + self._take(everything=True):
                _settle(done, TransientError(f"{self._name}: the write was interrupted"))
            raise

    def _take(self, everything: bool = False) -> list[tuple[T, asyncio.Future[R]]]:
        cut = len(self._queued) if everything or self._batch_max is None else self._batch_max
        batch, self._queued = self._queued[:cut], self._queued[cut:]
        if self._room is not None:
            for _ in batch:
                self._room.release()
        return batch

    async def _write(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._commit([item for item, _ in batch])
        except Exception as exc:
            if len(batch) > 1:
                log.info("%s: a batch of %d failed (%r); writing each on its own", self._name, len(batch), exc)
                for one in batch:
                    await self._write_alone(one)
            else:
                await self._write_alone(batch[0], exc)
            return
        for (_, done), result in zip(batch, results, strict=True):
            _settle(done, result)

    async def _write_alone(self, one: tuple[T, asyncio.Future[R]], failed: Exception | None = None) -> None:
        item, done = one
        attempts = 0
        while True:
            if failed is None:
                try:
                    result = (await self._commit([item]))[0]
                except Exception as exc:
                    failed = exc
                else:
                    _settle(done, result)
                    return
            attempts += 1
            error = self._on_error(item, failed, attempts)
            if error is not None:
                _settle(done, error)
                return
            failed = None


def _settle(done: asyncio.Future[R], outcome: R | Exception) -> None:
    if done.done():
        return
    if isinstance(outcome, Exception):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)

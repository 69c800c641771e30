"""Delivery reports: what peers tell us about our outgoing messages after they accepted them.

Channels call this instead of writing the store themselves. `bind` records an id the peer
gave a message (an SMSC message_id, a fax job id) the moment it is known, and commits, so a
receipt arriving milliseconds later finds its message; concurrent binds share one
transaction (group commit), each caller still returning only after its commit. `record` applies a report: it moves
the message's delivery status, emits `message.status`, and on a permanent failure marks the
recipient's identity as failing so agents (and the default-recipient choice) see it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Insert, Table, case, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from storage.bulk import Bulk, json_list
from storage.db import OWN_BEGIN_OPTION, SessionFactory, read_sessions_for
from storage.models import ChannelState, Identity, Message, ProviderRef
from storage.types import utcnow
from umsg.events import EventLog

log = logging.getLogger(__name__)

_MESSAGE = cast(Table, Message.__table__)
_PROVIDER_REF = cast(Table, ProviderRef.__table__)

# Delivery states a report may set, with whether they are final failures.
STATES: dict[str, bool] = {
    "sent": False,  # accepted by the peer, nothing more known yet
    "delivered": False,
    "read": False,
    "failed": True,  # undeliverable, rejected, expired: the peer gave up
}


@dataclass(frozen=True)
class _Bind:
    message_id: int
    channel: str
    ids: list[str]
    part: int | None
    future: asyncio.Future[None]


def _resolve(binds: Iterable[_Bind], error: BaseException | None) -> None:
    for b in binds:
        if b.future.done():
            continue
        if error is None:
            b.future.set_result(None)
        else:
            b.future.set_exception(error)


def _bound_rows(batch: Iterable[_Bind], messages: Mapping[int, tuple[int, str | None]],
                now: datetime) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """The provider_ref rows of the binds whose message exists (`messages`: id -> project id and
    provider id), and the first id bound to each of those messages that has no provider id yet."""
    refs: list[dict[str, Any]] = []
    first: dict[int, str] = {}
    for b in batch:
        if b.message_id in messages:
            first.setdefault(b.message_id, b.ids[0])
            refs.extend({"project_id": messages[b.message_id][0], "channel": b.channel, "provider_id": pid,
                         "message_id": b.message_id, "created_at": now} for pid in b.ids)
    return refs, {mid: pid for mid, pid in first.items() if messages[mid][1] is None}


def _settle_binds(batch: Iterable[_Bind], messages: Container[int]) -> None:
    """The batch is committed: each bind returns, but for a message that does not exist."""
    for b in batch:
        if b.message_id in messages:
            _resolve([b], None)
        else:
            _resolve([b], LookupError(f"message {b.message_id} does not exist"))


def _insert_ignoring_bound(dialect: str) -> Insert:
    """INSERT into provider_ref that skips (channel, provider_id) pairs already there."""
    stmt = pg_insert(_PROVIDER_REF) if dialect == "postgresql" else sqlite_insert(_PROVIDER_REF)
    return stmt.on_conflict_do_nothing(index_elements=["channel", "provider_id"])


# The messages a batch of binds names, with what `_commit_lean` needs of them.
_MESSAGES_BY_ID = select(_MESSAGE.c.id, _MESSAGE.c.project_id, _MESSAGE.c.provider_id).where(
    _MESSAGE.c.id.in_(json_list("ids")))


def _parts_key(message_id: int) -> str:
    return f"mt-parts:{message_id}"


@dataclass(frozen=True)
class ReportOutcome:
    """Which message a report applied to (None when no message has that provider id)."""

    message_id: int | None
    status: str | None = None


class DeliveryReports:
    """Binds peer ids to outgoing messages and applies the peer's delivery reports."""

    def __init__(self, sessions: SessionFactory, events: EventLog, *,
                 clock: Callable[[], datetime] = utcnow, readers: SessionFactory | None = None) -> None:
        self._sessions = sessions
        # Lookups only read: on SQLite a write session would queue for the write lock.
        self._readers = readers or read_sessions_for(sessions)
        self._events = events
        self._clock = clock
        # Binds waiting for the next group commit, and the lock only one writer holds.
        self._queued: list[_Bind] = []
        self._writing = asyncio.Lock()
        self._writes: set[asyncio.Future[None]] = set()
        self._bulk = Bulk()  # its compiled statements serve every bind

    async def bind(self, message_id: int, channel: str, provider_ids: Iterable[str], *,
                   part: int | None = None) -> None:
        """Remember that the peer knows message `message_id` by these ids (committed on return).

        Binding an id twice to the same message is harmless; an id already bound to another
        message of the channel is left as it was (the peer reused it: the newest wins only
        after the old message's report arrived). `part` (0-based) says which part of a
        multi-part message the peer accepted under these ids: `accepted_parts` tells a
        retried send which parts not to submit again.

        Concurrent binds are group-committed: whoever finds no write in progress writes
        everything queued so far in one transaction, and every caller returns only after
        the transaction holding its ids committed.
        """
        ids = [p for p in dict.fromkeys(provider_ids) if p]
        if not ids:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append(_Bind(message_id, channel, ids, part, fut))
        async with self._writing:
            if not fut.done():
                batch, self._queued = self._queued, []
                # Shielded: a caller cancelled mid-write must not abandon the others of its batch.
                write = asyncio.ensure_future(self._write(batch))
                self._writes.add(write)
                write.add_done_callback(self._writes.discard)
                await asyncio.shield(write)
        await fut

    async def _write(self, batch: list[_Bind]) -> None:
        """Commit `batch` at once; if that fails on a constraint, each bind on its own."""
        try:
            await self._commit(batch)
        except IntegrityError as exc:
            if len(batch) == 1:
                # Another process bound the same id at the same moment: it is bound, which is all we want.
                _resolve(batch, None)
            else:
                for one in batch:
                    await self._write([one])
            log.debug("group bind of %d fell back after %r", len(batch), exc)
        except BaseException as exc:
            _resolve(batch, exc)
            if not isinstance(exc, Exception):
                raise

    async def _commit(self, batch: list[_Bind]) -> None:
        engine = self._sessions.kw.get("bind")
        if isinstance(engine, AsyncEngine) and engine.dialect.name == "sqlite" and all(b.part is None for b in batch):
            await self._commit_lean(engine, batch)
            return
        now = self._clock()
        async with self._sessions() as s:
            rows = (await s.execute(
                select(Message.id, Message.project_id, Message.provider_id)
                .where(Message.id.in_({b.message_id for b in batch}))
            )).all()
            messages = {r.id: (r.project_id, r.provider_id) for r in rows}
            refs, unset = _bound_rows(batch, messages, now)
            if refs:
                # An id already bound (to this message or, reused by the peer, to another) stays as it is.
                # Plain table statements: the ORM's per-row bookkeeping was most of a bind's CPU.
                await s.execute(_insert_ignoring_bound(s.get_bind().dialect.name), refs)
            if unset:
                table = _MESSAGE
                await s.execute(update(table).where(table.c.id.in_(unset), table.c.provider_id.is_(None))
                                .values(provider_id=case(unset, value=table.c.id)))
            await self._record_parts(s, [b for b in batch if b.message_id in messages and b.part is not None])
            await s.commit()
        _settle_binds(batch, messages)

    async def _commit_lean(self, engine: AsyncEngine, batch: list[_Bind]) -> None:
        """`_commit` for single-part binds on SQLite, in two hops to the driver's thread instead of a
        session's dozen (see `storage.bulk`): BEGIN IMMEDIATE with the read of the messages,
        then the rows with COMMIT. Every bind of a batch waits on it, so on a busy event loop
        each hop saved is latency saved for the whole window of sends."""
        now = self._clock()
        async with engine.connect() as plain:
            conn = await plain.execution_options(**{OWN_BEGIN_OPTION: True})
            async with conn.begin():
                rows = await self._bulk.fetch(conn, _MESSAGES_BY_ID, {
                    "ids": json.dumps(sorted({b.message_id for b in batch}))}, begin=True)
                messages = {mid: (project_id, provider_id) for mid, project_id, provider_id in rows}
                # Read under the write lock, so "not set yet" still holds when the update runs.
                refs, unset = _bound_rows(batch, messages, now)
                updates = [{"_id": mid, "provider_id": pid} for mid, pid in unset.items()]
                if not await self._bulk.write(conn, [("insert_new", _PROVIDER_REF, refs),
                                                     ("update", _MESSAGE, updates)], commit=True):
                    await conn.commit()
                # Durable now: answer before the connection's bookkeeping and the pool's reset on
                # return, which cost another hop each.
                _settle_binds(batch, messages)

    @staticmethod
    async def _record_parts(s: AsyncSession, binds: list[_Bind]) -> None:
        """Merge accepted part indexes into one ChannelState row per message (`mt-parts:<id>`)."""
        if not binds:
            return
        keys = {(b.channel, _parts_key(b.message_id)) for b in binds}
        rows = {(r.channel, r.key): r for r in (await s.scalars(select(ChannelState).where(
            ChannelState.channel.in_({c for c, _ in keys}),
            ChannelState.key.in_({k for _, k in keys})))).all()}
        for b in binds:
            row = rows.get((b.channel, _parts_key(b.message_id)))
            if row is None:
                row = ChannelState(channel=b.channel, key=_parts_key(b.message_id), value={"parts": {}})
                s.add(row)
                rows[(b.channel, row.key)] = row
            # A new dict, so the ORM sees the JSON column change.
            row.value = {"parts": {**row.value.get("parts", {}), str(b.part): b.ids[0]}}

    async def accepted_parts(self, message_id: int, channel: str) -> dict[int, str]:
        """Parts of `message_id` a peer already accepted (index -> its id), as bound so far.

        A message bound without part indexes counts as its part 0 once it has any id.
        """
        async with self._readers() as s:
            state = await s.scalar(select(ChannelState.value).where(
                ChannelState.channel == channel, ChannelState.key == _parts_key(message_id)))
            if state:
                return {int(k): str(v) for k, v in state.get("parts", {}).items()}
            first = await s.scalar(select(ProviderRef.provider_id).where(
                ProviderRef.channel == channel, ProviderRef.message_id == message_id)
                .order_by(ProviderRef.id).limit(1))
        return {0: first} if first else {}

    async def find(self, channel: str, provider_ids: Iterable[str]) -> int | None:
        """The message a peer id (any of the spellings given, e.g. hex and decimal) belongs to."""
        ids = [p for p in provider_ids if p]
        if not ids:
            return None
        async with self._readers() as s:
            return await s.scalar(
                select(ProviderRef.message_id)
                .where(ProviderRef.channel == channel, ProviderRef.provider_id.in_(ids))
                .order_by(ProviderRef.id.desc())
                .limit(1)
            )

    async def record(
        self,
        *,
        channel: str,
        status: str,
        provider_ids: Iterable[str] = (),
        message_id: int | None = None,
        detail: str = "",
        mark_recipient_failing: bool | None = None,
        extra: dict[str, Any] | None = None,
    ) -> ReportOutcome:
        """Apply one report to the message found by `message_id` or by any of `provider_ids`.

        `status` is one of STATES. A final failure marks the recipient failing unless
        `mark_recipient_failing` is False. `extra` is kept in the message's flags under
        `delivery` (pages sent, the peer's state word, the time it gave). A report for a
        message that has already been reported delivered does not move it back.
        """
        if status not in STATES:
            raise ValueError(f"unknown delivery status {status!r}; expected one of {sorted(STATES)}")
        if message_id is None:
            message_id = await self.find(channel, provider_ids)
        if message_id is None:
            return ReportOutcome(None)
        failing = STATES[status] if mark_recipient_failing is None else mark_recipient_failing
        now = self._clock()
        async with self._sessions() as s:
            msg = await s.get(Message, message_id)
            if msg is None:
                return ReportOutcome(None)
            if msg.status in ("delivered", "read") and status in ("sent", "failed"):
                # Late or reordered report: a delivered message stays delivered.
                return ReportOutcome(msg.id, msg.status)
            msg.status = status
            msg.status_detail = detail or None
            if extra:
                msg.flags = {**msg.flags, "delivery": {**msg.flags.get("delivery", {}), **extra}}
            if failing and msg.to_addrs:
                await s.execute(
                    update(Identity)
                    .where(Identity.project_id == msg.project_id, Identity.value == str(msg.to_addrs[0]))
                    .values(failing=True)
                    .execution_options(synchronize_session=False)
                )
            payload: dict[str, Any] = {"message_id": msg.id, "conversation_id": msg.conversation_id,
                                       "status": status, "at": now.isoformat()}
            if detail:
                payload["detail"] = detail
            self._events.add(s, msg.project_id, "message.status", payload)
            await s.commit()
        self._events.notify()
        log.info("delivery report for message %s: %s%s", message_id, status, f" ({detail})" if detail else "")
        return ReportOutcome(message_id, status)

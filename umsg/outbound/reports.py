"""Delivery reports: what peers tell us about our outgoing messages after they accepted them.

Channels call this instead of writing the store themselves. `bind` records an id the peer
gave a message (an SMSC message_id, a fax job id) the moment it is known, and commits, so a
receipt arriving milliseconds later finds its message; concurrent binds share one
transaction (`umsg.group_commit`), each caller still returning only after its commit. A
batch of binds is one read and one write of rows (`storage.bulk`: on SQLite two hops to the
driver's thread, BEGIN IMMEDIATE with the read and COMMIT with the rows) on a connection the
binds keep between batches. `record` and `apply_report` apply a report by the one status rule
(`umsg.outbound.status`): they move the message's delivery status, emit `message.status`, and on a
permanent failure mark the recipient's identity as failing so agents (and the
default-recipient choice) see it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, Table, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from storage.bulk import Bulk, in_list, list_param
from storage.db import HeldConnection, SessionFactory, read_sessions_for
from storage.models import ChannelState, Identity, Message, ProviderRef
from storage.types import utcnow
from umsg.events.log import EventLog
from umsg.group_commit import GroupCommit
from umsg.outbound.status import Move, next_status

log = logging.getLogger(__name__)

_MESSAGE = cast(Table, Message.__table__)
_PROVIDER_REF = cast(Table, ProviderRef.__table__)
_STATE = cast(Table, ChannelState.__table__)

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


def _bind_outcomes(batch: Sequence[_Bind], messages: Container[int]) -> list[None | Exception]:
    """Each bind returns, but for a message that does not exist."""
    return [None if b.message_id in messages else LookupError(f"message {b.message_id} does not exist")
            for b in batch]


def _messages_by_id(dialect: str) -> Select[Any]:
    """The messages a batch of binds names, read under the write lock (SQLite's BEGIN IMMEDIATE,
    PostgreSQL's FOR UPDATE), so "no provider id yet" still holds when the update runs."""
    return select(_MESSAGE.c.id, _MESSAGE.c.project_id, _MESSAGE.c.provider_id).where(
        _MESSAGE.c.id.in_(in_list("ids", dialect))).with_for_update()


def _states_by_key(dialect: str) -> Select[Any]:
    """The `mt-parts:<id>` rows a batch of part binds adds to."""
    return select(_STATE.c.id, _STATE.c.channel, _STATE.c.key, _STATE.c.value).where(
        _STATE.c.key.in_(in_list("keys", dialect))).with_for_update()


def _parts_key(message_id: int) -> str:
    return f"mt-parts:{message_id}"


async def apply_report(s: AsyncSession, events: EventLog, msg: Message, status: str, *, detail: str = "",
                       failing: Collection[str] = (), extra: Mapping[str, Any] | None = None,
                       now: datetime) -> Move:
    """Apply one delivery report to `msg` in the caller's transaction (the rule: `umsg.outbound.status`).

    `failing` are recipient addresses the report says fail: their identities are marked
    failing, unless the message had already been delivered (a late failure is kept in the
    message's `delivery` flags, and its status stays). Emits `message.status` when anything
    was recorded.
    """
    move = next_status(msg.status, status)
    delivery = {**msg.flags.get("delivery", {}), **(extra or {})}
    if move.late_failure:
        delivery["late_failure"] = {"detail": detail, "at": now.isoformat()}
    if delivery != msg.flags.get("delivery", {}):
        msg.flags = {**msg.flags, "delivery": delivery}  # a new dict, so the ORM sees the change
    if move.changed:
        msg.status, msg.status_detail = move.status.value, (detail or None)
        if failing:
            await s.execute(
                update(Identity)
                # Email identities are stored lower-case, numbers as they are: both spellings, so the index serves.
                .where(Identity.project_id == msg.project_id,
                       Identity.value.in_(sorted({*failing, *(a.lower() for a in failing)})))
                .values(failing=True)
                .execution_options(synchronize_session=False))
    if move.changed or move.late_failure:
        payload: dict[str, Any] = {"message_id": msg.id, "conversation_id": msg.conversation_id,
                                   "status": move.status.value, "at": now.isoformat()}
        if detail:
            payload["detail"] = detail
        if move.late_failure:
            payload["late_failure"] = True
        events.add(s, msg.project_id, "message.status", payload)
    return move


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
        self._group: GroupCommit[_Bind, None] = GroupCommit(self._commit, name="delivery-id binds")
        self._conn = HeldConnection(sessions, "delivery-id binds")
        self._statements: dict[str, tuple[Select[Any], Select[Any]]] = {}
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
        if ids:
            await self._group.submit(_Bind(message_id, channel, ids, part))

    async def aclose(self) -> None:
        """Finish the binds handed over, then give back the connection they hold."""
        await self._group.drain()
        await self._conn.drop()

    async def _commit(self, batch: Sequence[_Bind]) -> list[None | Exception]:
        """One transaction for `batch`: the provider_ref rows, each message's first provider id,
        and the accepted parts of multi-part messages."""
        conn = await self._conn.get()
        dialect = conn.dialect.name
        by_id, by_key = self._statements.get(dialect) or self._statements.setdefault(
            dialect, (_messages_by_id(dialect), _states_by_key(dialect)))
        now = self._clock()
        try:
            async with conn.begin():
                rows = await self._bulk.fetch(conn, by_id, {
                    "ids": list_param(dialect, {b.message_id for b in batch})}, begin=True)
                messages = {mid: (project_id, provider_id) for mid, project_id, provider_id in rows}
                refs, unset = _bound_rows(batch, messages, now)
                ops: list[tuple[str, Table, list[dict[str, Any]]]] = [
                    # An id already bound (to this message or, reused by the peer, to another) stays as it is.
                    ("insert_new", _PROVIDER_REF, refs),
                    ("update", _MESSAGE, [{"_id": mid, "provider_id": pid} for mid, pid in unset.items()])]
                parts = [b for b in batch if b.message_id in messages and b.part is not None]
                if parts:
                    ops.extend(await self._part_rows(conn, by_key, parts, now))
                if not await self._bulk.write(conn, ops, commit=True):
                    await conn.commit()
        except IntegrityError:
            if len(batch) == 1:
                # Another process bound the same id at the same moment: it is bound, which is all we want.
                return [None]
            raise
        except Exception:
            await self._conn.drop(only_if_broken=True)
            raise
        return _bind_outcomes(batch, messages)

    async def _part_rows(self, conn: AsyncConnection, by_key: Select[Any], binds: Sequence[_Bind],
                         now: datetime) -> list[tuple[str, Table, list[dict[str, Any]]]]:
        """Merge accepted part indexes into one ChannelState row per message (`mt-parts:<id>`)."""
        keys = {_parts_key(b.message_id) for b in binds}
        found = await self._bulk.fetch(conn, by_key, {"keys": list_param(conn.dialect.name, keys)})
        rows = {(channel, key): (row_id, value) for row_id, channel, key, value in found}
        merged: dict[tuple[str, str], dict[str, str]] = {}
        for b in binds:
            where = (b.channel, _parts_key(b.message_id))
            parts = merged.setdefault(where, dict((rows[where][1] if where in rows else {}).get("parts", {})))
            parts[str(b.part)] = b.ids[0]
        return [
            ("insert", _STATE, [{"channel": c, "key": k, "value": {"parts": p}, "updated_at": now}
                                for (c, k), p in merged.items() if (c, k) not in rows]),
            ("update", _STATE, [{"_id": rows[(c, k)][0], "value": {"parts": p}, "updated_at": now}
                                for (c, k), p in merged.items() if (c, k) in rows])]

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
        message that has already been reported delivered does not move it back
        (`apply_report`).
        """
        if status not in STATES:
            raise ValueError(f"unknown delivery status {status!r}; expected one of {sorted(STATES)}")
        if message_id is None:
            message_id = await self.find(channel, provider_ids)
        if message_id is None:
            return ReportOutcome(None)
        failing = STATES[status] if mark_recipient_failing is None else mark_recipient_failing
        async with self._sessions() as s:
            msg = await s.get(Message, message_id)
            if msg is None:
                return ReportOutcome(None)
            move = await apply_report(s, self._events, msg, status, detail=detail, extra=extra, now=self._clock(),
                                      failing=[str(msg.to_addrs[0])] if failing and msg.to_addrs else [])
            await s.commit()
        self._events.notify()
        log.info("delivery report for message %s: %s%s", message_id, status, f" ({detail})" if detail else "")
        return ReportOutcome(message_id, move.status)

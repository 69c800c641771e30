"""Moving outgoing messages through their delivery states, a batch per statement.

Claiming (`sending`), recording results (`sent`, `delivered`, `queued` for a retry,
`failed`) and lease recovery all change many messages at once. One read of the batch's
messages under the write lock, then one executemany per kind of write (the changes, the
fill-ins, the `message.status` events), all with statements built once, replace the ORM's
load-then-flush per message.
Rules kept here: the one status rule (`umsg.outbound.status.next_status`): a message already
`delivered` or `read` (its receipt can arrive before `send` returns) is never moved back,
only its missing provider id and send time are filled in; a change with `expect` applies
only to messages in that state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Event, Message
from storage.states import MessageStatus
from umsg.outbound.status import next_status

_MESSAGE = cast(Table, Message.__table__)
_EVENT = cast(Table, Event.__table__)


@dataclass(frozen=True)
class StatusChange:
    """One message's new delivery state (`at`: when it was sent, for sent/delivered)."""

    project_id: int
    message_id: int
    status: str
    detail: str | None
    provider_id: str | None = None
    at: datetime | None = None


# Read under the transaction's write lock (SQLite's BEGIN IMMEDIATE, PostgreSQL's FOR UPDATE), so
# what is decided from these rows still holds when the writes below run.
_READ = (select(_MESSAGE.c.id, _MESSAGE.c.conversation_id, _MESSAGE.c.status, _MESSAGE.c.provider_id,
                _MESSAGE.c.sent_at)
         .where(_MESSAGE.c.id.in_(bindparam("ids", expanding=True))).with_for_update())
# One row of parameters per message (an executemany): the statements are built once, so a batch
# costs no SQL construction or compilation, which a CASE per column with a branch per message did.
_WRITE = update(_MESSAGE).where(_MESSAGE.c.id == bindparam("_id")).values(
    status=bindparam("b_status"), status_detail=bindparam("b_detail"), provider_id=bindparam("b_provider"),
    sent_at=bindparam("b_sent"))
_FILL = update(_MESSAGE).where(_MESSAGE.c.id == bindparam("_id")).values(
    provider_id=bindparam("b_provider"), sent_at=bindparam("b_sent"))
_EVENTS = insert(_EVENT)


async def set_statuses(s: AsyncSession, changes: Sequence[StatusChange], *, expect: str | None = None) -> set[int]:
    """Apply `changes` in the caller's transaction; returns the ids whose status changed.

    Each changed message gets a `message.status` event (written with the change).
    """
    latest = {c.message_id: c for c in changes}  # one message twice in a batch: the last word wins
    if not latest:
        return set()
    current = {r.id: r for r in await s.execute(_READ, {"ids": list(latest)})}
    writes: list[dict[str, Any]] = []
    fills: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for mid, c in latest.items():
        now = current.get(mid)
        if now is None:
            continue
        if not next_status(now.status, c.status).changed and now.status != c.status:
            # Its receipt came first: fill in only what the receipt could not know.
            provider, sent = now.provider_id or c.provider_id, now.sent_at or c.at
            if (provider, sent) != (now.provider_id, now.sent_at):
                fills.append({"_id": mid, "b_provider": provider, "b_sent": sent})
            continue
        if expect is not None and now.status != expect:
            continue
        sent = c.at if c.at is not None and c.status in (MessageStatus.SENT, MessageStatus.DELIVERED) else now.sent_at
        writes.append({"_id": mid, "b_status": c.status, "b_detail": c.detail,
                       "b_provider": c.provider_id or now.provider_id, "b_sent": sent})
        payload: dict[str, Any] = {"message_id": mid, "conversation_id": now.conversation_id, "status": c.status}
        if c.detail:
            payload["detail"] = c.detail
        if c.provider_id:
            payload["provider_id"] = c.provider_id
        events.append({"project_id": c.project_id, "kind": "message.status", "payload": payload})
    for statement, rows in ((_WRITE, writes), (_FILL, fills), (_EVENTS, events)):
        if rows:
            await s.execute(statement, rows)
    return {w["_id"] for w in writes}

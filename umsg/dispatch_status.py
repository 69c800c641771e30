"""Moving outgoing messages through their delivery states, a batch per statement.

Claiming (`sending`), recording results (`sent`, `delivered`, `queued` for a retry,
`failed`) and lease recovery all change many messages at once. One UPDATE ... RETURNING
per batch, keyed by message id through CASE, replaces the ORM's load-then-flush per
message; the `message.status` events of the changed rows go in with one executemany.
Rules kept here: a message already `delivered` or `read` (its receipt can arrive before
`send` returns) is never moved back to `sent`, only its missing provider id and send
time are filled in; a change with `expect` applies only to messages in that state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, case, func, insert, literal, not_, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Event, Message

_MESSAGE = cast(Table, Message.__table__)
_EVENT = cast(Table, Event.__table__)
# States a late "the peer accepted it" must not overwrite.
_LATER = ("delivered", "read")


@dataclass(frozen=True)
class StatusChange:
    """One message's new delivery state (`at`: when it was sent, for sent/delivered)."""

    project_id: int
    message_id: int
    status: str
    detail: str | None
    provider_id: str | None = None
    at: datetime | None = None


def by_id(key: Any, column: Any, values: Mapping[int, Any], default: ColumnElement[Any] | None = None) -> Any:
    """`values[key]` for the rows whose `key` is in `values`; `default` (the column itself) elsewhere."""
    distinct = set(values.values())
    if default is None and len(distinct) == 1:
        # The whole batch moves to one value (a claim): no CASE needed.
        return literal(distinct.pop(), column.type)
    return case(
        {k: literal(v, column.type) for k, v in values.items()},
        value=key,
        else_=column if default is None else default,
    )


def _by_id(column: Any, values: Mapping[int, Any], default: ColumnElement[Any] | None = None) -> Any:
    return by_id(_MESSAGE.c.id, column, values, default)


async def set_statuses(s: AsyncSession, changes: Sequence[StatusChange], *, expect: str | None = None) -> set[int]:
    """Apply `changes` in the caller's transaction; returns the ids whose status changed.

    Each changed message gets a `message.status` event (written with the change).
    """
    latest = {c.message_id: c for c in changes}  # one message twice in a batch: the last word wins
    if not latest:
        return set()
    ids = list(latest)
    guarded = [i for i, c in latest.items() if c.status == "sent"]
    where: list[ColumnElement[bool]] = [_MESSAGE.c.id.in_(ids)]
    if expect is not None:
        where.append(_MESSAGE.c.status == expect)
    if guarded:
        where.append(not_(and_(_MESSAGE.c.id.in_(guarded), _MESSAGE.c.status.in_(_LATER))))
    values: dict[str, Any] = {
        "status": _by_id(_MESSAGE.c.status, {i: c.status for i, c in latest.items()}),
        "status_detail": _by_id(_MESSAGE.c.status_detail, {i: c.detail for i, c in latest.items()}),
    }
    providers = {i: c.provider_id for i, c in latest.items() if c.provider_id}
    if providers:
        values["provider_id"] = _by_id(_MESSAGE.c.provider_id, providers, _MESSAGE.c.provider_id)
    sent_at = {i: c.at for i, c in latest.items() if c.at is not None and c.status in ("sent", "delivered")}
    if sent_at:
        values["sent_at"] = _by_id(_MESSAGE.c.sent_at, sent_at, _MESSAGE.c.sent_at)
    rows = (await s.execute(
        update(_MESSAGE).where(*where).values(**values).returning(_MESSAGE.c.id, _MESSAGE.c.conversation_id)
    )).all()
    changed = {r.id: r.conversation_id for r in rows}
    await _fill_in_later(s, [latest[i] for i in guarded if i not in changed])
    events: list[dict[str, Any]] = []
    for c in latest.values():
        if c.message_id not in changed:
            continue
        payload: dict[str, Any] = {"message_id": c.message_id, "conversation_id": changed[c.message_id],
                                   "status": c.status}
        if c.detail:
            payload["detail"] = c.detail
        if c.provider_id:
            payload["provider_id"] = c.provider_id
        events.append({"project_id": c.project_id, "kind": "message.status", "payload": payload})
    if events:
        await s.execute(insert(_EVENT), events)
    return set(changed)


async def _fill_in_later(s: AsyncSession, kept: Sequence[StatusChange]) -> None:
    """For `sent` results on messages already delivered: only what the receipt could not know."""
    if not kept:
        return
    providers = {c.message_id: c.provider_id for c in kept if c.provider_id}
    sent_at = {c.message_id: c.at for c in kept if c.at is not None}
    values: dict[str, Any] = {}
    if providers:
        values["provider_id"] = func.coalesce(_MESSAGE.c.provider_id, _by_id(
            _MESSAGE.c.provider_id, providers, literal(None, _MESSAGE.c.provider_id.type)))
    if sent_at:
        values["sent_at"] = func.coalesce(_MESSAGE.c.sent_at, _by_id(
            _MESSAGE.c.sent_at, sent_at, literal(None, _MESSAGE.c.sent_at.type)))
    if values:
        await s.execute(update(_MESSAGE).where(
            _MESSAGE.c.id.in_([c.message_id for c in kept]), _MESSAGE.c.status.in_(_LATER)).values(**values))

"""Moving stored channel names onto configured instances.

Before channels were named by instance, most adapters stamped their type's name on what they
ingested (`email`, `sms`, `voicemail`, `fax`), whatever the instance was called. Those rows
(messages, conversations, queue items, provider ids, channel state, stored route tables) must
carry the instance's name now, or replies find no adapter and IMAP checkpoints, SMS
reassembly and delivery receipts lose their state.

A migration cannot read the configuration, so the service does it at start, after the
migrations (`adopt_legacy_names`): for every old type name that exactly one configured
instance claims and that is not itself an instance's name, once, in one transaction per name,
recorded in `channel_rename`. Everything else (two SMTP instances that both stamped `email`, a
removed `channel = "..."` override) is the operator's call: `umsg channels rename OLD NEW`
runs the same `rename_channel`, and the service warns at start about queued deliveries whose
channel no configured instance has.

Rows whose unique key already exists under the new name (the same message stored under both)
stay under the old name and are counted as skipped: nothing is ever overwritten. The event
log follows too (an event's `channel`, and the `from`/`to` of a conversation's channel
change), so a feed or a report read later names the instance, as new events do.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import (
    JSON,
    CursorResult,
    Table,
    Text,
    and_,
    exists,
    func,
    literal,
    literal_column,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from storage.db import SessionFactory
from storage.models import (
    ChannelRename,
    ChannelState,
    Conversation,
    Event,
    Job,
    Message,
    Project,
    ProviderRef,
    QueueItem,
    StoredRouteTable,
)
from storage.states import JobStatus
from storage.types import utcnow
from umsg.events.log import add_event

log = logging.getLogger(__name__)

_MESSAGE = cast(Table, Message.__table__)
_CONVERSATION = cast(Table, Conversation.__table__)
_QUEUE_ITEM = cast(Table, QueueItem.__table__)
_PROVIDER_REF = cast(Table, ProviderRef.__table__)
_CHANNEL_STATE = cast(Table, ChannelState.__table__)
_EVENT = cast(Table, Event.__table__)
# Where an event's payload names a channel.
_EVENT_PATHS = (("channel",), ("changes", "channel", "from"), ("changes", "channel", "to"))

# Table -> the columns that, with `channel`, are unique (None: no unique key over channel).
_RENAMED: tuple[tuple[Table, tuple[str, ...] | None], ...] = (
    (_MESSAGE, ("project_id", "dedupe_key")),
    (_CONVERSATION, None),
    (_QUEUE_ITEM, None),
    (_PROVIDER_REF, ("provider_id",)),
    (_CHANNEL_STATE, ("key",)),
)


@dataclass
class RenameResult:
    old: str
    new: str
    rows: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def moved(self) -> int:
        return sum(self.rows.values())


def legacy_renames(claims: Iterable[tuple[str, str | None]], configured: Collection[str]) -> dict[str, str]:
    """old name -> instance, from (instance, the name its type used to stamp) pairs.

    A name is moved only when exactly one instance claims it and no instance is called that
    (an instance named `email` of type email already matches its stored rows).
    """
    by_old: dict[str, list[str]] = {}
    for instance, old in claims:
        if old is not None:
            by_old.setdefault(old, []).append(instance)
    return {old: names[0] for old, names in by_old.items()
            if len(names) == 1 and old not in configured and names[0] != old}


def _renamed_routes(routes: list[Any], old: str, new: str) -> list[Any] | None:
    """The stored route table with `old` replaced in channel filters and forward channels."""
    changed = False
    out: list[Any] = []
    for route in routes:
        if not isinstance(route, dict):
            out.append(route)
            continue
        r = dict(route)
        ch = r.get("channel")
        if ch == old:
            r["channel"], changed = new, True
        elif isinstance(ch, list) and old in ch:
            r["channel"], changed = list(dict.fromkeys(new if c == old else c for c in ch)), True
        if r.get("forward_channel") == old:
            r["forward_channel"], changed = new, True
        out.append(r)
    return out if changed else None


async def _rename_in(s: AsyncSession, old: str, new: str, result: RenameResult) -> None:
    for table, key in _RENAMED:
        cond = table.c.channel == old
        if key is not None:
            other = table.alias("other")
            clash = exists().where(other.c.channel == new, *[other.c[k] == table.c[k] for k in key])
            cond = and_(cond, ~clash)
        done = cast(CursorResult[Any], await s.execute(update(table).where(cond).values(channel=new)))
        if done.rowcount:
            result.rows[table.name] = int(done.rowcount)
        if key is not None:
            left = int(await s.scalar(select(func.count()).select_from(table).where(table.c.channel == old)) or 0)
            if left:
                result.skipped[table.name] = left
    events = 0
    # An event of a message left under the old name (skipped above) keeps naming it.
    stayed = select(_MESSAGE.c.id).where(_MESSAGE.c.channel == old)
    for path in _EVENT_PATHS:
        done = cast(CursorResult[Any], await s.execute(
            update(_EVENT).where(_EVENT.c.payload[path].as_string() == old,
                                 func.coalesce(_EVENT.c.payload["message_id"].as_integer(), 0).not_in(stayed))
            .values(payload=_json_set(s, path, new)).execution_options(synchronize_session=False)))
        events += int(done.rowcount or 0)
    if events:
        result.rows["event"] = events
    stored = (await s.execute(select(StoredRouteTable, Project.slug).join(
        Project, Project.id == StoredRouteTable.project_id))).all()
    for row, slug in stored:
        routes = _renamed_routes(list(row.routes or []), old, new)
        if routes is not None:
            # A new version, like any save: running processes re-read it, and an editor holding
            # the old version gets a conflict instead of writing the old name back.
            row.routes, row.version = routes, row.version + 1
            row.updated_by, row.updated_at = f"channel rename {old} -> {new}", utcnow()
            add_event(s, row.project_id, "routes.updated", {"project": slug, "version": row.version,
                                                            "updated_by": row.updated_by, "routes": len(routes)})
            result.rows["route_table"] = result.rows.get("route_table", 0) + 1


def _json_set(s: AsyncSession, path: tuple[str, ...], value: str) -> Any:
    """The payload with the string at `path` replaced by `value`, in the store's JSON functions."""
    if s.get_bind().dialect.name == "postgresql":
        where: ColumnElement[Any] = literal_column("'{" + ",".join(path) + "}'::text[]")
        new = func.to_jsonb(sql_cast(literal(value), Text))
        changed = func.jsonb_set(sql_cast(_EVENT.c.payload, JSONB), where, new)
        return sql_cast(changed, JSON)
    return func.json_set(_EVENT.c.payload, "$." + ".".join(f'"{p}"' for p in path), value)


async def rename_channel(sessions: SessionFactory, old: str, new: str, *, source: str) -> RenameResult:
    """Move every stored row of channel `old` onto `new`, in one transaction, and record it."""
    if not old or not new or old == new:
        raise ValueError("rename needs two different, non-empty channel names")
    result = RenameResult(old, new)
    async with sessions() as s:
        await _rename_in(s, old, new, result)
        s.add(ChannelRename(old_name=old, new_name=new, source=source, rows=dict(result.rows),
                            skipped=dict(result.skipped), created_at=utcnow()))
        await s.commit()
    return result


async def adopt_legacy_names(sessions: SessionFactory, plan: Mapping[str, str]) -> list[RenameResult]:
    """At start: run each rename of `plan` (see `legacy_renames`) that was never recorded."""
    if not plan:
        return []
    async with sessions() as s:
        rows = await s.execute(select(ChannelRename.old_name, ChannelRename.new_name).where(
            ChannelRename.old_name.in_(list(plan)), ChannelRename.source == "start"))
        done = {(old, new) for old, new in rows}
    results = []
    for old, new in plan.items():
        if (old, new) in done:
            continue
        result = await rename_channel(sessions, old, new, source="start")
        level = logging.WARNING if result.skipped else logging.INFO
        log.log(level, "stored channel name %r is now instance %r: %s%s", old, new,
                ", ".join(f"{t} {n}" for t, n in result.rows.items()) or "nothing stored under it",
                f"; left under the old name (already stored under the new one): {result.skipped}"
                if result.skipped else "")
        results.append(result)
    return results


async def unconfigured_deliveries(readers: SessionFactory, configured: Collection[str],
                                  limit: int = 10_000) -> dict[str, int]:
    """Queued deliveries whose channel no configured instance has: channel -> how many."""
    async with readers() as s:
        payloads = (await s.scalars(select(Job.payload).where(
            Job.kind == "deliver", Job.status.in_((JobStatus.PENDING, JobStatus.LEASED))).limit(limit))).all()
        ids = [int(p["message_id"]) for p in payloads if isinstance(p, dict) and p.get("message_id") is not None]
        counts: dict[str, int] = {}
        for start in range(0, len(ids), 500):
            rows = await s.execute(select(Message.channel, func.count()).where(
                Message.id.in_(ids[start:start + 500])).group_by(Message.channel))
            for channel, n in rows:
                counts[channel] = counts.get(channel, 0) + int(n)
    return {c: n for c, n in sorted(counts.items()) if c not in configured}

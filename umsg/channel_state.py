"""Durable channel state and the stored messages a channel may read: `ChannelServices.state`
and `ChannelServices.messages`.

A channel keeps small facts between restarts as JSON objects under a key of its own, scoped by
its instance name: IMAP checkpoints (`<mailbox>` -> UIDVALIDITY, last UID, messages set aside),
SMS long-message parts (`mo:<group>:<seq>`) and their `done:` markers. They are rows of
`storage.models.ChannelState`; channels never see the table or a session. Every write commits
before it returns, so what a channel acknowledges to its peer afterwards survives a crash.
Reads use the read-only sessions (no write lock on SQLite).

`StoredMessages` reads back what the ingest stored for a message (its project, flags and
parts): the fax and voicemail channels attach the stored parts to their notifications.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Delete, delete, or_, select
from sqlalchemy.exc import IntegrityError

from storage.db import SessionFactory, read_sessions_for
from storage.models import ChannelState, Message, Part
from storage.types import utcnow


@dataclass(frozen=True)
class StateItem:
    """One stored fact of a channel."""

    key: str
    value: dict[str, Any]


class ChannelStateStore:
    """Keyed JSON objects per channel instance; see the module docstring."""

    def __init__(self, sessions: SessionFactory, readers: SessionFactory | None = None) -> None:
        self._sessions = sessions
        self._readers = readers or read_sessions_for(sessions)

    async def get(self, channel: str, key: str) -> dict[str, Any] | None:
        """The value stored under `key`, or None."""
        async with self._readers() as s:
            value = await s.scalar(select(ChannelState.value).where(
                ChannelState.channel == channel, ChannelState.key == key))
        return dict(value) if value is not None else None

    async def items(self, channel: str, prefix: str = "") -> list[StateItem]:
        """Every fact whose key starts with `prefix` (taken literally: `%` and `_` are not
        wildcards), ordered by key."""
        async with self._readers() as s:
            rows = (await s.execute(select(ChannelState.key, ChannelState.value).where(
                ChannelState.channel == channel, ChannelState.key.startswith(prefix, autoescape=True))
                .order_by(ChannelState.key))).all()
        return [StateItem(key, dict(value)) for key, value in rows]

    async def add(self, channel: str, key: str, value: Mapping[str, Any], *,
                  unless: tuple[str, Callable[[dict[str, Any]], bool]] | None = None) -> bool | None:
        """Store `value` unless `key` already holds one (committed on return); False when it did.

        With `unless=(other_key, test)`, nothing is stored and None returned when `other_key`
        holds a value for which `test` is true, read in the same write transaction: a
        concurrent `change` cannot slip in between the check and the insert.
        """
        async with self._sessions() as s:
            if unless is not None:
                other = await s.scalar(select(ChannelState.value).where(
                    ChannelState.channel == channel, ChannelState.key == unless[0]))
                if other is not None and unless[1](dict(other)):
                    return None
            s.add(ChannelState(channel=channel, key=key, value=dict(value)))
            try:
                await s.commit()
            except IntegrityError:
                await s.rollback()
                return False
        return True

    async def put(self, channel: str, key: str, value: Mapping[str, Any]) -> None:
        """Insert or replace the value under `key` (committed on return)."""
        await self.change(channel, put={key: value})

    async def delete(self, channel: str, key: str) -> None:
        """Forget `key` (committed on return; nothing happens when it is not stored)."""
        await self.change(channel, delete=[key])

    async def change(self, channel: str, *, put: Mapping[str, Mapping[str, Any]] | None = None,
                     delete: Iterable[str] = (), delete_prefixes: Iterable[str] = ()) -> None:
        """Several writes in one transaction: first delete the keys in `delete` and every key
        starting with one of `delete_prefixes`, then insert or replace each of `put`."""
        put = dict(put or {})
        keys, prefixes = list(delete), list(delete_prefixes)
        gone: list[ColumnElement[bool]] = [ChannelState.key.in_(keys)] if keys else []
        gone += [ChannelState.key.startswith(p, autoescape=True) for p in prefixes]
        for attempt in range(2):
            async with self._sessions() as s:
                if gone:
                    await s.execute(_delete_where(channel, gone))
                if put:
                    rows = {r.key: r for r in await s.scalars(select(ChannelState).where(
                        ChannelState.channel == channel, ChannelState.key.in_(sorted(put))))}
                    for key, value in put.items():
                        row = rows.get(key)
                        if row is None:
                            s.add(ChannelState(channel=channel, key=key, value=dict(value)))
                        else:
                            row.value = dict(value)
                            row.updated_at = utcnow()
                try:
                    await s.commit()
                    return
                except IntegrityError:
                    # Another writer inserted one of the keys meanwhile: once more, as an update.
                    await s.rollback()
                    if attempt:
                        raise


def _delete_where(channel: str, gone: list[ColumnElement[bool]]) -> Delete:
    return delete(ChannelState).where(ChannelState.channel == channel, or_(*gone))


@dataclass(frozen=True)
class StoredPart:
    """A part of a stored message, as the blob store and `outbox.notify(attach_part_ids=)` know it."""

    id: int
    media_type: str
    role: str
    filename: str | None
    size: int


@dataclass(frozen=True)
class StoredMessage:
    """What a channel may read back of a stored message."""

    id: int
    project_id: int
    conversation_id: int
    channel: str
    flags: dict[str, Any]
    parts: tuple[StoredPart, ...]  # in the order they were stored


class StoredMessages:
    """Read-only access to stored messages for channels."""

    def __init__(self, readers: SessionFactory) -> None:
        self._readers = readers

    async def get(self, message_id: int, *, parts: bool = True) -> StoredMessage | None:
        """The message with its parts (none read when `parts` is False), or None when unknown."""
        async with self._readers() as s:
            row = (await s.execute(select(Message.project_id, Message.conversation_id, Message.channel,
                                          Message.flags).where(Message.id == message_id))).first()
            if row is None:
                return None
            found: list[StoredPart] = []
            if parts:
                found = [StoredPart(p.id, p.media_type, p.role, p.filename, p.size) for p in await s.scalars(
                    select(Part).where(Part.message_id == message_id).order_by(Part.id))]
        project_id, conversation_id, channel, flags = row
        return StoredMessage(message_id, int(project_id), int(conversation_id), str(channel),
                             dict(flags or {}), tuple(found))

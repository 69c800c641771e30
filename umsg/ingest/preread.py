"""The reads of a batch: duplicates, senders, thread keys and fresh ids in one statement,
then the conversations they name in a second one.

Every statement costs several hops to the database driver's thread (cursor,
execute, fetch, close), and on a busy event loop those hops, not the SQL,
are the price of a batch. So the four reads every batch needs go out as one
UNION ALL whose rows carry a tag saying what they are:

- `m`: a stored message with one of the batch's dedupe keys,
- `c`: an identity of one of the senders, with its contact,
- `r`: a stored thread key one of the messages names,
- `x` (SQLite): the highest id of each table the batch inserts into; the
  writer holds the write lock from BEGIN IMMEDIATE, so the next ids are free,
- `n` (PostgreSQL): ids drawn from the tables' sequences, as many as the batch
  could need at most (unused ones are gaps, as after any rollback).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Select,
    Table,
    Text,
    bindparam,
    cast,
    exists,
    func,
    literal,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.expression import CompoundSelect

from storage.bulk import Bulk, json_list
from storage.models import Contact, Conversation, Identity, Message, Part, QueueItem, ThreadRef
from storage.states import OPEN_CONVERSATION, QueueItemStatus

# The tables the writer gives ids to, in the order of the `x` row's columns.
ID_TABLES: tuple[Table, ...] = tuple(
    m.__table__ for m in (Contact, Conversation, Message, Part, QueueItem))  # type: ignore[misc]


class Row(NamedTuple):
    """One row of the batch's first read. The read is one UNION, so its columns are shared and
    what each means depends on `tag`:

    - "m", a message stored already under a dedupe key: `n1` its id, `n2` its conversation,
      `n3` its contact; `t1` channel, `t2` dedupe key.
    - "c", a known sender: `n1` the contact, `n2` the contact it was merged into; `t1` identity
      kind, `t2` value, `t3` display name, `t4` attributes (JSON text).
    - "r", a stored thread key: `n1` its conversation; `t1` the key.
    - "x" (SQLite): `n1`..`n5` the highest ids of `ID_TABLES`.
    - "n" (PostgreSQL): `n1` a table's index in `ID_TABLES`, `n2` an id drawn from its sequence.
    """

    # Typed Any: which are set (and so not None) depends on the tag.
    tag: str
    project_id: Any
    n1: Any
    n2: Any
    n3: Any
    n4: Any
    n5: Any
    t1: Any
    t2: Any
    t3: Any
    t4: Any


def _each(name: str) -> Any:
    return bindparam(name, expanding=True)


def _int() -> Any:
    return cast(null(), BigInteger)


def _text() -> Any:
    return cast(null(), Text)


def _common(each: Callable[[str], Any]) -> list[Select[Any]]:
    messages = (select(literal("m"), Message.project_id, Message.id, Message.conversation_id, Message.contact_id,
                       _int(), _int(), Message.channel, Message.dedupe_key, _text(), _text())
                .where(Message.project_id.in_(each("projects")), Message.channel.in_(each("channels")),
                       Message.dedupe_key.in_(each("keys"))))
    senders = (select(literal("c"), Identity.project_id, Contact.id, Contact.merged_into_id, _int(), _int(),
                      _int(), Identity.kind, Identity.value, Contact.display_name, cast(Contact.attributes, Text))
               .join(Contact, Contact.id == Identity.contact_id)
               .where(Identity.project_id.in_(each("projects")), Identity.kind.in_(each("kinds")),
                      Identity.value.in_(each("senders"))))
    refs = (select(literal("r"), ThreadRef.project_id, ThreadRef.conversation_id, _int(), _int(), _int(), _int(),
                   ThreadRef.value, _text(), _text(), _text())
            .where(ThreadRef.project_id.in_(each("projects")), ThreadRef.value.in_(each("refs"))))
    return [messages, senders, refs]


def _sqlite() -> CompoundSelect[Any]:
    top = [select(func.max(next(iter(t.primary_key.columns)))).scalar_subquery() for t in ID_TABLES]
    return union_all(*_common(json_list), select(literal("x"), _int(), *top, _text(), _text(), _text(), _text()))


def _postgres() -> CompoundSelect[Any]:
    draws = [select(literal("n"), _int(), literal(i, BigInteger),
                    func.nextval(func.pg_get_serial_sequence(t.name, next(iter(t.primary_key.columns)).name)),
                    _int(), _int(), _int(), _text(), _text(), _text(), _text())
             .select_from(func.generate_series(1, bindparam(f"n{i}", type_=BigInteger)))
             for i, t in enumerate(ID_TABLES)]
    return union_all(*_common(_each), *draws)


def _conversations(each: Callable[[str], Any]) -> Select[Any]:
    """Conversations named by id (thread keys), by token, or the newest open one of a sticky contact
    on a channel; with whether each already waits in the queue.

    Fixed lists are spelled as OR of equalities: an IN list of constants would be an expanding
    parameter, which the compiled-once SQLite form cannot carry.
    """
    newest_open = (select(func.max(Conversation.id))
                   .where(Conversation.project_id.in_(each("projects")),
                          Conversation.contact_id.in_(each("sticky_contacts")),
                          Conversation.channel.in_(each("sticky_channels")),
                          or_(*(Conversation.status == state for state in OPEN_CONVERSATION)))
                   .group_by(Conversation.project_id, Conversation.contact_id, Conversation.channel))
    queued = exists().where(QueueItem.conversation_id == Conversation.id,
                            or_(QueueItem.status == QueueItemStatus.WAITING,
                                QueueItem.status == QueueItemStatus.LEASED))
    columns: list[Any] = [Conversation.id, Conversation.project_id, Conversation.contact_id, Conversation.channel,
                          Conversation.subject, Conversation.status, Conversation.priority, Conversation.queue,
                          Conversation.sla_due_at, Conversation.assignee_id, Conversation.snoozed_until,
                          Conversation.token, queued]
    return select(*columns).where(or_(Conversation.id.in_(each("ids")), Conversation.token.in_(each("tokens")),
                                      Conversation.id.in_(newest_open.scalar_subquery())))


class PreReader:
    """Runs the batch's first read; built once per writer so each batch reuses the compiled statement."""

    def __init__(self) -> None:
        self._sqlite = _sqlite()
        self._postgres = _postgres()
        self._conv_sqlite = _conversations(json_list)
        self._conv_postgres = _conversations(_each)

    async def conversations(self, conn: AsyncConnection, bulk: Bulk, lists: dict[str, list[Any]]) -> Sequence[Any]:
        """Rows of `_conversations` for the lists of ids, tokens, projects, sticky contacts and channels."""
        if conn.dialect.name == "sqlite":
            return await bulk.fetch(conn, self._conv_sqlite, {k: json.dumps(v) for k, v in lists.items()})
        return list(await conn.execute(self._conv_postgres, lists))

    async def read(self, conn: AsyncConnection, bulk: Bulk, *, projects: set[int], channels: set[str],
                   keys: set[str], kinds: set[str], senders: set[str], refs: set[str],
                   upper: Sequence[int], begin: bool = False) -> list[Row]:
        """The tagged rows; `upper[i]` bounds the new rows of `ID_TABLES[i]` (PostgreSQL draws that many).

        `begin`: this read opens the writer's transaction (SQLite: BEGIN IMMEDIATE goes with it).
        """
        # Each filter names the leading columns of a unique index, so every branch is a few index probes.
        lists: dict[str, list[Any]] = {"projects": list(projects), "channels": list(channels), "keys": list(keys),
                                       "kinds": list(kinds), "senders": list(senders), "refs": list(refs)}
        if conn.dialect.name == "sqlite":
            rows = await bulk.fetch(conn, self._sqlite, {k: json.dumps(v) for k, v in lists.items()}, begin=begin)
        else:
            params: dict[str, Any] = {**lists, **{f"n{i}": int(n) for i, n in enumerate(upper)}}
            rows = list(await conn.execute(self._postgres, params))
        return [Row._make(r) for r in rows]

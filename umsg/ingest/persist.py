"""Writing a decided batch: ids from the batch's first read, then one statement per table.

Rows go in foreign-key order (contacts, identities, conversations, messages,
parts, thread keys, queue items, events, small blobs' bytes) as multi-row inserts, then the
changed columns of stored conversations and contacts as executemany
UPDATEs grouped by the set of columns. Event order per message is the one the
ORM pipeline wrote: dropped, enqueued, conversation created, message created.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.bulk import Bulk
from storage.models import Blob, Contact, Conversation, Event, Identity, Message, Part, QueueItem, ThreadRef
from storage.states import MessageStatus, QueueItemStatus
from umsg.ingest.ids import IdAllocator
from umsg.ingest.rows import ContactRow, ConvRow, Work

_CONTACT = cast(Table, Contact.__table__)
_CONVERSATION = cast(Table, Conversation.__table__)
_MESSAGE = cast(Table, Message.__table__)
_PART = cast(Table, Part.__table__)
_QUEUE_ITEM = cast(Table, QueueItem.__table__)
_IDENTITY = cast(Table, Identity.__table__)
_THREAD_REF = cast(Table, ThreadRef.__table__)
_EVENT = cast(Table, Event.__table__)
_BLOB = cast(Table, Blob.__table__)

_Op = tuple[str, Table, list[dict[str, Any]]]  # "insert", "insert_new" or "update", table, rows


def _new_rows(works: Sequence[Work]) -> tuple[list[ContactRow], list[ConvRow]]:
    contacts: dict[int, ContactRow] = {}
    convs: dict[int, ConvRow] = {}
    for w in works:
        assert w.contact is not None and w.conversation is not None
        if w.contact.new:
            contacts.setdefault(id(w.contact), w.contact)
        if w.conversation.new:
            convs.setdefault(id(w.conversation), w.conversation)
    return list(contacts.values()), list(convs.values())


def assign_ids(ids: IdAllocator, works: Sequence[Work]) -> tuple[list[ContactRow], list[ConvRow]]:
    """Give every row the batch creates its id from `ids`; returns the new contacts and conversations."""
    contacts, convs = _new_rows(works)
    for c in contacts:
        c.id = ids.take(_CONTACT)
    for conv in convs:
        conv.id = ids.take(_CONVERSATION)
    for w in works:
        w.message_id = ids.take(_MESSAGE)
        w.part_ids = [ids.take(_PART) for _ in w.prepared.blobs]
        if w.enqueue:
            w.queue_item_id = ids.take(_QUEUE_ITEM)
    return contacts, convs


def _message_row(w: Work, now: datetime) -> dict[str, Any]:
    p, inbound = w.prepared, w.prepared.inbound
    assert w.conversation is not None and w.conversation.id is not None and w.contact is not None
    return {"id": w.message_id, "project_id": w.project_id, "conversation_id": w.conversation.id,
            "contact_id": w.contact.id, "direction": "in", "channel": inbound.channel,
            "from_addr": p.sender_value, "to_addrs": list(inbound.recipients), "subject": inbound.subject,
            "text": p.text, "html": p.html, "provider_id": inbound.provider_id,
            "dedupe_key": inbound.dedupe_key, "status": MessageStatus.RECEIVED, "status_detail": None,
            "author_agent_id": None, "flags": w.flags, "sent_at": inbound.sent_at, "created_at": now}


def _part_rows(w: Work, now: datetime) -> list[dict[str, Any]]:
    return [{"id": pid, "project_id": w.project_id, "message_id": w.message_id, "role": b.role,
             "sha256": b.sha256, "media_type": b.media_type, "size": b.size, "filename": b.filename,
             "content_id": b.content_id, "converter": b.converter, "meta": dict(b.meta), "created_at": now,
             "derived_from_id": w.part_ids[b.derived_from] if b.derived_from is not None else None}
            for pid, b in zip(w.part_ids, w.prepared.blobs, strict=True)]


def _conversation_row(c: ConvRow, now: datetime) -> dict[str, Any]:
    return {"id": c.id, "project_id": c.project_id, "contact_id": c.owner_id, "channel": c.channel,
            "subject": c.subject, "status": c.status, "priority": c.priority, "queue": c.queue,
            "sla_due_at": c.sla_due_at, "snoozed_until": None, "assignee_id": None, "token": c.token,
            "created_at": now, "updated_at": now, "last_message_at": now}


class _Rows:
    """The batch's rows per table, in insertion order."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.parts: list[dict[str, Any]] = []
        self.refs: list[dict[str, Any]] = []
        self.items: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    def event(self, project_id: int, kind: str, payload: dict[str, Any], now: datetime) -> None:
        self.events.append({"project_id": project_id, "kind": kind, "payload": payload, "created_at": now})

    def add(self, w: Work, now: datetime) -> None:
        conv, d = w.conversation, w.decision
        assert conv is not None and conv.id is not None and w.message_id is not None
        self.messages.append(_message_row(w, now))
        self.parts.extend(_part_rows(w, now))
        self.refs.extend({"project_id": w.project_id, "conversation_id": conv.id, "message_id": w.message_id,
                          "value": key} for key in w.new_refs)
        if d is not None and d.action == "drop":
            self.event(w.project_id, "message.dropped",
                       {"message_id": w.message_id, "conversation_id": conv.id, "route": d.route}, now)
        if w.enqueue:
            assert d is not None and d.queue is not None
            facts = {"conversation_id": conv.id, "message_id": w.message_id, "queue": d.queue,
                     "channel": w.prepared.inbound.channel,
                     "priority": d.priority, "route": d.route}
            self.items.append({"id": w.queue_item_id, "project_id": w.project_id, "skills": dict(d.skills),
                               "status": QueueItemStatus.WAITING, "enqueued_at": now, "sla_due_at": conv.sla_due_at,
                               "attempts": 0, "updated_at": now, "lease_owner": None, "lease_until": None,
                               "last_error": None, "agent_id": None, **facts})
            self.event(w.project_id, "queue.enqueued", facts, now)
        if w.new_conversation:
            self.event(w.project_id, "conversation.created",
                       {"conversation_id": conv.id, "contact_id": conv.owner_id, "channel": conv.channel}, now)
        self.event(w.project_id, "message.created",
                   {"message_id": w.message_id, "conversation_id": conv.id, "channel": w.prepared.inbound.channel,
                    "direction": "in", "route": d.route if d is not None else None}, now)


def _changed(table: Table, rows: Sequence[ContactRow | ConvRow], now: datetime) -> list[_Op]:
    """UPDATEs for the stored rows the batch changed, one executemany per set of columns."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in rows:
        if r.changed and not r.new:
            values = {**r.changed, "updated_at": now}
            groups.setdefault(tuple(sorted(values)), []).append({"_id": r.id, **values})
    return [("update", table, params) for params in groups.values()]


async def write(conn: AsyncConnection, bulk: Bulk, ids: IdAllocator, works: Sequence[Work],
                now: datetime, *, commit: bool = False) -> bool:
    """Insert the rows of `works` (decided by the steps) and update the stored rows they changed.

    `ids` was drawn with enough ids per table for every row the batch can create.
    With `commit`, COMMIT may go in the same pipeline (`Bulk.write`); returns whether it did.
    """
    contacts, convs = assign_ids(ids, works)
    rows = _Rows()
    for w in works:
        rows.add(w, now)
    ops: list[_Op] = [
        ("insert", _CONTACT, [
            {"id": c.id, "project_id": c.project_id, "display_name": c.display_name, "attributes": c.attributes,
             "merged_into_id": None, "created_at": now, "updated_at": now} for c in contacts]),
        ("insert", _IDENTITY, [
            {"project_id": c.project_id, "contact_id": c.id, "kind": c.identity[0], "value": c.identity[1],
             "failing": False, "opted_out": False, "created_at": now} for c in contacts if c.identity]),
        ("insert", _CONVERSATION, [_conversation_row(c, now) for c in convs]),
        *(("insert", table, params) for table, params in (
            (_MESSAGE, rows.messages), (_PART, rows.parts), (_THREAD_REF, rows.refs),
            (_QUEUE_ITEM, rows.items), (_EVENT, rows.events))),
    ]
    # Small blobs go with their rows (`Prepared.inline`); the same bytes twice are one row.
    blobs = {b.sha256: data for w in works if w.prepared.inline
             for b, data in zip(w.prepared.blobs, w.prepared.inline, strict=True)}
    ops.append(("insert_new", _BLOB, [{"sha256": sha, "data": data, "created_at": now} for sha, data in blobs.items()]))
    stored_convs = {id(w.conversation): w.conversation for w in works if w.conversation is not None}
    ops += _changed(_CONVERSATION, list(stored_convs.values()), now)
    stored_contacts = {id(w.contact): w.contact for w in works if w.contact is not None}
    ops += _changed(_CONTACT, list(stored_contacts.values()), now)
    return await bulk.write(conn, ops, commit=commit)

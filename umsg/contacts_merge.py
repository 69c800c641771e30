"""Merging two contacts that turned out to be one customer, and undoing it exactly.

A merge moves the source contact's identities, conversations and messages to
the target and marks the source `merged_into` the target; the source row stays.
The `ContactMerge` audit row lists precisely which ids moved, so `unmerge`
moves back those and only those, even if the target gained more since.
Both run inside the caller's transaction (the caller commits, then calls
`EventLog.notify()`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Contact, ContactMerge, Conversation, Identity, Message
from storage.types import utcnow
from umsg.errors import Conflict, NotFound
from umsg.events.log import add_event

# Both databases cap bound parameters per statement (asyncpg: 32767); stay well below.
_CHUNK = 1000

_Movable = type[Identity] | type[Conversation] | type[Message]


async def _ids(session: AsyncSession, model: _Movable, contact_id: int) -> list[int]:
    rows = await session.scalars(select(model.id).where(model.contact_id == contact_id).order_by(model.id))
    return list(rows.all())


async def _move(session: AsyncSession, model: _Movable, ids: Sequence[int], to_contact: int) -> None:
    for start in range(0, len(ids), _CHUNK):
        chunk = list(ids[start : start + _CHUNK])
        await session.execute(
            update(model)
            .where(model.id.in_(chunk))
            .values(contact_id=to_contact)
            .execution_options(synchronize_session="fetch")
        )


async def _lock_contacts(session: AsyncSession, ids: list[int]) -> dict[int, Contact]:
    # FOR UPDATE serialises concurrent merges of the same contacts on PostgreSQL
    # (SQLite writers are serialised already); populate_existing drops stale copies.
    rows = await session.scalars(
        select(Contact)
        .where(Contact.id.in_(ids))
        .order_by(Contact.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {c.id: c for c in rows.all()}


async def merge(
    session: AsyncSession,
    *,
    project_id: int,
    source_id: int,
    target_id: int,
    actor: str,
    reason: str | None = None,
    now: datetime | None = None,
) -> ContactMerge:
    """Move everything of `source_id` to `target_id`; returns the flushed audit row."""
    if source_id == target_id:
        raise Conflict("a contact cannot be merged into itself")
    contacts = await _lock_contacts(session, [source_id, target_id])
    source, target = contacts.get(source_id), contacts.get(target_id)
    for cid, contact in ((source_id, source), (target_id, target)):
        if contact is None:
            raise NotFound(f"contact {cid} not found")
    assert source is not None and target is not None
    if source.project_id != target.project_id:
        raise Conflict(f"contacts {source_id} and {target_id} belong to different projects")
    if source.project_id != project_id:
        raise NotFound(f"contact {source_id} not found")
    for contact in (source, target):
        if contact.merged_into_id is not None:
            raise Conflict(f"contact {contact.id} was already merged into contact {contact.merged_into_id}")

    moved: dict[str, list[int]] = {}
    for key, model in (
        ("identity_ids", Identity),
        ("conversation_ids", Conversation),
        ("message_ids", Message),
    ):
        moved[key] = await _ids(session, model, source_id)
        await _move(session, model, moved[key], target_id)
    source.merged_into_id = target_id
    audit = ContactMerge(
        project_id=project_id,
        source_contact_id=source_id,
        target_contact_id=target_id,
        actor=actor,
        reason=reason,
        created_at=now or utcnow(),
        **moved,
    )
    session.add(audit)
    await session.flush()
    add_event(session, project_id, "contact.merged", _payload(audit, actor))
    return audit


async def unmerge(
    session: AsyncSession, *, merge_id: int, actor: str, now: datetime | None = None
) -> ContactMerge:
    """Move back exactly what merge `merge_id` moved and un-mark the source contact."""
    audit = await session.scalar(
        select(ContactMerge)
        .where(ContactMerge.id == merge_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if audit is None:
        raise NotFound(f"contact merge {merge_id} not found")
    if audit.undone_at is not None:
        raise Conflict(f"contact merge {merge_id} was already undone by {audit.undone_by}")
    contacts = await _lock_contacts(session, [audit.source_contact_id, audit.target_contact_id])
    source, target = contacts.get(audit.source_contact_id), contacts.get(audit.target_contact_id)
    if source is None or target is None:
        raise NotFound(f"a contact of merge {merge_id} no longer exists")
    if source.merged_into_id != target.id:
        raise Conflict(f"contact {source.id} is no longer merged into contact {target.id}")
    if target.merged_into_id is not None:
        # The moved rows went on to a third contact; undo that later merge first.
        raise Conflict(
            f"contact {target.id} was itself merged into contact {target.merged_into_id}; "
            "undo that merge first"
        )

    await _move(session, Identity, audit.identity_ids, source.id)
    await _move(session, Conversation, audit.conversation_ids, source.id)
    await _move(session, Message, audit.message_ids, source.id)
    source.merged_into_id = None
    audit.undone_at = now or utcnow()
    audit.undone_by = actor
    await session.flush()
    add_event(session, audit.project_id, "contact.unmerged", _payload(audit, actor))
    return audit


def _payload(audit: ContactMerge, actor: str) -> dict[str, Any]:
    return {
        "merge_id": audit.id,
        "source_contact_id": audit.source_contact_id,
        "target_contact_id": audit.target_contact_id,
        "identities": len(audit.identity_ids),
        "conversations": len(audit.conversation_ids),
        "messages": len(audit.message_ids),
        "actor": actor,
    }

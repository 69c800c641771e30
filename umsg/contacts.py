"""Contacts as the web API reads and changes them: the queries behind the handlers.

The caller (umsg.web.api.contacts) parses, authorises and serialises; this module runs
the SQL and hands merges to `umsg.contacts_merge` inside its own transaction. As in
`umsg.conversations`, each object loaded by id goes through the caller's `guard` first.
A contact's timeline (every message of every conversation of the contact, across channels)
is read here too, on read-only sessions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import SessionFactory, read_sessions_for
from storage.models import Agent, Contact, ContactMerge, Identity, Message, Part
from umsg import contacts_merge
from umsg.conversations import Guard
from umsg.errors import NotFound
from umsg.events.log import EventLog


@dataclass(frozen=True)
class ContactFilter:
    """Which contacts a listing returns: a page after `after_id`, in the given projects."""

    after_id: int
    limit: int
    project_ids: Collection[int] | None = None  # None: every project
    include_merged: bool = False
    identity: str | None = None  # only contacts owning an identity of this value


@dataclass(frozen=True)
class TimelineEntry:
    """One message of a contact's timeline with all its parts and its author agent's name."""

    message: Message
    parts: list[Part]
    author_name: str | None


@dataclass(frozen=True)
class Timeline:
    """A page of a contact's messages, with the contact and its identities."""

    contact: Contact
    identities: list[Identity]
    entries: list[TimelineEntry]


class Contacts:
    """Reads of contacts with their identities, timelines, and merges, for the web API."""

    def __init__(self, sessions: SessionFactory, events: EventLog, *, readers: SessionFactory | None = None) -> None:
        self.sessions = sessions
        self.events = events
        # On SQLite a read-only session takes no write lock, so a long timeline read blocks no writer.
        self.readers = readers or read_sessions_for(sessions)

    async def page(self, f: ContactFilter) -> list[tuple[Contact, list[Identity]]]:
        """A page of contacts ordered by id, each with its identities."""
        stmt = select(Contact).where(Contact.id > f.after_id).order_by(Contact.id).limit(f.limit)
        if f.project_ids is not None:
            stmt = stmt.where(Contact.project_id.in_(sorted(f.project_ids)))
        if not f.include_merged:
            stmt = stmt.where(Contact.merged_into_id.is_(None))
        if f.identity is not None:
            stmt = stmt.where(Contact.id.in_(select(Identity.contact_id).where(Identity.value == f.identity)))
        async with self.sessions() as s:
            contacts = (await s.scalars(stmt)).all()
            by_contact: dict[int, list[Identity]] = defaultdict(list)
            if contacts:
                rows = await s.scalars(
                    select(Identity)
                    .where(Identity.contact_id.in_([c.id for c in contacts]))
                    .order_by(Identity.id)
                )
                for i in rows:
                    by_contact[i.contact_id].append(i)
        return [(c, by_contact[c.id]) for c in contacts]

    async def get(self, contact_id: int, guard: Guard) -> tuple[Contact, list[Identity]]:
        """One contact with its identities."""
        async with self.sessions() as s:
            contact = await _load(s, contact_id, guard)
            identities = (
                await s.scalars(select(Identity).where(Identity.contact_id == contact.id).order_by(Identity.id))
            ).all()
        return contact, list(identities)

    async def timeline(self, contact_id: int, guard: Guard, *, after_id: int, limit: int) -> Timeline:
        """A page of the messages of every conversation of the contact, in id order."""
        async with self.readers() as s:
            contact = await _load(s, contact_id, guard)
            msgs = (await s.scalars(
                select(Message).where(Message.contact_id == contact_id, Message.id > after_id)
                .order_by(Message.id).limit(limit))).all()
            parts: dict[int, list[Part]] = defaultdict(list)
            if msgs:
                rows = await s.scalars(select(Part).where(Part.message_id.in_([m.id for m in msgs])).order_by(Part.id))
                for p in rows:
                    parts[p.message_id].append(p)
            identities = (await s.scalars(
                select(Identity).where(Identity.contact_id == contact_id).order_by(Identity.id))).all()
            authors = {m.author_agent_id for m in msgs if m.author_agent_id is not None}
            names = {a.id: a.display_name for a in (await s.scalars(
                select(Agent).where(Agent.id.in_(authors)))).all()} if authors else {}
        entries = [
            TimelineEntry(m, parts[m.id], names.get(m.author_agent_id) if m.author_agent_id is not None else None)
            for m in msgs
        ]
        return Timeline(contact, list(identities), entries)

    async def merge(
        self, source_id: int, source_guard: Guard, target_id: int, target_guard: Guard,
        *, by: str, reason: str | None,
    ) -> ContactMerge:
        """Merge the source contact into the target (umsg.contacts_merge.merge), and commit."""
        async with self.sessions() as s:
            source = await _load(s, source_id, source_guard)
            await _load(s, target_id, target_guard)
            record = await contacts_merge.merge(
                s, project_id=source.project_id, source_id=source_id, target_id=target_id,
                actor=by, reason=reason,
            )
            await s.commit()
        self.events.notify()
        return record

    async def unmerge(self, merge_id: int, guard: Guard, *, by: str) -> ContactMerge:
        """Undo merge `merge_id` exactly (umsg.contacts_merge.unmerge), and commit."""
        async with self.sessions() as s:
            record = await s.get(ContactMerge, merge_id)
            if record is None:
                raise NotFound(f"contact merge {merge_id} not found")
            guard(record.project_id)
            record = await contacts_merge.unmerge(s, merge_id=merge_id, actor=by)
            await s.commit()
        self.events.notify()
        return record


async def _load(s: AsyncSession, contact_id: int, guard: Guard) -> Contact:
    contact = await s.get(Contact, contact_id)
    if contact is None:
        raise NotFound(f"contact {contact_id} not found")
    guard(contact.project_id)
    return contact

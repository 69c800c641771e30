"""What one ingest batch reads from the store, in one statement for all its messages (`preread`).

The steps then decide in memory: dedupe keys, the identities of the senders
(and the contacts they were merged into), stored thread keys, the
conversations those keys, tokens and sticky channels point at, and which of
those conversations already wait in the queue. Rows the batch creates are
added to the same maps, so a second message from a new customer in the same
batch finds the contact the first one created.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.bulk import Bulk
from storage.models import Contact
from storage.states import OPEN_CONVERSATION
from umsg.ingest.ids import IdAllocator
from umsg.ingest.preread import ID_TABLES, PreReader
from umsg.ingest.rows import ContactRow, ConvRow, StoredMessage, Work
from umsg.routes.table import RouteTable

_CONTACT_COLUMNS = (Contact.id, Contact.project_id, Contact.display_name, Contact.attributes,
                    Contact.merged_into_id)


def _each(name: str) -> Any:
    return bindparam(name, expanding=True)


# Built once: constructing a statement costs more than running it through the compiled cache.
_CONTACTS = select(*_CONTACT_COLUMNS).where(Contact.id.in_(_each("ids")))

@dataclass(frozen=True)
class Want:
    """What one message of the batch needs looked up."""

    project_id: int
    channel: str
    dedupe_key: str
    kind: str
    sender: str
    blobs: int
    refs: tuple[str, ...]
    own: tuple[str, ...]
    token: str | None
    sticky: bool


@dataclass
class BatchState:
    """Bulk look-ups for a batch plus the rows its earlier messages created."""

    now: datetime
    tables: dict[int, RouteTable] = field(default_factory=dict)
    messages: dict[tuple[int, str, str], StoredMessage | Work] = field(default_factory=dict)
    contacts: dict[tuple[int, str, str], ContactRow] = field(default_factory=dict)
    contact_by_id: dict[int, ContactRow] = field(default_factory=dict)
    # Thread key -> the conversation it names (a stored id, or a row this batch created).
    thread_keys: dict[tuple[int, str], int | ConvRow] = field(default_factory=dict)
    conv_by_id: dict[int, ConvRow] = field(default_factory=dict)
    conv_by_token: dict[str, ConvRow] = field(default_factory=dict)
    # (project, contact, channel) of a stored contact -> its newest open conversation there.
    open_conv: dict[tuple[int, int, str], ConvRow] = field(default_factory=dict)
    # (id() of the contact row, channel) -> the conversation a sticky message of this batch used.
    sticky: dict[tuple[int, str], ConvRow] = field(default_factory=dict)
    # Fresh ids for the rows the batch may create, per table (see preread).
    ids: IdAllocator = field(default_factory=lambda: IdAllocator({}))

    async def load(self, conn: AsyncConnection, reader: PreReader, bulk: Bulk, wants: Sequence[Want],
                   begin: bool = False) -> None:
        """Read what `wants` needs: one statement, plus two more when stored conversations are named.

        `begin`: the first read opens the writer's transaction (see `Bulk.fetch`).
        """
        if not wants:
            return
        upper = (len(wants), len(wants), len(wants), sum(w.blobs for w in wants), len(wants))
        rows = await reader.read(conn, bulk, projects={w.project_id for w in wants},
                                 channels={w.channel for w in wants}, keys={w.dedupe_key for w in wants},
                                 kinds={w.kind for w in wants}, senders={w.sender for w in wants},
                                 refs={k for w in wants for k in (*w.refs, *w.own)}, upper=upper, begin=begin)
        drawn: list[list[int]] = [[] for _ in ID_TABLES]
        for row in rows:  # what each column means per tag: umsg.ingest.preread.Row
            if row.tag == "m":
                self.messages[(row.project_id, row.t1, row.t2)] = StoredMessage(row.n1, row.n2, row.n3)
            elif row.tag == "c":
                attributes = json.loads(row.t4) if row.t4 else {}
                self.contacts[(row.project_id, row.t1, row.t2)] = self._contact(
                    (row.n1, row.project_id, row.t3, attributes, row.n2))
            elif row.tag == "r":
                self.thread_keys[(row.project_id, row.t1)] = row.n1
            elif row.tag == "x":  # SQLite: the highest ids; the next ones are ours while we hold the write lock
                tops = (row.n1, row.n2, row.n3, row.n4, row.n5)
                drawn = [list(range((top or 0) + 1, (top or 0) + 1 + n)) for top, n in zip(tops, upper, strict=True)]
            else:  # "n", PostgreSQL: one id drawn from the sequence of table number `n1`
                drawn[row.n1].append(row.n2)
        self.ids = IdAllocator(dict(zip(ID_TABLES, drawn, strict=True)))
        await self._load_merged(conn)
        await self._load_conversations(conn, reader, bulk, wants)

    def _contact(self, cols: Sequence[Any]) -> ContactRow:
        cid, pid, name, attributes, merged = cols
        row = self.contact_by_id.get(cid)
        if row is None:
            row = ContactRow(cid, pid, name, dict(attributes or {}), merged)
            self.contact_by_id[cid] = row
        return row

    async def _load_merged(self, conn: AsyncConnection) -> None:
        # Identities move on merge, so this is rare: a chain of merges costs a query per link.
        while True:
            missing = {c.merged_into_id for c in self.contact_by_id.values()
                       if c.merged_into_id is not None and c.merged_into_id not in self.contact_by_id}
            if not missing:
                return
            rows = list(await conn.execute(_CONTACTS, {"ids": list(missing)}))
            for cols in rows:
                self._contact(cols)
            if len(rows) < len(missing):
                return  # a dangling merge target: the step keeps the contact it has

    def survivor(self, contact: ContactRow) -> ContactRow:
        """The contact `contact` was (transitively) merged into, as far as it is known."""
        seen: set[int] = set()
        while contact.merged_into_id is not None and contact.merged_into_id not in seen:
            seen.add(contact.merged_into_id)
            target = self.contact_by_id.get(contact.merged_into_id)
            if target is None:
                break
            contact = target
        return contact

    async def _load_conversations(self, conn: AsyncConnection, reader: PreReader, bulk: Bulk,
                                  wants: Sequence[Want]) -> None:
        """The conversations named by thread keys, tokens or sticky channels, and their queue state."""
        ids = {v for v in self.thread_keys.values() if isinstance(v, int)}
        tokens = {w.token for w in wants if w.token}
        sticky_contacts: set[int] = set()
        for w in wants:
            found = self.contacts.get((w.project_id, w.kind, w.sender))
            if w.sticky and found is not None and (survivor := self.survivor(found).id) is not None:
                sticky_contacts.add(survivor)
        if not (ids or tokens or sticky_contacts):
            return
        for cols in await reader.conversations(conn, bulk, {
                "ids": list(ids), "tokens": list(tokens), "projects": list({w.project_id for w in wants}),
                "sticky_contacts": list(sticky_contacts),
                "sticky_channels": list({w.channel for w in wants if w.sticky})}):
            cid, pid, contact_id, channel, subject, status, priority, queue, sla, assignee, snoozed, token, q = cols
            conv = ConvRow(cid, pid, None, contact_id, channel, subject, status, priority, queue, sla, assignee,
                           snoozed, token, queued=bool(q))
            self.conv_by_id[cid] = conv
            self.conv_by_token[token] = conv
        if sticky_contacts:
            # Only the newest open one per (contact, channel) came back through the sticky condition,
            # but a ref or token may have brought older ones: keep the newest.
            for conv in sorted(self.conv_by_id.values(), key=lambda c: c.id or 0):
                if conv.contact_id in sticky_contacts and conv.status in OPEN_CONVERSATION:
                    self.open_conv[(conv.project_id, conv.owner_id, conv.channel)] = conv

"""Plain rows the ingest writer works on instead of ORM objects.

A batch decides everything in memory and then writes with a few multi-row
statements; ORM instances would cost attribute events and a unit-of-work sort
per object for nothing. A row read from the store carries its id; one created
by the batch gets its id when the writer allocates ids for the whole batch.
Changes to a stored row are recorded column by column, so the UPDATE writes
only what this batch decided (as the ORM did) and never overwrites a column
another transaction may have set meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from umsg.ingest.prepare import Prepared
from umsg.routes.targets import RouteDecision


@dataclass(eq=False)
class ContactRow:
    id: int | None
    project_id: int
    display_name: str | None
    attributes: dict[str, Any]
    merged_into_id: int | None = None
    new: bool = False
    # (kind, value) of the identity a new contact is created for.
    identity: tuple[str, str] | None = None
    changed: dict[str, Any] = field(default_factory=dict)

    def set(self, **values: Any) -> None:
        for key, value in values.items():
            setattr(self, key, value)
        if not self.new:
            self.changed.update(values)


@dataclass(eq=False)
class ConvRow:
    id: int | None
    project_id: int
    contact: ContactRow | None  # set for conversations this batch creates
    contact_id: int | None
    channel: str
    subject: str | None
    status: str
    priority: int
    queue: str | None
    sla_due_at: datetime | None
    assignee_id: int | None
    snoozed_until: datetime | None
    token: str
    new: bool = False
    # A stored conversation with a waiting or leased item, or one this batch enqueued.
    queued: bool = False
    changed: dict[str, Any] = field(default_factory=dict)

    def set(self, **values: Any) -> None:
        for key, value in values.items():
            setattr(self, key, value)
        if not self.new:
            self.changed.update(values)

    @property
    def owner_id(self) -> int:
        """The contact id, once the batch's ids are allocated."""
        cid = self.contact.id if self.contact is not None else self.contact_id
        assert cid is not None
        return cid


@dataclass(frozen=True)
class StoredMessage:
    """Enough of a stored message to answer a duplicate."""

    id: int
    conversation_id: int
    contact_id: int


@dataclass
class Work:
    """What the steps decide for one message; ids are filled in before the rows are written."""

    prepared: Prepared
    project_id: int
    contact: ContactRow | None = None
    conversation: ConvRow | None = None
    new_conversation: bool = False
    flags: dict[str, Any] = field(default_factory=dict)
    new_refs: list[str] = field(default_factory=list)  # thread keys this message records
    decision: RouteDecision | None = None
    enqueue: bool = False
    message_id: int | None = None
    part_ids: list[int] = field(default_factory=list)
    queue_item_id: int | None = None

    @property
    def route_actions(self) -> bool:
        """Whether the route asks for actions beyond enqueueing (auto-reply, forward, preferred agent)."""
        d = self.decision
        return d is not None and d.action != "drop" and (
            d.reply is not None or d.forward is not None or (self.enqueue and d.preferred is not None))

    @property
    def needs_orm(self) -> bool:
        """Whether `followup` must run for this message: route actions or the message's effects."""
        return self.route_actions or bool(self.prepared.inbound.effects)

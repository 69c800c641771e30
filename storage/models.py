"""The normalised store: every table the gateway keeps, as SQLAlchemy 2.x models.

Every row that holds customer data belongs to a project (tenant). Media bytes
live in the blob store; rows only carry their sha256.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from storage.states import ConversationStatus, JobStatus, MessageStatus, OfferStatus, QueueItemStatus
from storage.types import BigId, UTCDateTime, utcnow

# Explicit constraint names keep Alembic migrations identical on both databases.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


def _pk() -> Mapped[int]:
    return mapped_column(BigId, primary_key=True, autoincrement=True)


def _project_fk() -> Mapped[int]:
    return mapped_column(BigId, ForeignKey("project.id"), index=True)


class Project(Base):
    __tablename__ = "project"
    id: Mapped[int] = _pk()
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Contact(Base):
    __tablename__ = "contact"
    id: Mapped[int] = _pk()
    project_id: Mapped[int] = _project_fk()
    display_name: Mapped[str | None] = mapped_column(String(300))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Set when this contact was merged into another; the row stays for unmerge.
    merged_into_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("contact.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Identity(Base):
    """One way to reach a contact: an email address, an E.164 number, a fax number, a chat id."""

    __tablename__ = "identity"
    __table_args__ = (UniqueConstraint("project_id", "kind", "value"),)
    id: Mapped[int] = _pk()
    project_id: Mapped[int] = _project_fk()
    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contact.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(320))
    # Delivery trouble (bounces, undeliverable SMS) and opt-outs are facts about an identity.
    failing: Mapped[bool] = mapped_column(Boolean, default=False)
    opted_out: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    contact: Mapped[Contact] = relationship(lazy="raise")


class ContactMerge(Base):
    """Audit of a merge: what moved from the source contact to the target, so it can be undone."""

    __tablename__ = "contact_merge"
    id: Mapped[int] = _pk()
    project_id: Mapped[int] = _project_fk()
    source_contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contact.id"))
    target_contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contact.id"))
    identity_ids: Mapped[list[Any]] = mapped_column(default=list)
    conversation_ids: Mapped[list[Any]] = mapped_column(default=list)
    message_ids: Mapped[list[Any]] = mapped_column(default=list)
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    undone_at: Mapped[datetime | None] = mapped_column()
    undone_by: Mapped[str | None] = mapped_column(String(200))


class Conversation(Base):
    """A channel-agnostic thread with one contact."""

    __tablename__ = "conversation"
    __table_args__ = (Index("ix_conversation_contact_status", "contact_id", "status"),)
    id: Mapped[int] = _pk()
    project_id: Mapped[int] = _project_fk()
    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contact.id"))
    channel: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=ConversationStatus.OPEN)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    queue: Mapped[str | None] = mapped_column(String(100))
    sla_due_at: Mapped[datetime | None] = mapped_column()
    snoozed_until: Mapped[datetime | None] = mapped_column()
    assignee_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("agent.id"))
    token: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    last_message_at: Mapped[datetime] = mapped_column(default=utcnow)
    contact: Mapped[Contact] = relationship(lazy="raise")


class ThreadRef(Base):
    """A key (an email Message-ID, a chat session id) that names a conversation."""

    __tablename__ = "thread_ref"
    __table_args__ = (UniqueConstraint("project_id", "value"),)
    id: Mapped[int] = _pk()
    project_id: Mapped[int] = _project_fk()
    conversation_id: Mapped[int] = mapped_column(BigId, ForeignKey("conversation.id"), index=True)
    message_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("message.id"))
    value: Mapped[str] = mapped_column(String(500))


class Message(Base):
    __tablename__ = "message"
    __table_args__ = (
        UniqueConstraint("project_id", "channel", "dedupe_key"),
        Index("ix_message_conversation_created", "conversation_id", "created_at"),
    )
    id: Mapped[int] = _pk()
    project_id: Mapped[int] = _project_fk()
    conversation_id: Mapped[int] = mapped_column(BigId, ForeignKey("conversation.id"))
    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contact.id"), index=True)
    direction: Mapped[str] = mapped_column(String(8))  # in | out | note
    channel: Mapped[str] = mapped_column(String(32))
    from_addr: Mapped[str] = mapped_column(String(320))
    to_addrs: Mapped[list[Any]] = mapped_column(default=list)
    subject: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)  # sanitised for display
    provider_id: Mapped[str | None] = mapped_column(String(200), index=True)
    dedupe_key: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16), default=MessageStatus.RECEIVED)  # storage.states
    status_detail: Mapped[str | None] = mapped_column(Text)
    author_agent_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("agent.id"))
    flags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    sent_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Relationships let the ingest writer insert a whole batch in one flush.
    conversation: Mapped[Conversation] = relationship(lazy="raise")
    contact: Mapped[Contact] = relationship(lazy="raise")


class Part(Base):
    """A stored piece of a message: the raw original, attachments and derived conversions."""

    __tablename__ = "part"
    id: Mapped[int] = _pk()
    project_id: Mapped[int] = _project_fk()
    message_id: Mapped[int] = mapped_column(BigId, ForeignKey("message.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))  # raw | body | attachment | inline | derived ...
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    media_type: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(BigId)
    filename: Mapped[str | None] = mapped_column(String(500))
    content_id: Mapped[str | None] = mapped_column(String(500))
    derived_from_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("part.id"))
    converter: Mapped[str | None] = mapped_column(String(100))
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    message: Mapped[Message] = relationship(lazy="raise")
    derived_from: Mapped[Part | None] = relationship(remote_side="Part.id", lazy="raise")


class Blob(Base):
    """The bytes of a small blob, kept in the database (larger ones are files: `storage.blobs`).

    Written by the ingest writer in the transaction of the rows that name them, so a small
    message costs one durable commit instead of a file, its fsync and its folder's fsync each.
    Content-addressed like the files: no project, shared by every part with the same bytes.
    """

    __tablename__ = "blob"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Agent(Base):
    __tablename__ = "agent"
    id: Mapped[int] = _pk()
    login: Mapped[str] = mapped_column(String(200), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    state: Mapped[str] = mapped_column(String(16), default="offline")
    state_reason: Mapped[str | None] = mapped_column(String(100))
    state_since: Mapped[datetime] = mapped_column(default=utcnow)
    capacity: Mapped[int] = mapped_column(Integer, default=100)
    password_hash: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AgentProject(Base):
    __tablename__ = "agent_project"
    agent_id: Mapped[int] = mapped_column(BigId, ForeignKey("agent.id"), primary_key=True)
    project_id: Mapped[int] = mapped_column(BigId, ForeignKey("project.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16), default="agent")


class Skill(Base):
    __tablename__ = "skill"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[int] = _pk()
    project_id: Mapped[int] = _project_fk()
    name: Mapped[str] = mapped_column(String(100))


class AgentSkill(Base):
    __tablename__ = "agent_skill"
    agent_id: Mapped[int] = mapped_column(BigId, ForeignKey("agent.id"), primary_key=True)
    skill_id: Mapped[int] = mapped_column(BigId, ForeignKey("skill.id"), primary_key=True)
    proficiency: Mapped[int] = mapped_column(Integer, default=3)


class AgentStateHistory(Base):
    __tablename__ = "agent_state_history"
    id: Mapped[int] = _pk()
    agent_id: Mapped[int] = mapped_column(BigId, ForeignKey("agent.id"), index=True)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(100))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()


class QueueItem(Base):
    """A unit of work waiting for an agent (or being worked) in the universal queue."""

    __tablename__ = "queue_item"
    __table_args__ = (
        Index("ix_queue_item_ready", "status", "priority", "enqueued_at"),
        Index("ix_queue_item_lease", "status", "lease_until"),
    )
    id: Mapped[int] = _pk()
    project_id: Mapped[int] = _project_fk()
    conversation_id: Mapped[int] = mapped_column(BigId, ForeignKey("conversation.id"), index=True)
    message_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("message.id"))
    queue: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    skills: Mapped[dict[str, Any]] = mapped_column(default=dict)  # skill name -> min proficiency
    route: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default=QueueItemStatus.WAITING)
    enqueued_at: Mapped[datetime] = mapped_column(default=utcnow)
    sla_due_at: Mapped[datetime | None] = mapped_column()
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    agent_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("agent.id"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Job(Base):
    """Durable background work (outbound deliveries, retries) with lease and attempts."""

    __tablename__ = "job"
    __table_args__ = (Index("ix_job_ready", "status", "run_after"),)
    id: Mapped[int] = _pk()
    project_id: Mapped[int] = _project_fk()
    kind: Mapped[str] = mapped_column(String(50))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=8)
    run_after: Mapped[datetime] = mapped_column(default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Event(Base):
    """The event outbox: written in the same transaction as the change it reports."""

    __tablename__ = "event"
    id: Mapped[int] = _pk()
    project_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("project.id"), index=True)
    kind: Mapped[str] = mapped_column(String(50))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_token"
    id: Mapped[int] = _pk()
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # admin | supervisor | agent
    agent_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("agent.id"))
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()
    # None: never expires (every token made before migration 0012, and CLI tokens without --expires).
    expires_at: Mapped[datetime | None] = mapped_column()
    # Browser sessions only: the refreshes of one sign-in end here (its absolute lifetime).
    renewable_until: Mapped[datetime | None] = mapped_column()


class SigninThrottle(Base):
    """Failed sign-ins of one login (`login:NAME`) or client address (`addr:IP`) in the current
    window, and until when further attempts are refused; shared by every process on the store."""

    __tablename__ = "signin_throttle"
    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[datetime] = mapped_column()
    locked_until: Mapped[datetime | None] = mapped_column()


class StoredRouteTable(Base):
    """A project's channel routes as saved through the API (the TOML file seeds them)."""

    __tablename__ = "route_table"
    id: Mapped[int] = _pk()
    project_id: Mapped[int] = mapped_column(BigId, ForeignKey("project.id"), unique=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    routes: Mapped[list[Any]] = mapped_column(default=list)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(200))


class ChannelState(Base):
    """Small durable facts a channel adapter keeps between restarts (IMAP UIDVALIDITY + UID,
    SMPP sequence numbers), written in the same transaction as what they describe when possible."""

    __tablename__ = "channel_state"
    __table_args__ = (UniqueConstraint("channel", "key"),)
    id: Mapped[int] = _pk()
    channel: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(300))
    value: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AgentQueue(Base):
    """An agent's membership in a queue of a project; `rank` orders agents for fixed-order routing.

    An agent with no rows for a project serves every queue of that project."""

    __tablename__ = "agent_queue"
    agent_id: Mapped[int] = mapped_column(BigId, ForeignKey("agent.id"), primary_key=True)
    project_id: Mapped[int] = mapped_column(BigId, ForeignKey("project.id"), primary_key=True)
    queue: Mapped[str] = mapped_column(String(100), primary_key=True)
    rank: Mapped[int] = mapped_column(Integer, default=0)


class RouterOffer(Base):
    """An offer of a queue item to an agent: a lease with a timeout, settled exactly once."""

    __tablename__ = "router_offer"
    __table_args__ = (
        Index("ix_router_offer_item_status", "item_id", "status"),
        Index("ix_router_offer_conversation", "conversation_id", "status"),
    )
    id: Mapped[int] = _pk()
    project_id: Mapped[int] = _project_fk()
    item_id: Mapped[int] = mapped_column(BigId, ForeignKey("queue_item.id"))
    conversation_id: Mapped[int] = mapped_column(BigId, ForeignKey("conversation.id"))
    agent_id: Mapped[int] = mapped_column(BigId, ForeignKey("agent.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=OfferStatus.OFFERED)
    why: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    decided_at: Mapped[datetime | None] = mapped_column()
    reason: Mapped[str | None] = mapped_column(String(100))


class RouterPin(Base):
    """A waiting item reserved for one agent until `until` (transfer to an agent, last agent)."""

    __tablename__ = "router_pin"
    item_id: Mapped[int] = mapped_column(BigId, ForeignKey("queue_item.id"), primary_key=True)
    agent_id: Mapped[int] = mapped_column(BigId, ForeignKey("agent.id"))
    until: Mapped[datetime] = mapped_column()
    kind: Mapped[str] = mapped_column(String(16))  # transfer | last_agent


class ProviderRef(Base):
    """An id a peer gave one of our outgoing messages (SMSC message_id, relay queue id, fax job).

    Written as soon as the peer answers, before its delivery report can arrive, so a receipt
    always finds its message; one message may have several (the parts of a long SMS)."""

    __tablename__ = "provider_ref"
    __table_args__ = (UniqueConstraint("channel", "provider_id"),)
    id: Mapped[int] = _pk()
    project_id: Mapped[int] = _project_fk()
    channel: Mapped[str] = mapped_column(String(100))
    provider_id: Mapped[str] = mapped_column(String(200))
    message_id: Mapped[int] = mapped_column(BigId, ForeignKey("message.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ChannelRename(Base):
    """A stored channel name moved onto a configured instance (migration 0010): at start for the
    name an adapter type used to stamp (`email`), or by `umsg channels rename OLD NEW`.

    `rows` counts what moved per table; `skipped` what stayed under the old name because its
    unique key already exists under the new one."""

    __tablename__ = "channel_rename"
    __table_args__ = (Index("ix_channel_rename_old_name_new_name", "old_name", "new_name"),)
    id: Mapped[int] = _pk()
    old_name: Mapped[str] = mapped_column(String(100))
    new_name: Mapped[str] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(16))  # start | cli
    rows: Mapped[dict[str, Any]] = mapped_column(default=dict)
    skipped: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# -- web chat and the agents' inbox (issue 5): tables go below, migration 0005 ----------------


class CannedResponse(Base):
    """A reusable answer an agent inserts in the composer; `{{contact.name}}`-style variables
    are filled in by the inbox at insertion time, so the stored body stays a template."""

    __tablename__ = "canned_response"
    __table_args__ = (UniqueConstraint("project_id", "title"),)
    id: Mapped[int] = _pk()
    project_id: Mapped[int] = _project_fk()
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    updated_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WrapupCode(Base):
    """A code an agent picks when closing a conversation (the outcome, for reporting)."""

    __tablename__ = "wrapup_code"
    __table_args__ = (UniqueConstraint("project_id", "code"),)
    id: Mapped[int] = _pk()
    project_id: Mapped[int] = _project_fk()
    code: Mapped[str] = mapped_column(String(100))
    label: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# -- SMS (issue 6): tables go below, migration 0006 -------------------------------------------


# -- telephony and voicemail (issue 7): tables go below, migration 0007 -----------------------


# -- fax (issue 8): tables go below, migration 0008 -------------------------------------------

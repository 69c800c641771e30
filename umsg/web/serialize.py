"""Rows of the store as the JSON the API answers with.

One function per kind so every endpoint shows an object the same way.
Timestamps are ISO 8601 in UTC; secrets (conversation reply tokens, token
hashes, password hashes) never leave the server.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from storage.models import (
    Agent,
    Contact,
    ContactMerge,
    Conversation,
    Event,
    Identity,
    Message,
    Part,
    QueueItem,
)

Json = dict[str, Any]


def ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def page(items: Sequence[Json], limit: int) -> Json:
    """A page of results; `next_after_id` is what to pass as `after_id` for the next page."""
    more = bool(items) and len(items) >= limit
    return {"items": list(items), "next_after_id": items[-1]["id"] if more else None}


def part(p: Part) -> Json:
    return {
        "id": p.id,
        "message_id": p.message_id,
        "role": p.role,
        "media_type": p.media_type,
        "size": p.size,
        "filename": p.filename,
        "content_id": p.content_id,
        "sha256": p.sha256,
        "derived_from_id": p.derived_from_id,
        "converter": p.converter,
        "meta": p.meta,
        "content_url": f"/api/v1/parts/{p.id}/content",
        "created_at": ts(p.created_at),
    }


def message(m: Message, parts: Iterable[Part] = ()) -> Json:
    return {
        "id": m.id,
        "project_id": m.project_id,
        "conversation_id": m.conversation_id,
        "contact_id": m.contact_id,
        "direction": m.direction,
        "channel": m.channel,
        "from": m.from_addr,
        "to": m.to_addrs,
        "subject": m.subject,
        "text": m.text,
        "html": m.html,
        "provider_id": m.provider_id,
        "dedupe_key": m.dedupe_key,
        "status": m.status,
        "status_detail": m.status_detail,
        "author_agent_id": m.author_agent_id,
        "flags": m.flags,
        # Set by the email channel when the display name shows an address that is not the sender's.
        "sender_warning": (m.flags or {}).get("sender_warning"),
        "sent_at": ts(m.sent_at),
        "created_at": ts(m.created_at),
        "parts": [part(p) for p in parts],
    }


def conversation(c: Conversation) -> Json:
    return {
        "id": c.id,
        "project_id": c.project_id,
        "contact_id": c.contact_id,
        "channel": c.channel,
        "subject": c.subject,
        "status": c.status,
        "priority": c.priority,
        "queue": c.queue,
        "assignee_id": c.assignee_id,
        "sla_due_at": ts(c.sla_due_at),
        "snoozed_until": ts(c.snoozed_until),
        "created_at": ts(c.created_at),
        "updated_at": ts(c.updated_at),
        "last_message_at": ts(c.last_message_at),
    }


def identity(i: Identity) -> Json:
    return {
        "id": i.id,
        "kind": i.kind,
        "value": i.value,
        "failing": i.failing,
        "opted_out": i.opted_out,
        "created_at": ts(i.created_at),
    }


def contact(c: Contact, identities: Iterable[Identity] | None = None) -> Json:
    data: Json = {
        "id": c.id,
        "project_id": c.project_id,
        "display_name": c.display_name,
        "attributes": c.attributes,
        "merged_into": c.merged_into_id,
        "created_at": ts(c.created_at),
        "updated_at": ts(c.updated_at),
    }
    if identities is not None:
        data["identities"] = [identity(i) for i in identities]
    return data


def contact_merge(m: ContactMerge) -> Json:
    return {
        "id": m.id,
        "project_id": m.project_id,
        "source_contact_id": m.source_contact_id,
        "target_contact_id": m.target_contact_id,
        "identity_ids": m.identity_ids,
        "conversation_ids": m.conversation_ids,
        "message_ids": m.message_ids,
        "actor": m.actor,
        "reason": m.reason,
        "created_at": ts(m.created_at),
        "undone_at": ts(m.undone_at),
        "undone_by": m.undone_by,
    }


def queue_item(q: QueueItem) -> Json:
    return {
        "id": q.id,
        "project_id": q.project_id,
        "conversation_id": q.conversation_id,
        "message_id": q.message_id,
        "queue": q.queue,
        "channel": q.channel,
        "priority": q.priority,
        "skills": q.skills,
        "route": q.route,
        "status": q.status,
        "enqueued_at": ts(q.enqueued_at),
        "sla_due_at": ts(q.sla_due_at),
        "lease_owner": q.lease_owner,
        "lease_until": ts(q.lease_until),
        "attempts": q.attempts,
        "last_error": q.last_error,
        "agent_id": q.agent_id,
        "updated_at": ts(q.updated_at),
    }


def agent(a: Agent, projects: Sequence[str] | None = None, skills: dict[str, int] | None = None) -> Json:
    data: Json = {
        "id": a.id,
        "login": a.login,
        "display_name": a.display_name,
        "email": a.email,
        "state": a.state,
        "state_reason": a.state_reason,
        "state_since": ts(a.state_since),
        "capacity": a.capacity,
        "created_at": ts(a.created_at),
    }
    if projects is not None:
        data["projects"] = list(projects)
    if skills is not None:
        data["skills"] = skills
    return data


def event(e: Event) -> Json:
    return {
        "id": e.id,
        "kind": e.kind,
        "project_id": e.project_id,
        "payload": e.payload,
        "created_at": ts(e.created_at),
    }

"""Loading a claimed batch: each job's message, its attachments and its thread, as `Outbound`.

One read transaction per batch, not one per job: one query for the messages (with their
conversation's token and whether they have attachments or thread references), and a
query each for attachment parts and thread references only when some message has them
(an SMS batch needs one query). Attachment bytes come from the blob store afterwards,
per job, outside any transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

from sqlalchemy import Table, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.blobs import BlobStore
from storage.models import Conversation, Message, Part, ThreadRef
from umsg.errors import PermanentError
from umsg.model import Outbound, OutboundPart, ThreadHints
from umsg.outbound.claim import Claimed

_MESSAGE = cast(Table, Message.__table__)
_CONVERSATION = cast(Table, Conversation.__table__)
_PART = cast(Table, Part.__table__)
_THREAD_REF = cast(Table, ThreadRef.__table__)
# Thread keys handed to the adapter (email References); the newest matter most.
MAX_THREAD_REFS = 20


@dataclass(frozen=True)
class StoredPart:
    """An attachment row: where its bytes are and how to present them."""

    part_id: int
    sha256: str
    media_type: str
    filename: str | None


@dataclass(frozen=True)
class Loaded:
    """A job's outbound message minus attachment bytes, or why it cannot be sent."""

    outbound: Outbound | None
    parts: tuple[StoredPart, ...] = ()
    error: str | None = None


async def load_batch(s: AsyncSession, jobs: Sequence[Claimed]) -> dict[int, Loaded]:
    """What each job of the batch sends, by job id (jobs naming no message are left out)."""
    ids = list({j.message_id for j in jobs if j.message_id is not None})
    if not ids:
        return {}
    m, conv = _MESSAGE.c, _CONVERSATION.c
    has_parts = exists().where(_PART.c.message_id == m.id, _PART.c.role == "attachment")
    has_refs = exists().where(_THREAD_REF.c.conversation_id == m.conversation_id)
    rows = {r.id: r for r in (await s.execute(
        select(m.id, m.project_id, m.conversation_id, m.direction, m.channel, m.from_addr, m.to_addrs,
               m.subject, m.text, m.html, m.flags, conv.token,
               has_parts.label("has_parts"), has_refs.label("has_refs"))
        .select_from(_MESSAGE.outerjoin(_CONVERSATION, conv.id == m.conversation_id))
        .where(m.id.in_(ids))
    )).all()}
    parts = await _parts(s, [i for i, r in rows.items() if r.has_parts])
    refs = await _refs(s, list({r.conversation_id for r in rows.values() if r.has_refs}))
    loaded: dict[int, Loaded] = {}
    for job in jobs:
        if job.message_id is None:
            continue
        row = rows.get(job.message_id)
        if row is None or row.direction != "out":
            loaded[job.job_id] = Loaded(None, error=f"message {job.message_id} is not an outgoing message")
        elif not row.to_addrs:
            loaded[job.job_id] = Loaded(None, error=f"message {row.id} has no recipient")
        else:
            loaded[job.job_id] = Loaded(_outbound(row, job, refs.get(row.conversation_id, [])),
                                        tuple(parts.get(row.id, ())))
    return loaded


def _outbound(row: Any, job: Claimed, refs: list[str]) -> Outbound:
    flags: dict[str, Any] = row.flags or {}
    return Outbound(
        message_id=row.id,
        channel=row.channel,
        sender=row.from_addr,
        recipient=str(row.to_addrs[0]),
        text=row.text or "",
        subject=row.subject,
        html=row.html,
        thread=ThreadHints(refs=tuple(refs), conversation_token=row.token),
        automatic=bool(flags.get("automatic")),
        # `attempt` lets an adapter skip looking for parts an earlier attempt got accepted.
        meta={"conversation_id": row.conversation_id, "project_id": row.project_id,
              "notification": bool(flags.get("notification")), "attempt": job.attempts},
    )


async def _parts(s: AsyncSession, message_ids: list[int]) -> dict[int, list[StoredPart]]:
    if not message_ids:
        return {}
    p = _PART.c
    found: dict[int, list[StoredPart]] = {}
    for r in (await s.execute(
        select(p.message_id, p.id, p.sha256, p.media_type, p.filename)
        .where(p.message_id.in_(message_ids), p.role == "attachment").order_by(p.id)
    )).all():
        found.setdefault(r.message_id, []).append(StoredPart(r.id, r.sha256, r.media_type, r.filename))
    return found


async def _refs(s: AsyncSession, conversation_ids: list[int]) -> dict[int, list[str]]:
    """The newest MAX_THREAD_REFS references of each conversation, oldest first."""
    if not conversation_ids:
        return {}
    t = _THREAD_REF.c
    rank = func.row_number().over(partition_by=t.conversation_id, order_by=t.id.desc()).label("rank")
    newest = select(t.conversation_id, t.id, t.value, rank).where(t.conversation_id.in_(conversation_ids)).subquery()
    found: dict[int, list[str]] = {}
    for r in (await s.execute(
        select(newest.c.conversation_id, newest.c.value)
        .where(newest.c.rank <= MAX_THREAD_REFS).order_by(newest.c.id)
    )).all():
        found.setdefault(r.conversation_id, []).append(r.value)
    return found


async def attach(loaded: Loaded, blobs: BlobStore | None) -> Outbound:
    """The job's Outbound with its attachments' bytes; PermanentError when it cannot be sent."""
    if loaded.outbound is None:
        raise PermanentError(loaded.error or "deliver job names no message")
    if not loaded.parts:
        return loaded.outbound
    if blobs is None:
        raise PermanentError("the message has attachments but this dispatcher has no blob store")
    out = []
    for p in loaded.parts:
        try:
            data = await blobs.get(p.sha256)
        except FileNotFoundError as exc:
            raise PermanentError(f"attachment {p.filename or p.part_id} is missing from the blob store") from exc
        out.append(OutboundPart(media_type=p.media_type, data=data, filename=p.filename))
    return replace(loaded.outbound, parts=tuple(out))

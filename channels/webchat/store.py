"""What the web chat reads and writes in the store besides ingest (which goes through the sink).

History of a visitor, opening state (hours, available agents), the contact's email,
ratings, and the facts the live notices need.
Reads use `readers` (no write lock on SQLite); writes are small transactions that add
their event in the same commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.exc import IntegrityError

from storage.models import (
    Agent,
    AgentProject,
    ChannelState,
    Contact,
    Conversation,
    Identity,
    Message,
    Part,
    Project,
    RouterOffer,
)
from umsg.errors import TransientError
from umsg.model import IdentityKind
from umsg.services import ChannelServices


@dataclass(frozen=True)
class VisitorContact:
    contact_id: int
    name: str | None
    email: str | None


def _client_id(dedupe_key: str) -> str | None:
    # Inbound keys are `webchat:<visitor>:<client id>` (ids.dedupe_key).
    parts = dedupe_key.split(":")
    return parts[2] if len(parts) == 3 and parts[0] == "webchat" else None


def message_frame(m: Message, author: str | None, files: Sequence[Part]) -> dict[str, Any]:
    """A stored message as the widget shows it (text only: the widget never renders HTML)."""
    return {
        "type": "message",
        "id": m.id,
        "conversation_id": m.conversation_id,
        "client_id": _client_id(m.dedupe_key) if m.direction == "in" else None,
        "direction": m.direction,
        "text": m.text or "",
        "author": author,
        "at": m.created_at.isoformat(),
        "files": [{"id": p.id, "name": p.filename or "file", "type": p.media_type, "size": p.size}
                  for p in files],
    }


class ChatStore:
    def __init__(self, services: ChannelServices, *, channel: str, project: str, instance: str) -> None:
        self._s = services
        self._channel = channel
        self._project = project
        self._instance = instance
        self._project_id: int | None = None

    async def project_id(self) -> int:
        if self._project_id is None:
            async with self._s.readers() as s:
                pid = await s.scalar(select(Project.id).where(Project.slug == self._project))
            if pid is None:
                raise TransientError(f"project {self._project!r} does not exist yet")
            self._project_id = int(pid)
        return self._project_id

    # -- reading ---------------------------------------------------------------------------

    async def contact(self, visitor_id: str) -> VisitorContact | None:
        pid = await self.project_id()
        async with self._s.readers() as s:
            contact = await s.scalar(select(Contact).join(Identity, Identity.contact_id == Contact.id).where(
                Identity.project_id == pid, Identity.kind == IdentityKind.CHAT.value, Identity.value == visitor_id))
            if contact is None:
                return None
            email = await s.scalar(select(Identity.value).where(
                Identity.contact_id == contact.id, Identity.kind == IdentityKind.EMAIL.value)
                .order_by(Identity.id.desc()).limit(1))
            return VisitorContact(contact.id, contact.display_name, email)

    async def history(self, contact_id: int, limit: int) -> tuple[list[dict[str, Any]], list[int]]:
        """The contact's chat messages, oldest first, and the ids of their conversations."""
        async with self._s.readers() as s:
            conv_ids = sorted(set((await s.scalars(select(Message.conversation_id).where(
                Message.contact_id == contact_id, Message.channel == self._channel).distinct())).all()))
            if not conv_ids or limit <= 0:
                return [], conv_ids
            rows = list((await s.scalars(select(Message).where(
                Message.conversation_id.in_(conv_ids), Message.channel == self._channel,
                Message.direction.in_(("in", "out"))).order_by(Message.created_at.desc(), Message.id.desc())
                .limit(limit))).all())
            rows.reverse()
            frames = await self._frames(s, rows)
        return frames, conv_ids

    async def message(self, message_id: int) -> dict[str, Any] | None:
        async with self._s.readers() as s:
            m = await s.get(Message, message_id)
            return (await self._frames(s, [m]))[0] if m is not None else None

    async def _frames(self, s: Any, rows: Sequence[Message]) -> list[dict[str, Any]]:
        agent_ids = {m.author_agent_id for m in rows if m.author_agent_id is not None}
        names: dict[int, str] = {}
        if agent_ids:
            names = dict((await s.execute(select(Agent.id, Agent.display_name)
                                          .where(Agent.id.in_(sorted(agent_ids))))).all())
        files: dict[int, list[Part]] = {}
        if rows:
            for p in await s.scalars(select(Part).where(Part.message_id.in_([m.id for m in rows]),
                                                        Part.role == "attachment").order_by(Part.id)):
                files.setdefault(p.message_id, []).append(p)
        return [message_frame(m, names.get(m.author_agent_id) if m.author_agent_id else None, files.get(m.id, ()))
                for m in rows]

    async def agents_available(self) -> bool:
        pid = await self.project_id()
        async with self._s.readers() as s:
            found = await s.scalar(select(Agent.id).join(AgentProject, and_(
                AgentProject.agent_id == Agent.id, AgentProject.project_id == pid))
                .where(Agent.state == "available").limit(1))
        return found is not None

    async def agent_name(self, agent_id: int) -> str | None:
        async with self._s.readers() as s:
            name = await s.scalar(select(Agent.display_name).where(Agent.id == agent_id))
        return str(name) if name is not None else None

    async def offer_conversation(self, offer_id: int) -> int | None:
        async with self._s.readers() as s:
            conv = await s.scalar(select(RouterOffer.conversation_id).where(RouterOffer.id == offer_id))
        return int(conv) if conv is not None else None

    async def visitor_part(self, part_id: int, contact_id: int) -> Part | None:
        """A stored attachment, only if it belongs to a chat message of this contact's conversations."""
        async with self._s.readers() as s:
            row = await s.execute(select(Part, Message).join(Message, Message.id == Part.message_id)
                                  .where(Part.id == part_id, Part.role == "attachment"))
            found = row.first()
            if found is None:
                return None
            part, msg = found
            conv = await s.get(Conversation, msg.conversation_id)
            if conv is None or conv.contact_id != contact_id or msg.channel != self._channel:
                return None
            return part

    async def transcript(self, conversation_id: int) -> str:
        async with self._s.readers() as s:
            rows = list((await s.scalars(select(Message).where(
                Message.conversation_id == conversation_id, Message.channel == self._channel,
                Message.direction.in_(("in", "out"))).order_by(Message.created_at, Message.id))).all())
            frames = await self._frames(s, rows)
        lines = []
        for f in frames:
            who = "You" if f["direction"] == "in" else (f["author"] or "Support")
            body = f["text"] + "".join(f"\n  [file: {x['name']}]" for x in f["files"])
            lines.append(f"[{f['at'][:16].replace('T', ' ')}] {who}: {body}")
        return "\n".join(lines)

    # -- writing ---------------------------------------------------------------------------

    async def remember_email(self, contact_id: int, email: str, name: str | None) -> bool:
        """Add the email identity to the contact; False when another contact already owns it."""
        pid = await self.project_id()
        value = email.strip().lower()
        async with self._s.sessions() as s:
            owner = await s.scalar(select(Identity.contact_id).where(
                Identity.project_id == pid, Identity.kind == IdentityKind.EMAIL.value, Identity.value == value))
            contact = await s.get(Contact, contact_id)
            if contact is not None and name and not contact.display_name:
                contact.display_name = name
            if owner is None:
                s.add(Identity(project_id=pid, contact_id=contact_id, kind=IdentityKind.EMAIL.value, value=value))
            try:
                await s.commit()
            except IntegrityError:
                return False  # created by someone else meanwhile
        return owner is None or owner == contact_id

    async def rate(self, conversation_id: int, score: int, comment: str | None, now: datetime) -> None:
        """Keep the rating beside the conversation (ChannelState) and tell the inbox (event)."""
        key = f"rating:{conversation_id}"
        value = {"conversation_id": conversation_id, "score": score, "comment": comment, "at": now.isoformat()}
        async with self._s.sessions() as s:
            conv = await s.get(Conversation, conversation_id)
            if conv is None:
                return
            row = await s.scalar(select(ChannelState).where(ChannelState.channel == self._instance,
                                                            ChannelState.key == key))
            old = dict(row.value) if row is not None else None
            if row is None:
                s.add(ChannelState(channel=self._instance, key=key, value=value))
            else:
                row.value = value
            self._s.events.add(s, conv.project_id, "conversation.updated", {
                "conversation_id": conversation_id, "by": "visitor",
                "changes": {"rating": {"from": old and old.get("score"), "to": score}},
                "rating": {"score": score, "comment": comment}})
            await s.commit()
        self._s.events.notify()

    async def rating(self, conversation_id: int) -> dict[str, Any] | None:
        async with self._s.readers() as s:
            row = await s.scalar(select(ChannelState).where(ChannelState.channel == self._instance,
                                                            ChannelState.key == f"rating:{conversation_id}"))
        return dict(row.value) if row is not None else None

    async def typing(self, conversation_id: int, on: bool) -> None:
        async with self._s.sessions() as s:
            conv = await s.get(Conversation, conversation_id)
            if conv is None:
                return
            self._s.events.add(s, conv.project_id, "conversation.typing",
                               {"conversation_id": conversation_id, "who": "customer", "on": on})
            await s.commit()
        self._s.events.notify()

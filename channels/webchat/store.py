"""What the web chat reads and writes in the store besides ingest (which goes through the sink).

The queries are the core's (`ChannelServices.chat`, umsg/chat_support.py): the history of a
visitor, whether an agent is available, the contact's email, ratings, typing and the facts
the live notices need. This module binds them to one chat instance (its channel name and
project) and turns the core's typed rows into the widget's frames and transcripts.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from umsg.chat_support import ChatFile, ChatLine, ChatSupport, ChatVisitor
from umsg.errors import TransientError


def _client_id(dedupe_key: str) -> str | None:
    # Inbound keys are `webchat:<visitor>:<client id>` (ids.dedupe_key).
    parts = dedupe_key.split(":")
    return parts[2] if len(parts) == 3 and parts[0] == "webchat" else None


def message_frame(line: ChatLine) -> dict[str, Any]:
    """A stored message as the widget shows it (text only: the widget never renders HTML)."""
    return {
        "type": "message",
        "id": line.id,
        "conversation_id": line.conversation_id,
        "client_id": _client_id(line.dedupe_key) if line.direction == "in" else None,
        "direction": line.direction,
        "text": line.text or "",
        "author": line.author,
        "at": line.created_at.isoformat(),
        "files": [{"id": f.id, "name": f.filename or "file", "type": f.media_type, "size": f.size}
                  for f in line.files],
    }


class ChatStore:
    def __init__(self, chat: ChatSupport, *, channel: str, project: str, instance: str) -> None:
        self._chat = chat
        self._channel = channel
        self._project = project
        self._instance = instance
        self._project_id: int | None = None

    async def project_id(self) -> int:
        if self._project_id is None:
            pid = await self._chat.project_id(self._project)
            if pid is None:
                raise TransientError(f"project {self._project!r} does not exist yet")
            self._project_id = pid
        return self._project_id

    # -- reading ---------------------------------------------------------------------------

    async def contact(self, visitor_id: str) -> ChatVisitor | None:
        return await self._chat.visitor(await self.project_id(), visitor_id)

    async def history(self, contact_id: int, limit: int) -> tuple[list[dict[str, Any]], list[int]]:
        """The contact's chat messages, oldest first, and the ids of their conversations."""
        found = await self._chat.history(contact_id, self._channel, limit)
        return [message_frame(line) for line in found.lines], list(found.conversation_ids)

    async def message(self, message_id: int) -> dict[str, Any] | None:
        line = await self._chat.line(message_id)
        return message_frame(line) if line is not None else None

    async def agents_available(self) -> bool:
        return await self._chat.agents_available(await self.project_id())

    async def agent_name(self, agent_id: int) -> str | None:
        return await self._chat.agent_name(agent_id)

    async def offer_conversation(self, offer_id: int) -> int | None:
        return await self._chat.offer_conversation(offer_id)

    async def visitor_part(self, part_id: int, contact_id: int) -> ChatFile | None:
        """A stored attachment, only if it belongs to a chat message of this contact's conversations."""
        return await self._chat.visitor_file(part_id, contact_id, self._channel)

    async def transcript(self, conversation_id: int) -> str:
        lines = []
        for f in map(message_frame, await self._chat.conversation_lines(conversation_id, self._channel)):
            who = "You" if f["direction"] == "in" else (f["author"] or "Support")
            body = f["text"] + "".join(f"\n  [file: {x['name']}]" for x in f["files"])
            lines.append(f"[{f['at'][:16].replace('T', ' ')}] {who}: {body}")
        return "\n".join(lines)

    # -- writing ---------------------------------------------------------------------------

    async def remember_email(self, contact_id: int, email: str, name: str | None) -> bool:
        """Add the email identity to the contact; False when another contact already owns it."""
        return await self._chat.remember_email(await self.project_id(), contact_id, email, name)

    async def rate(self, conversation_id: int, score: int, comment: str | None, now: datetime) -> None:
        """Keep the rating beside the conversation (ChannelState) and tell the inbox (event)."""
        await self._chat.rate(self._instance, conversation_id, score, comment, now)

    async def rating(self, conversation_id: int) -> dict[str, Any] | None:
        found = await self._chat.rating(self._instance, conversation_id)
        return asdict(found) if found is not None else None

    async def typing(self, conversation_id: int, on: bool) -> None:
        await self._chat.typing(conversation_id, on)

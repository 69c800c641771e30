"""The open customer sockets of one channel instance, by visitor and by conversation.

Lives on the adapter (no module state). `send` and the live notices look visitors up here;
a visitor may have several tabs open, each its own socket, and every one gets the frame.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)


class Connection:
    """One customer socket; frames go out one at a time."""

    __slots__ = ("ws", "visitor_id", "contact_id", "conversation_id", "_lock")

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.visitor_id: str | None = None
        self.contact_id: int | None = None
        self.conversation_id: int | None = None
        self._lock = asyncio.Lock()

    async def send(self, frame: dict[str, Any]) -> bool:
        """Send one frame; False when the socket is gone (the caller need not care why)."""
        if self.ws.closed:
            return False
        async with self._lock:
            try:
                await self.ws.send_json(frame)
            except (ConnectionError, RuntimeError):
                return False
        return True


class Hub:
    def __init__(self) -> None:
        self._by_visitor: dict[str, set[Connection]] = {}
        self._by_conversation: dict[int, set[str]] = {}
        self._conversations_of: dict[str, set[int]] = {}

    def add(self, conn: Connection) -> None:
        assert conn.visitor_id is not None
        self._by_visitor.setdefault(conn.visitor_id, set()).add(conn)

    def watch(self, visitor_id: str, conversation_ids: Iterable[int]) -> None:
        """Notices about these conversations go to this visitor's sockets."""
        for cid in conversation_ids:
            self._by_conversation.setdefault(cid, set()).add(visitor_id)
            self._conversations_of.setdefault(visitor_id, set()).add(cid)

    def remove(self, conn: Connection) -> None:
        vid = conn.visitor_id
        if vid is None:
            return
        conns = self._by_visitor.get(vid)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._by_visitor[vid]
                for cid in self._conversations_of.pop(vid, ()):
                    vs = self._by_conversation.get(cid, set())
                    vs.discard(vid)
                    if not vs:
                        self._by_conversation.pop(cid, None)

    def connections(self, visitor_id: str) -> list[Connection]:
        return list(self._by_visitor.get(visitor_id, ()))

    def watching(self, conversation_id: int) -> list[Connection]:
        return [c for vid in self._by_conversation.get(conversation_id, ()) for c in self._by_visitor.get(vid, ())]

    def any_watched(self) -> bool:
        return bool(self._by_conversation)

    def __len__(self) -> int:
        return sum(len(c) for c in self._by_visitor.values())

    async def to_visitor(self, visitor_id: str, frame: dict[str, Any], *, skip: Connection | None = None) -> int:
        """Send to every socket of the visitor; how many took it."""
        sent = 0
        for conn in self.connections(visitor_id):
            if conn is not skip and await conn.send(frame):
                sent += 1
        return sent

    async def to_conversation(self, conversation_id: int, frame: dict[str, Any]) -> int:
        sent = 0
        for conn in self.watching(conversation_id):
            if await conn.send(frame):
                sent += 1
        return sent

    async def close_all(self) -> None:
        for conns in list(self._by_visitor.values()):
            for conn in list(conns):
                await conn.ws.close(code=1001, message=b"server shutting down")

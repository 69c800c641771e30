"""Live notices for visitors, read from the event log: agent joined / left, agent typing, closed.

One follower task per channel instance subscribes to the process's event reader
(`ChannelServices.events.subscribe`: no query of its own per commit). It only looks up what
an event names (through the core's chat queries, `ChannelServices.chat`) when a visitor of
that conversation is connected here.

- `router.accepted` (an agent took the offer) and `conversation.updated` with a new
  `assignee_id` → `{"type": "agent", "event": "joined", "name": ...}`
- `queue.released` of an item an agent held (a transfer) and an assignee removed →
  `{"type": "agent", "event": "left"}`
- `conversation.updated` to status resolved/closed → `{"type": "closed"}` (the widget asks
  for a rating)
- `conversation.typing` with `who = "agent"` → `{"type": "typing", "on": ...}`
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.webchat.hub import Hub
from channels.webchat.store import ChatStore
from umsg.services import ChannelServices

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
CLOSED_STATES = ("resolved", "closed")


class NoticeFollower:
    def __init__(self, services: ChannelServices, store: ChatStore, hub: Hub) -> None:
        self._events = services.events
        self._store = store
        self._hub = hub

    async def run(self, stop: asyncio.Event) -> None:
        async with await self._events.subscribe(await self._events.latest_id()) as sub:
            while not stop.is_set():
                try:
                    for ev in await sub.next(POLL_SECONDS):
                        if self._hub.any_watched():
                            await self._handle(ev.kind, ev.payload or {})
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("web chat notices: handling an event failed; going on with the next")

    async def _handle(self, kind: str, p: dict[str, Any]) -> None:
        if kind == "router.accepted":
            conv = await self._store.offer_conversation(int(p.get("offer_id") or 0))
            if conv is not None and self._hub.watching(conv):
                await self._joined(conv, p.get("agent_id"))
            return
        conv_id = p.get("conversation_id")
        if not isinstance(conv_id, int) or not self._hub.watching(conv_id):
            return
        if kind == "conversation.updated":
            changes = p.get("changes") or {}
            if "assignee_id" in changes:
                to = changes["assignee_id"].get("to")
                if to is None:
                    await self._hub.to_conversation(conv_id, {"type": "agent", "event": "left"})
                else:
                    await self._joined(conv_id, to)
            status = (changes.get("status") or {}).get("to")
            if status in CLOSED_STATES:
                await self._hub.to_conversation(conv_id, {"type": "closed", "conversation_id": conv_id})
        elif kind == "queue.released" and str(p.get("owner") or "").startswith("agent:"):
            await self._hub.to_conversation(conv_id, {"type": "agent", "event": "left"})
        elif kind == "conversation.typing" and p.get("who") == "agent":
            await self._hub.to_conversation(conv_id, {"type": "typing", "on": bool(p.get("on", True))})

    async def _joined(self, conv_id: int, agent_id: Any) -> None:
        name = await self._store.agent_name(int(agent_id)) if isinstance(agent_id, int) else None
        await self._hub.to_conversation(conv_id, {"type": "agent", "event": "joined", "name": name or "An agent"})

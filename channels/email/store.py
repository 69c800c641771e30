"""The few durable facts the email channel keeps, and delivery reports applied to the store.

IMAP checkpoints (UIDVALIDITY + last UID, messages set aside) live in
`storage.models.ChannelState` so a restart neither re-imports nor misses
mail. A delivery report is applied after its own message committed: the
outbound message it reports on is marked failed with the remote server's
words, and the recipient's identity marked failing, but only when the
report names a message we sent *to that address* (a forged bounce cannot
flag arbitrary customers).

This module writes to the store on the core's behalf; it is handed the
core's session factory (`EmailChannel.bind_store`) and would move to the core
once a shared delivery-report API exists (SMS receipts need the same).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from storage.db import SessionFactory
from storage.models import ChannelState
from storage.types import utcnow


class EmailStore:
    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions

    async def load(self, channel: str, key: str) -> dict[str, Any]:
        async with self._sessions() as s:
            row = await s.scalar(select(ChannelState).where(ChannelState.channel == channel,
                                                            ChannelState.key == key))
            return dict(row.value) if row is not None else {}

    async def save(self, channel: str, key: str, value: dict[str, Any]) -> None:
        async with self._sessions() as s:
            row = await s.scalar(select(ChannelState).where(ChannelState.channel == channel,
                                                            ChannelState.key == key))
            if row is None:
                s.add(ChannelState(channel=channel, key=key, value=value))
            else:
                row.value = value
                row.updated_at = utcnow()
            await s.commit()

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

from sqlalchemy import func, select

from storage.db import SessionFactory
from storage.models import ChannelState, Event, Identity, Message
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

    async def apply_delivery_report(self, report: dict[str, Any]) -> int | None:
        """Mark the reported outbound message failed and its recipient failing; returns its id."""
        failed = [str(a).lower() for a in report.get("failed") or []]
        if not failed:
            return None
        async with self._sessions() as s:
            msg: Message | None = None
            if report.get("outbound_message_id") is not None:
                msg = await s.get(Message, int(report["outbound_message_id"]))
            if msg is None and report.get("original_message_id"):
                msg = await s.scalar(select(Message).where(
                    Message.provider_id == report["original_message_id"], Message.direction == "out"))
            if msg is None or msg.direction != "out":
                return None
            to = {str(a).lower() for a in msg.to_addrs}
            bounced = [a for a in failed if a in to]
            if not bounced:
                return None
            words = "; ".join(
                f"{r.get('address')}: {r.get('status')} {r.get('diagnostic') or ''}".strip()
                for r in report.get("recipients") or [] if str(r.get("address", "")).lower() in bounced)
            msg.status, msg.status_detail = "failed", f"bounced: {words}"[:2000]
            for identity in await s.scalars(select(Identity).where(
                    Identity.project_id == msg.project_id, Identity.kind == "email",
                    func.lower(Identity.value).in_(bounced))):
                identity.failing = True
            s.add(Event(project_id=msg.project_id, kind="message.status",
                        payload={"message_id": msg.id, "conversation_id": msg.conversation_id,
                                 "status": "failed", "detail": msg.status_detail}))
            await s.commit()
            return msg.id

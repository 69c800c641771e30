"""Helpers for the outbound tests (no fixtures and no tests here).

`email_conversation` ingests a customer's email and so opens a conversation to reply in,
`message` reads a stored message back, and `ScriptedAdapter` is a stand-in channel adapter
whose sends take scripted outcomes.
"""

from __future__ import annotations

import uuid
from typing import ClassVar

from storage.models import Message
from umsg.core import Core
from umsg.model import Address, DeliveryResult, DeliveryStatus, IdentityKind, Inbound, IngestResult, Outbound


async def email_conversation(core: Core, sender: str = "Ann@Example.com") -> IngestResult:
    return await core.ingest.ingest(
        Inbound(
            channel="email",
            sender=Address(IdentityKind.EMAIL, sender, "Ann"),
            recipients=("support@acme.test",),
            dedupe_key=f"<{uuid.uuid4().hex}@example.com>",
            raw=b"Subject: Printer on fire\r\n\r\nhelp",
            subject="Printer on fire",
            text="help",
        )
    )


async def message(core: Core, message_id: int) -> Message:
    async with core.sessions() as s:
        msg = await s.get(Message, message_id)
        assert msg is not None
        return msg


class ScriptedAdapter:
    """A stand-in channel adapter: each send takes the next scripted outcome."""

    name: ClassVar[str] = "scripted"

    def __init__(self, *outcomes: DeliveryResult | Exception) -> None:
        self.outcomes = list(outcomes)
        self.sent: list[Outbound] = []

    async def send(self, outbound: Outbound) -> DeliveryResult:
        self.sent.append(outbound)
        outcome = self.outcomes.pop(0) if self.outcomes else DeliveryResult(DeliveryStatus.ACCEPTED)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

"""The outbound path, first half: turning an agent's (or an automation's) reply into durable work.

`Outbox.reply` writes, in one transaction, the outgoing `Message` (status
`queued`), a `deliver` `Job` naming it and a `message.created` event. Nothing
is sent here: the `Dispatcher` (umsg/dispatch.py) picks the job up, so a reply
survives a crash between the agent pressing send and the peer accepting it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import SessionFactory
from storage.models import Conversation, Identity, Job, Message
from storage.types import utcnow
from umsg.dispatch import Dispatcher, OutboundAdapter
from umsg.errors import NotFound, PermanentError
from umsg.events import EventLog
from umsg.model import IdentityKind

__all__ = ["IDENTITY_FOR_CHANNEL", "Dispatcher", "OutboundAdapter", "Outbox", "add_reply"]

# Which identity of the contact a reply on a channel goes to when no `to` is given.
IDENTITY_FOR_CHANNEL: dict[str, IdentityKind] = {
    "email": IdentityKind.EMAIL,
    "sms": IdentityKind.PHONE,
    "fax": IdentityKind.FAX,
    "webchat": IdentityKind.CHAT,
}


class Outbox:
    """Queues outgoing messages for delivery."""

    def __init__(
        self, sessions: SessionFactory, events: EventLog, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._sessions = sessions
        self._events = events
        self._clock = clock

    async def reply(
        self,
        *,
        project_id: int,
        conversation_id: int,
        text: str,
        agent_id: int | None = None,
        channel: str | None = None,
        to: str | None = None,
        subject: str | None = None,
        html: str | None = None,
        automatic: bool = False,
    ) -> Message:
        """Queue a reply on a conversation; returns the stored message after the commit.

        The channel defaults to the conversation's, the recipient to the
        contact's identity for that channel. Raises NotFound for a conversation
        outside the project and PermanentError when no recipient can be found
        or the recipient opted out.
        """
        now = self._clock()
        async with self._sessions() as s:
            conv = await s.get(Conversation, conversation_id)
            if conv is None or conv.project_id != project_id:
                raise NotFound(f"conversation {conversation_id} not found")
            msg = await add_reply(s, self._events, conversation=conv, text=text, now=now, agent_id=agent_id,
                                  channel=channel, to=to, subject=subject, html=html, automatic=automatic)
            await s.commit()
        self._events.notify()
        return msg

    async def add_reply(self, session: AsyncSession, *, conversation: Conversation, text: str,
                        **options: Any) -> Message:
        """`reply` inside the caller's transaction (see `add_reply`); the caller commits and notifies."""
        options.setdefault("now", self._clock())
        return await add_reply(session, self._events, conversation=conversation, text=text, **options)


async def add_reply(
    session: AsyncSession,
    events: EventLog,
    *,
    conversation: Conversation,
    text: str,
    now: datetime,
    agent_id: int | None = None,
    channel: str | None = None,
    to: str | None = None,
    subject: str | None = None,
    html: str | None = None,
    automatic: bool = False,
    flags: dict[str, Any] | None = None,
) -> Message:
    """Add an outgoing message, its `deliver` job and its event to the caller's transaction.

    Used by `Outbox.reply` and by the ingest (route auto-replies and forwards), which must
    commit the answer together with the message that caused it. Raises PermanentError,
    before adding anything, when there is no text, no recipient, or the recipient opted out.
    """
    if not (text and text.strip()) and not html:
        raise PermanentError("a reply needs text")
    s, conv, project_id = session, conversation, conversation.project_id
    channel = channel or conv.channel
    last_in = await _last_inbound(s, conv.id, channel)
    recipient = to.strip() if to else await _default_recipient(s, conv, channel, last_in)
    await _refuse_opted_out(s, project_id, recipient)
    if subject is None and channel == "email" and conv.subject:
        subject = conv.subject if conv.subject.lower().startswith("re:") else f"Re: {conv.subject}"
    msg = Message(
        project_id=project_id,
        conversation_id=conv.id,
        contact_id=conv.contact_id,
        direction="out",
        channel=channel,
        # Answer from the address the customer wrote to.
        from_addr=(last_in.to_addrs[0] if last_in is not None and last_in.to_addrs else ""),
        to_addrs=[recipient],
        subject=subject,
        text=text,
        html=html,
        dedupe_key=f"out:{uuid.uuid4().hex}",
        status="queued",
        author_agent_id=agent_id,
        flags={**(flags or {}), **({"automatic": True} if automatic else {})},
        created_at=now,
    )
    s.add(msg)
    await s.flush()
    s.add(Job(project_id=project_id, kind="deliver", payload={"message_id": msg.id}, run_after=now))
    conv.last_message_at = now
    events.add(
        s,
        project_id,
        "message.created",
        {
            "message_id": msg.id,
            "conversation_id": conv.id,
            "channel": channel,
            "direction": "out",
            "automatic": automatic,
        },
    )
    return msg


async def _last_inbound(s: AsyncSession, conversation_id: int, channel: str) -> Message | None:
    return await s.scalar(
        select(Message)
        .where(
            Message.conversation_id == conversation_id,
            Message.direction == "in",
            Message.channel == channel,
        )
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(1)
    )


async def _default_recipient(
    s: AsyncSession, conv: Conversation, channel: str, last_in: Message | None
) -> str:
    kind = IDENTITY_FOR_CHANNEL.get(channel)
    if kind is None:
        # A channel without a fixed identity kind (an API channel): answer whoever wrote last.
        if last_in is not None and last_in.from_addr:
            return last_in.from_addr
        raise PermanentError(f"no recipient known for channel {channel!r}; give one explicitly")
    identities = list(
        (
            await s.scalars(
                select(Identity).where(Identity.contact_id == conv.contact_id, Identity.kind == kind.value)
            )
        ).all()
    )
    usable = [i for i in identities if not i.opted_out]
    if not usable:
        reason = "has opted out" if identities else "has no"
        raise PermanentError(f"contact {conv.contact_id} {reason} {kind.value} address for {channel!r}")
    wrote_from = (last_in.from_addr if last_in is not None else "").lower()
    # Prefer the address the customer last wrote from, then ones that are not bouncing, then the newest.
    usable.sort(key=lambda i: (i.value.lower() == wrote_from, not i.failing, i.id), reverse=True)
    return usable[0].value


async def _refuse_opted_out(s: AsyncSession, project_id: int, recipient: str) -> None:
    opted = await s.scalar(
        select(Identity.id).where(
            Identity.project_id == project_id, Identity.value == recipient, Identity.opted_out.is_(True)
        )
    )
    if opted is not None:
        raise PermanentError(f"{recipient} has opted out")

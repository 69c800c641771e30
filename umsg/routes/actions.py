"""What the ingest does with a route decision besides enqueueing, inside its transaction.

Auto-replies and forwards become outbound messages through umsg.outbound.outbox in
the same transaction as the message that caused them, so a crash can never
answer a message that was not stored, nor store one whose answer is lost.
An auto-reply is never sent to auto-submitted or bulk mail (the channel sets
`meta["auto_submitted"]`), nor twice to one conversation within the route's
`reply_once_per_minutes`; every outcome is written into the message's flags.

A forward carries the message's attachments, and its `to` may name the recipient the
message was sent to: `{recipient_detail}` is the subaddress of the first recipient
(`4930123456` in `fax+4930123456@acme.test`, RFC 5233), else its local part. That is
email-to-fax: a route for `fax+*@acme.test` from the staff's addresses, forwarding to
`{recipient_detail}` on the fax channel, faxes the mail's text and attachments.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Agent, Contact, Conversation, Message, Part, QueueItem, RouterPin
from umsg.errors import PermanentError
from umsg.events.log import EventLog
from umsg.instances import ChannelInstances
from umsg.model import IdentityKind
from umsg.outbound.outbox import StoredAttachment, add_reply
from umsg.routes.targets import PreferredAgent, RouteDecision, render

log = logging.getLogger(__name__)


def _values(decision: RouteDecision, conv: Conversation, contact: Contact | None,
            msg: Message) -> dict[str, object]:
    return {"contact_name": (contact.display_name if contact is not None else None) or msg.from_addr,
            "conversation_id": conv.id, "subject": msg.subject or conv.subject or "", "channel": msg.channel,
            "sender": msg.from_addr, "route": decision.route, "queue": decision.queue or ""}


async def _recently_answered(session: AsyncSession, conv: Conversation, since: datetime) -> bool:
    rows = await session.scalars(select(Message.flags).where(
        Message.conversation_id == conv.id, Message.direction == "out", Message.created_at >= since))
    return any(isinstance(f, dict) and f.get("auto_reply_of") is not None for f in rows)


async def send_auto_reply(session: AsyncSession, events: EventLog, *, decision: RouteDecision,
                          conversation: Conversation, contact: Contact | None, message: Message,
                          meta: Mapping[str, Any], now: datetime, channels: ChannelInstances) -> str:
    """Queue the route's automatic answer; returns what happened, also recorded on the message."""
    reply = decision.reply
    assert reply is not None
    outcome: str
    if meta.get("auto_submitted"):
        outcome = "skipped: the message is auto-submitted or bulk"
    elif reply.once_per_minutes and await _recently_answered(
            session, conversation, now - timedelta(minutes=reply.once_per_minutes)):
        outcome = f"skipped: already answered automatically within {reply.once_per_minutes:g} min"
    else:
        values = _values(decision, conversation, contact, message)
        subject = render(reply.subject, values) if reply.subject else None
        try:
            text = render(reply.template, values)
            out = await add_reply(session, events, conversation=conversation, text=text, subject=subject,
                                  automatic=True, now=now, channels=channels,
                                  flags={"route": decision.route, "auto_reply_of": message.id})
            outcome = f"sent: message {out.id}"
        except PermanentError as exc:
            # No usable address (opted out, unknown): the inbound message must still be stored.
            outcome = f"skipped: {exc}"
    message.flags = {**message.flags, "auto_reply": outcome}
    return outcome


# Parts a forward carries: what the sender attached or recorded, not bodies or derived forms.
FORWARDED_ROLES = ("attachment", "document", "recording")


def recipient_detail(to_addrs: list[str] | None) -> str:
    """The subaddress of the first recipient (`x` in `fax+x@host`), else its local part."""
    if not to_addrs:
        return ""
    local = to_addrs[0].rsplit("@", 1)[0]
    return local.split("+", 1)[1] if "+" in local else local


def forward_channel(named: str | None, to: str, message_channel: str, channels: ChannelInstances) -> str:
    """The instance a forward leaves on: the route's `forward_channel`; for an email address
    the message's own channel when it is an email instance, else the one email instance
    (PermanentError when several could); otherwise the message's own channel."""
    if named:
        return named
    if "@" not in to or channels.kind(message_channel) == IdentityKind.EMAIL:
        return message_channel
    return channels.one_answering(IdentityKind.EMAIL, "the route's forward_channel")


async def send_forward(session: AsyncSession, events: EventLog, *, decision: RouteDecision,
                       conversation: Conversation, message: Message, now: datetime,
                       channels: ChannelInstances) -> str:
    """Queue an outbound copy of the message to the route's forward address."""
    fwd = decision.forward
    assert fwd is not None
    to = fwd.to.replace("{recipient_detail}", recipient_detail(message.to_addrs))
    header = f"Forwarded {message.channel} message from {message.from_addr}"
    text = f"{header}:\n\n{message.text or ''}".rstrip() + "\n"
    subject = f"Fwd: {message.subject or conversation.subject or header}"
    parts = (await session.scalars(
        select(Part).where(Part.message_id == message.id, Part.role.in_(FORWARDED_ROLES),
                           Part.derived_from_id.is_(None)).order_by(Part.id))).all()
    attachments = [StoredAttachment(p.sha256, p.media_type, p.size, p.filename) for p in parts]
    try:
        channel = forward_channel(fwd.channel, to, message.channel, channels)
        out = await add_reply(session, events, conversation=conversation, text=text, subject=subject,
                              channel=channel, to=to, automatic=True, now=now, attachments=attachments,
                              channels=channels, flags={"route": decision.route, "forward_of": message.id})
        outcome = f"sent: message {out.id}"
    except PermanentError as exc:
        outcome = f"skipped: {exc}"
    message.flags = {**message.flags, "forwarded": outcome}
    return outcome


async def resolve_preferred(session: AsyncSession, *, project_id: int, contact_id: int | None,
                            preferred: PreferredAgent, now: datetime) -> tuple[int | None, datetime]:
    """The agent to offer the item to first, and until when; (None, _) when there is none."""
    until = now + timedelta(minutes=preferred.expiry_minutes)
    if preferred.rule == "agent":
        agent_id = await session.scalar(select(Agent.id).where(Agent.login == preferred.login))
        return agent_id, until
    if contact_id is None:
        return None, until  # a contact created by this very message has no history
    agent_id = await session.scalar(
        select(Conversation.assignee_id)
        .where(Conversation.project_id == project_id, Conversation.contact_id == contact_id,
               Conversation.assignee_id.is_not(None))
        .order_by(Conversation.last_message_at.desc(), Conversation.id.desc()).limit(1))
    if agent_id is None:
        agent_id = await session.scalar(
            select(QueueItem.agent_id).join(Conversation, Conversation.id == QueueItem.conversation_id)
            .where(QueueItem.project_id == project_id, Conversation.contact_id == contact_id,
                   QueueItem.agent_id.is_not(None))
            .order_by(QueueItem.updated_at.desc(), QueueItem.id.desc()).limit(1))
    return agent_id, until


async def pin_preferred(session: AsyncSession, item: QueueItem, agent_id: int | None, until: datetime,
                        preferred: PreferredAgent) -> bool:
    """Reserve the new queue item for the preferred agent (a RouterPin the router honours first)."""
    if agent_id is None:
        return False
    await session.flush()  # the pin names the item by id; only routes with a preference pay for this
    kind = "last_agent" if preferred.rule == "last_agent" else "dedicated"
    session.add(RouterPin(item_id=item.id, agent_id=agent_id, until=until, kind=kind))
    return True

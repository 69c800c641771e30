"""Applying what a message implies (`Inbound.effects`) in the message's own transaction.

A channel states the facts a message carries beyond itself (an opt-out keyword, a
delivery report on one of our messages, a further address of the sender, "continue this
conversation by email") as typed effects; this step writes them with the message, so the
acknowledgement the channel gives its peer after the commit covers them too. A peer's
retry after a crash is then a duplicate whose effects were committed with the original,
never a duplicate whose effects were lost.

Each effect's outcome is written into the message's flags under `effects`, for the agents'
view and for tests.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Contact, Conversation, Identity, Message
from umsg.errors import PermanentError
from umsg.events.log import EventLog
from umsg.identity import normalise
from umsg.ingest.rows import Work
from umsg.model import AddIdentity, ContinueOn, DeliveryReport, Effect, OptOut
from umsg.outbound.reports import apply_report

log = logging.getLogger(__name__)


async def apply_all(session: AsyncSession, events: EventLog, work: Work, message: Message, now: datetime) -> None:
    """Apply every effect of `work`'s message (its rows are written); outcomes go into its flags."""
    outcomes = []
    for effect in work.prepared.inbound.effects:
        outcomes.append(await _apply(session, events, work, effect, now))
    if outcomes:
        message.flags = {**message.flags, "effects": outcomes}


async def _apply(session: AsyncSession, events: EventLog, work: Work, effect: Effect, now: datetime) -> str:
    if isinstance(effect, OptOut):
        return await _opt(session, work, effect)
    if isinstance(effect, DeliveryReport):
        return await _report(session, events, work, effect, now)
    if isinstance(effect, AddIdentity):
        return await _identity(session, work, effect)
    return await _continue(session, events, work, effect)


async def _opt(session: AsyncSession, work: Work, effect: OptOut) -> str:
    """Set the opt-out flag of the identity the message came from."""
    assert work.contact is not None and work.contact.id is not None
    result = await session.execute(
        update(Identity)
        .where(Identity.project_id == work.project_id, Identity.contact_id == work.contact.id,
               Identity.value == work.prepared.sender_value)
        .values(opted_out=effect.opted_out)
        .execution_options(synchronize_session=False))
    verb = "opted out" if effect.opted_out else "opted in"
    changed = int(getattr(result, "rowcount", 0) or 0)
    log.info("%s %s (contact %s)", work.prepared.sender_value, verb, work.contact.id)
    return f"{verb}: {changed} identity" if changed == 1 else f"{verb}: {changed} identities"


async def _report(session: AsyncSession, events: EventLog, work: Work, effect: DeliveryReport,
                  now: datetime) -> str:
    """Apply a report to the outgoing message of this project it names, for the addresses it was sent to."""
    msg: Message | None = None
    if effect.message_id is not None:
        msg = await session.get(Message, effect.message_id)
    if msg is None and effect.provider_id:
        msg = await session.scalar(select(Message).where(
            Message.project_id == work.project_id, Message.provider_id == effect.provider_id,
            Message.direction == "out").limit(1))
    if msg is None or msg.direction != "out" or msg.project_id != work.project_id:
        return "report: names no message of ours"
    sent_to = {str(a).lower() for a in msg.to_addrs}
    failed = [a for a in effect.failed if a.lower() in sent_to]
    if effect.failed and not failed:
        return f"report: message {msg.id} was not sent to {', '.join(effect.failed)}"
    move = await apply_report(session, events, msg, effect.status, detail=effect.detail[:2000], failing=failed,
                              now=now)
    if move.late_failure:
        return f"report: message {msg.id} was delivered already; the late failure is recorded"
    return f"report: message {msg.id} {move.status.value}" + ("" if move.changed else " (unchanged)")


async def _identity(session: AsyncSession, work: Work, effect: AddIdentity) -> str:
    """Give the sender's contact one more address, unless another contact owns it."""
    assert work.contact is not None and work.contact.id is not None
    try:
        value = normalise(effect.kind, effect.value)
    except PermanentError as exc:
        return f"identity: refused: {exc}"  # the message itself is still stored
    owner = await session.scalar(select(Identity.contact_id).where(
        Identity.project_id == work.project_id, Identity.kind == effect.kind.value, Identity.value == value))
    contact = await session.get(Contact, work.contact.id)
    if contact is not None and effect.name and not contact.display_name:
        contact.display_name = effect.name
    if owner is None:
        session.add(Identity(project_id=work.project_id, contact_id=work.contact.id, kind=effect.kind.value,
                             value=value))
        # Now, so a later message of the same batch naming the same address sees it.
        await session.flush()
        return f"identity: {effect.kind.value} added"
    if owner == work.contact.id:
        return f"identity: {effect.kind.value} known"
    return f"identity: {effect.kind.value} belongs to contact {owner}"


async def _continue(session: AsyncSession, events: EventLog, work: Work, effect: ContinueOn) -> str:
    """Replies in the conversation leave on `effect.channel` from now on."""
    assert work.conversation is not None and work.conversation.id is not None
    conv = await session.get(Conversation, work.conversation.id)
    assert conv is not None
    if conv.channel == effect.channel:
        return f"conversation: on {effect.channel} already"
    events.add(session, work.project_id, "conversation.updated", {
        "conversation_id": conv.id, "changes": {"channel": {"from": conv.channel, "to": effect.channel}},
        "by": "visitor", "reason": effect.reason})
    conv.channel = effect.channel
    return f"conversation: continues on {effect.channel}"

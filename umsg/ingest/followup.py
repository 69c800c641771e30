"""What needs the ORM, for the few messages that ask for it: effects, then route actions.

A message's effects (`umsg.ingest.effects`: opt-out, delivery report, another identity,
a channel switch) are applied first, so an auto-reply to a STOP is refused like any
other message to an opted-out number.

Auto-replies, forwards and a preferred agent's pin go through `umsg.routes.actions`
and `umsg.outbound.outbox` (ORM code shared with the agents' replies), inside the
batch's transaction and after its rows are written, so the outbound message
can name the inbound one and the pin its queue item. Their outcomes land in
the message's flags as before.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Contact, Conversation, Message, QueueItem
from umsg.events.log import EventLog
from umsg.ingest import effects
from umsg.ingest.rows import Work
from umsg.instances import ChannelInstances
from umsg.routes import actions


async def run(session: AsyncSession, events: EventLog, work: Work, now: datetime,
              channels: ChannelInstances) -> None:
    """Apply `work`'s effects, then carry out its auto-reply, forward and preferred-agent pin
    (its rows are written)."""
    msg = await session.get(Message, work.message_id)
    assert msg is not None
    await effects.apply_all(session, events, work, msg, now)
    if not work.route_actions:
        return
    d, conv_row, contact_row = work.decision, work.conversation, work.contact
    assert d is not None and conv_row is not None and contact_row is not None
    conv = await session.get(Conversation, conv_row.id)
    contact = await session.get(Contact, contact_row.id)
    assert conv is not None
    if d.reply is not None:
        await actions.send_auto_reply(session, events, decision=d, conversation=conv, contact=contact,
                                      message=msg, meta=work.prepared.inbound.meta, now=now, channels=channels)
    if d.forward is not None:
        await actions.send_forward(session, events, decision=d, conversation=conv, message=msg, now=now,
                                   channels=channels)
    if work.enqueue and d.preferred is not None and work.queue_item_id is not None:
        item = await session.get(QueueItem, work.queue_item_id)
        assert item is not None
        agent_id, until = await actions.resolve_preferred(
            session, project_id=work.project_id, contact_id=contact_row.id, preferred=d.preferred, now=now)
        await actions.pin_preferred(session, item, agent_id, until, d.preferred)
        msg.flags = {**msg.flags, "preferred_agent": {"agent_id": agent_id, "until": until.isoformat(),
                                                      "rule": d.preferred.rule}}

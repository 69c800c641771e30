"""A sample item from loose fields, for `umsg routes test` and `POST /api/v1/routes/test`.

The sender is normalised the way the ingest normalises it (email lower case,
numbers to E.164), so a test judges the same value a real message would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Contact, Identity
from umsg.errors import PermanentError
from umsg.identity import normalise
from umsg.instances import ChannelInstances
from umsg.model import IdentityKind
from umsg.routes.filters import Sample


def guess_kind(channel: str, sender: str, channels: ChannelInstances | None = None) -> IdentityKind:
    """An address with `@` is email; otherwise the kind the channel instance answers on, when
    that is chat or fax, else a phone number."""
    if "@" in sender:
        return IdentityKind.EMAIL
    kind = (channels or ChannelInstances()).kind(channel)
    return kind if kind in (IdentityKind.CHAT, IdentityKind.FAX) else IdentityKind.PHONE


def normalised_sender(channel: str, sender: str, default_region: str | None = None,
                      channels: ChannelInstances | None = None) -> str:
    try:
        return normalise(guess_kind(channel, sender, channels), sender, default_region)
    except PermanentError:
        return sender.strip()  # judge it as given: a test must not fail on an odd sender


def make_sample(*, channel: str, sender: str, to: str | Sequence[str], at: datetime | None = None,
                subject: str | None = None, text: str | None = None, meta: Mapping[str, Any] | None = None,
                attributes: Mapping[str, Any] | None = None, default_region: str | None = None,
                channels: ChannelInstances | None = None) -> Sample:
    recipients = (to,) if isinstance(to, str) else tuple(to)
    when = at or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # a naive time in a test means UTC, as everywhere in the store
    return Sample(channel=channel, sender=normalised_sender(channel, sender, default_region, channels),
                  recipients=recipients, at=when, subject=subject, text=text, meta=dict(meta or {}),
                  attributes=dict(attributes or {}))


async def contact_attributes(session: AsyncSession, project_id: int, sender: str) -> dict[str, Any]:
    """The attributes of the contact that owns `sender` (already normalised), or {} for a stranger."""
    contact = await session.scalar(
        select(Contact).join(Identity, Identity.contact_id == Contact.id)
        .where(Identity.project_id == project_id, Identity.value == sender).limit(1))
    seen = 0
    while contact is not None and contact.merged_into_id is not None and seen < 16:
        contact, seen = await session.get(Contact, contact.merged_into_id), seen + 1
    return dict(contact.attributes or {}) if contact is not None else {}

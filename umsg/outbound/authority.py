"""The outbound authority: the one check every outgoing message passes before it is queued.

Whoever asks for a message to leave (an agent through the API, the web chat mailing a
transcript, a route's auto-reply or forward, a channel's notification), `umsg.outbound.outbox`
calls `authorise` inside the transaction that would queue it, so a refusal leaves nothing queued
and nothing sent. What is checked depends on who the message is for (`Purpose`):

- the channel instance serves the conversation's project (`Instance.projects`, from each
  adapter's `project` setting): beta's agents never reach alpha's relay, Twilio number or chat;
- the recipient is an identity of the conversation's contact. Only a new outbound conversation
  (no message from the customer yet), asked by a caller allowed to start one, may name a new
  address, which is then recorded as an identity of the contact in the same transaction;
- the sender is the channel's own (`Instance.senders`): an explicit sender the instance does not
  own is refused; the address the customer happened to write to (a `To:` header can name anyone)
  is used only when the instance owns it, else the adapter's own address.

Customer-facing messages (replies, auto-replies, transcripts) get all three. A route's forward
goes to the address its route names (configuration, or a table a project's staff saved), so
only the channel and the sender are checked. A notification goes to one of our own people, on
the channel the operator configured for it (`notify_channel`), so only its sender is checked:
neither its channel nor its recipient ever comes from a caller.

Refusals are `OutboundRefused` (a `PermanentError`), which the web API answers with 403. A
core given no configured instances (an embedded core, tests) has no projects to compare: there
the channel check is skipped, and the recipient check still applies.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Identity, Message, Project
from umsg.errors import PermanentError
from umsg.identity import normalise
from umsg.instances import ChannelInstances
from umsg.model import IdentityKind

__all__ = [
    "ChannelNotInProject", "Grant", "OutboundRefused", "Purpose", "RecipientNotContact", "Request",
    "SenderNotChannels", "authorise", "authorise_channel", "purpose_of",
]


class OutboundRefused(PermanentError):
    """The caller may not send this message; nothing was queued."""


class ChannelNotInProject(OutboundRefused):
    """The channel instance does not serve the conversation's project."""


class RecipientNotContact(OutboundRefused):
    """The recipient is not an identity of the conversation's contact."""


class SenderNotChannels(OutboundRefused):
    """The sender address is not one the channel instance owns."""


class Purpose(enum.StrEnum):
    """Whom an outgoing message is for, which decides what `authorise` checks."""

    CUSTOMER = "customer"  # a reply, an auto-reply, a transcript: channel, recipient, sender
    FORWARD = "forward"  # a route's forward to the address it names: channel, sender
    NOTIFICATION = "notification"  # automatic mail to one of our people: sender only


def purpose_of(flags: Mapping[str, Any] | None) -> Purpose:
    """The purpose the outbox's callers state through the message's flags (set only by code)."""
    if flags and flags.get("notification"):
        return Purpose.NOTIFICATION
    if flags and flags.get("forward_of") is not None:
        return Purpose.FORWARD
    return Purpose.CUSTOMER


@dataclass(frozen=True)
class Request:
    """One outgoing message as the outbox is about to queue it."""

    purpose: Purpose
    project_id: int
    contact_id: int
    conversation_id: int
    channel: str
    kind: IdentityKind | None  # the identity kind the channel answers on (None: whoever wrote)
    recipient: str
    explicit_to: bool  # the caller named the recipient (else it is the contact's own default)
    wrote_from: str  # the customer's latest address on the channel ('' when none)
    wrote_to: str  # the address the customer wrote to ('' when none)
    sender: str | None  # an explicit sender asked by the caller
    may_start: bool = False  # the caller may start a new outbound conversation to a new address


@dataclass(frozen=True)
class Grant:
    """What the authority allows: the address the message leaves from ('' lets the adapter pick)."""

    from_addr: str


async def authorise_channel(s: AsyncSession, channels: ChannelInstances, purpose: Purpose,
                            project_id: int, channel: str) -> None:
    """The first check, before a recipient is even looked up: the channel serves the project."""
    instance = channels.get(channel)
    if instance is None or instance.projects is None or purpose is Purpose.NOTIFICATION:
        return
    slug = await s.scalar(select(Project.slug).where(Project.id == project_id))
    if slug is None or not instance.serves(slug):
        raise ChannelNotInProject(
            f"channel {channel!r} does not serve project {slug or project_id!r}; "
            "answer on a channel of the conversation's project")


async def authorise(s: AsyncSession, channels: ChannelInstances, r: Request) -> Grant:
    """The recipient and sender checks, after `authorise_channel` passed, in the caller's
    transaction; raises OutboundRefused, or returns the grant.

    May add the recipient as a new identity of the contact (a new outbound conversation),
    in the same transaction, so it commits with the message or not at all.
    """
    instance = channels.get(r.channel)
    if r.purpose is Purpose.CUSTOMER and r.explicit_to:
        await _check_recipient(s, r)
    from_addr = r.sender or r.wrote_to
    owned = instance.sends_as(from_addr) if instance is not None and from_addr else None
    if owned is False:
        if r.sender:
            raise SenderNotChannels(f"{r.sender!r} is not an address of channel {r.channel!r}")
        # The customer wrote to an address that is not this channel's (a forged To: header):
        # answer from the channel's own address instead of lending it that one.
        from_addr = ""
    return Grant(from_addr=from_addr)


def _kinds(kind: IdentityKind | None) -> list[str] | None:
    if kind is None:
        return None
    # A number can be a phone and a fax identity of the same customer.
    if kind in (IdentityKind.PHONE, IdentityKind.FAX):
        return [IdentityKind.PHONE.value, IdentityKind.FAX.value]
    return [kind.value]


def _normalised(kind: IdentityKind | None, value: str) -> str:
    if kind is None:
        return value.strip()
    try:
        return normalise(kind, value)
    except PermanentError as exc:
        raise RecipientNotContact(f"{value!r} is not a {kind.value} address: {exc}") from None


async def _check_recipient(s: AsyncSession, r: Request) -> None:
    value = _normalised(r.kind, r.recipient)
    kinds = _kinds(r.kind)
    own = select(Identity.id).where(Identity.contact_id == r.contact_id, Identity.project_id == r.project_id,
                                    Identity.value == value)
    if kinds is not None:
        own = own.where(Identity.kind.in_(kinds))
    if await s.scalar(own.limit(1)) is not None:
        return
    if r.kind is None and r.wrote_from and value.lower() == r.wrote_from.strip().lower():
        return  # a channel without identities (an API channel) answers whoever wrote
    if r.may_start and r.kind is not None and not await _customer_wrote(s, r.conversation_id):
        await _add_identity(s, r, r.kind, value)
        return
    raise RecipientNotContact(
        f"{r.recipient!r} is not an address of the conversation's contact; "
        "reply to one of the contact's identities")


async def _customer_wrote(s: AsyncSession, conversation_id: int) -> bool:
    return bool(await s.scalar(select(exists().where(
        Message.conversation_id == conversation_id, Message.direction == "in"))))


async def _add_identity(s: AsyncSession, r: Request, kind: IdentityKind, value: str) -> None:
    """Record the new address as the contact's, unless another contact of the project owns it."""
    other = await s.scalar(select(Identity.contact_id).where(
        Identity.project_id == r.project_id, Identity.kind == kind.value, Identity.value == value))
    if other is not None and other != r.contact_id:
        raise RecipientNotContact(f"{r.recipient!r} belongs to another contact; write from their conversation")
    if other is None:
        await s.execute(insert(Identity).values(project_id=r.project_id, contact_id=r.contact_id,
                                                kind=kind.value, value=value, failing=False, opted_out=False))

"""The state sets of stored rows, one `StrEnum` each, for the models and every query that reads
or writes a status. Values are the strings stored, so a member compares equal to its value.
How a message moves between its states is `umsg.outbound.status`'s rule, not this module's.
"""

from __future__ import annotations

import enum


class MessageStatus(enum.StrEnum):
    RECEIVED = "received"  # an inbound message
    QUEUED = "queued"  # outbound, waiting for the dispatcher (also after a transient failure)
    SENDING = "sending"  # claimed by a dispatcher
    SENT = "sent"  # the peer accepted it
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"  # the peer, or we, gave up


class ConversationStatus(enum.StrEnum):
    OPEN = "open"
    PENDING = "pending"  # waiting for the customer
    SNOOZED = "snoozed"  # out of sight until `snoozed_until`
    RESOLVED = "resolved"  # done, reopened by the customer's next message
    CLOSED = "closed"


# Conversations that are still work: a sticky sender continues the newest of these.
OPEN_CONVERSATION = (ConversationStatus.OPEN, ConversationStatus.PENDING, ConversationStatus.SNOOZED)


class QueueItemStatus(enum.StrEnum):
    WAITING = "waiting"
    LEASED = "leased"  # offered to or held by an agent, or claimed by a worker
    DONE = "done"
    DEAD = "dead"  # given up, with the reason


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    LEASED = "leased"
    DONE = "done"
    DEAD = "dead"


class OfferStatus(enum.StrEnum):
    OFFERED = "offered"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    TIMED_OUT = "timed_out"
    REVOKED = "revoked"

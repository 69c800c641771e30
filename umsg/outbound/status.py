"""The one rule for moving an outgoing message between its states (`storage.states.MessageStatus`).

The dispatcher (sending, sent, failed), SMS receipts and email delivery reports all move
messages with `next_status`, so they agree: a message the peer reported `delivered` or
`read` never moves back (its receipt can arrive before `send` returns, and reports arrive
out of order), and a failure reported after delivery (a late bounce) leaves the status as
it is but is recorded as such (`Move.late_failure`).
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.states import MessageStatus

# How far a message has provably got; a report never takes it back below this.
_REACHED = {MessageStatus.DELIVERED: 1, MessageStatus.READ: 2}


@dataclass(frozen=True)
class Move:
    """What a report does to a message: `status` is the one it ends in (maybe unchanged)."""

    status: MessageStatus
    changed: bool
    late_failure: bool = False  # a failure reported after the message was delivered


def next_status(current: str, reported: str) -> Move:
    """The move of a message that is `current` when `reported` arrives."""
    now, new = MessageStatus(current), MessageStatus(reported)
    reached = _REACHED.get(now, 0)
    if reached and _REACHED.get(new, 0) <= reached:
        return Move(now, False, late_failure=new is MessageStatus.FAILED)
    return Move(new, new is not now)

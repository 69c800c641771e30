"""Typed router settings (the `[router]` table of the configuration).

Costs are capacity units out of an agent's `capacity` (100 by default): with
chat 34 and email 20 an agent holds two chats and an email, never three chats.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Strategy = Literal["longest_idle", "least_busy", "fixed_order", "round_robin"]
STATES = ("available", "busy", "after_work", "break", "meeting", "training", "offline", "missed")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RelaxStep(_Strict):
    """After `after_seconds` of waiting, drop some required skills and/or lower proficiency."""

    after_seconds: float = Field(gt=0)
    drop_skills: list[str] = Field(default_factory=list)  # "*" drops every skill requirement
    lower_proficiency: int = Field(default=0, ge=0, le=4)


class QueuePolicy(_Strict):
    strategy: Strategy = "longest_idle"
    # Priority is a head start in time: effective age = wait + priority * this, so a
    # low-priority item overtakes newer high-priority ones eventually (no starvation).
    priority_head_start_seconds: float = Field(default=60.0, ge=0)
    relax: list[RelaxStep] = Field(default_factory=list)

    @model_validator(mode="after")
    def _ordered(self) -> QueuePolicy:
        waits = [s.after_seconds for s in self.relax]
        if waits != sorted(waits):
            raise ValueError("relax steps must be ordered by after_seconds")
        return self


class RouterSettings(_Strict):
    enabled: bool = True
    # One router task (and one leader lock) per shard; a project belongs to shard id % shards.
    shards: int = Field(default=1, ge=1, le=64)
    channel_costs: dict[str, int] = Field(
        default_factory=lambda: {"webchat": 34, "chat": 34, "email": 20, "sms": 20, "voicemail": 20, "fax": 20}
    )
    default_cost: int = Field(default=20, ge=0)
    channel_caps: dict[str, int] = Field(default_factory=dict)
    queues: dict[str, QueuePolicy] = Field(default_factory=dict)
    default_policy: QueuePolicy = QueuePolicy()
    offer_timeout_seconds: float = Field(default=30.0, gt=0)
    # The queue lease of an offer outlives the offer a little, so that the leader (not the
    # generic lease sweeper) times it out; the sweeper only acts when no leader is alive.
    offer_lease_grace_seconds: float = Field(default=30.0, ge=0)
    # How long an accepted item stays leased to its agent without a heartbeat.
    work_lease_seconds: float = Field(default=900.0, gt=0)
    decline_block_seconds: float = Field(default=300.0, ge=0)
    missed_reason: str = "offer_timeout"
    after_work_seconds: float = Field(default=30.0, ge=0)
    # Last-agent routing: a returning customer's item waits this long for the agent who
    # handled the conversation within `last_agent_memory_seconds`.
    last_agent_wait_seconds: float = Field(default=0.0, ge=0)
    last_agent_memory_seconds: float = Field(default=86_400.0, ge=0)
    transfer_pin_seconds: float = Field(default=120.0, gt=0)
    # Allowed reason codes per state; a state absent here accepts any reason (or none).
    reason_codes: dict[str, list[str]] = Field(default_factory=dict)
    leader_poll_seconds: float = Field(default=1.0, gt=0)
    sync_poll_seconds: float = Field(default=0.5, gt=0)

    @model_validator(mode="after")
    def _known_states(self) -> RouterSettings:
        unknown = sorted(set(self.reason_codes) - set(STATES))
        if unknown:
            raise ValueError(f"reason_codes names unknown states: {', '.join(unknown)}")
        return self

    def policy(self, queue: str) -> QueuePolicy:
        return self.queues.get(queue, self.default_policy)

    def cost(self, channel: str) -> int:
        return self.channel_costs.get(channel, self.default_cost)

    def for_instances(self, types: Mapping[str, str]) -> RouterSettings:
        """These settings for the configured channel instances (`types`: instance name -> adapter
        type): `channel_costs` and `channel_caps` are keyed by instance, as queue items are, and an
        instance they do not name costs, and is capped, as its adapter type is named there. So the
        defaults (`email = 20`) and a centre's `sms = 10` keep meaning every instance of the type."""
        return self.model_copy(update={"channel_costs": _by_instance(self.channel_costs, types),
                                       "channel_caps": _by_instance(self.channel_caps, types)})

    def check_reason(self, state: str, reason: str | None) -> str | None:
        """None when `reason` is allowed for `state`, else a message saying what is."""
        allowed = self.reason_codes.get(state)
        if allowed is None or reason is None or reason in allowed:
            return None
        return f"reason {reason!r} is not configured for state {state!r}; allowed: {', '.join(allowed)}"


def _by_instance(by_name: Mapping[str, int], types: Mapping[str, str]) -> dict[str, int]:
    found = dict(by_name)
    for instance, type_name in types.items():
        if instance not in found and type_name in by_name:
            found[instance] = by_name[type_name]
    return found

"""What a matching route does with the item: its target, and the decision the ingest applies.

Actions:
- `enqueue` (default): the universal queue, with required skills, priority, SLA and a
  preferred-agent rule.
- `auto_reply`: an automatic answer from a template (never to auto-submitted or bulk
  mail); with `queue` set the item is also enqueued (out-of-hours: answer now, work tomorrow).
- `drop`: the blacklist: the message is stored and flagged with the route, nobody is
  asked to work it.
- `forward`: an outbound copy to an address; with `queue` set the item is also enqueued.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

Action = Literal["enqueue", "auto_reply", "drop", "forward"]
ACTIONS: tuple[Action, ...] = ("enqueue", "auto_reply", "drop", "forward")

# The variables a reply template may use; anything else is a configuration error.
TEMPLATE_VARIABLES = frozenset(
    {"contact_name", "conversation_id", "subject", "channel", "sender", "route", "queue"})


def check_template(template: str) -> None:
    """ValueError naming the first unknown or malformed placeholder."""
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"malformed template ({exc}); write a literal brace as {{{{ or }}}}") from exc
    for _, name, spec, conversion in fields:
        if name is None:
            continue
        if name not in TEMPLATE_VARIABLES or spec or conversion:
            known = ", ".join(sorted(TEMPLATE_VARIABLES))
            raise ValueError(f"unknown template variable {{{name}}}; known: {known}")


def render(template: str, values: Mapping[str, object]) -> str:
    """Fill `{variable}` placeholders; only names `check_template` accepted can occur."""
    out: list[str] = []
    for literal, name, _, _ in string.Formatter().parse(template):
        out.append(literal)
        if name is not None:
            value = values.get(name)
            out.append("" if value is None else str(value))
    return "".join(out)


@dataclass(frozen=True)
class PreferredAgent:
    """Offer the item first to one agent, for at most `expiry_minutes`, then to anyone.

    `last_agent`: the agent who last served this contact; `agent`: the agent `login`.
    """

    rule: Literal["last_agent", "agent"]
    expiry_minutes: float
    login: str | None = None

    def describe(self) -> str:
        who = "the contact's last agent" if self.rule == "last_agent" else f"agent {self.login!r}"
        return f"prefer {who} for {self.expiry_minutes:g} min"


@dataclass(frozen=True)
class AutoReply:
    template: str
    subject: str | None = None
    # RFC 3834 asks for restraint: at most one automatic answer per conversation in this window.
    once_per_minutes: float = 60.0


@dataclass(frozen=True)
class Forward:
    to: str
    channel: str | None = None  # None: email for an address with '@', else the item's channel


@dataclass(frozen=True)
class Target:
    action: Action = "enqueue"
    queue: str | None = "default"
    priority: int = 0
    skills: tuple[tuple[str, int], ...] = ()
    sla_minutes: float | None = None
    preferred: PreferredAgent | None = None
    reply: AutoReply | None = None
    forward: Forward | None = None

    def describe(self) -> str:
        parts: list[str] = []
        if self.action == "drop":
            return "drop (stored and flagged, not queued)"
        if self.reply is not None:
            parts.append("auto-reply")
        if self.forward is not None:
            parts.append(f"forward to {self.forward.to}")
        if self.queue is not None:
            q = f"enqueue to {self.queue!r} priority {self.priority}"
            if self.skills:
                q += " skills " + ",".join(f"{k}>={v}" for k, v in self.skills)
            if self.sla_minutes:
                q += f" SLA {self.sla_minutes:g} min"
            if self.preferred is not None:
                q += f" ({self.preferred.describe()})"
            parts.append(q)
        return "; ".join(parts) or "no action"


@dataclass(frozen=True)
class RouteDecision:
    """The outcome of matching: the route's name and what to do."""

    route: str
    action: Action
    queue: str | None
    priority: int
    skills: dict[str, int] = field(default_factory=dict)
    sla: timedelta | None = None
    preferred: PreferredAgent | None = None
    reply: AutoReply | None = None
    forward: Forward | None = None

    def sla_due(self, now: datetime) -> datetime | None:
        return now + self.sla if self.sla else None

    @classmethod
    def of(cls, route: str, target: Target) -> RouteDecision:
        sla = timedelta(minutes=target.sla_minutes) if target.sla_minutes else None
        queue = None if target.action == "drop" else target.queue
        return cls(route, target.action, queue, target.priority, dict(target.skills), sla,
                   target.preferred, target.reply, target.forward)

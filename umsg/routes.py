"""Channel routes: which queue (or action) an inbound message goes to.

An ordered table; each route's filters must all match; the first match wins;
the table always ends in a default route that matches everything, so every
message has a destination.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from umsg.config import RouteSettings
from umsg.model import Inbound

DEFAULT_ROUTE = RouteSettings(name="default")


@dataclass(frozen=True)
class RouteDecision:
    route: str
    action: str  # enqueue | drop
    queue: str
    priority: int
    skills: dict[str, int] = field(default_factory=dict)
    sla: timedelta | None = None

    def sla_due(self, now: datetime) -> datetime | None:
        return now + self.sla if self.sla else None


def _addr_matches(pattern: str, value: str) -> bool:
    pattern, value = pattern.lower(), value.lower()
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


@dataclass(frozen=True)
class Route:
    settings: RouteSettings

    @property
    def name(self) -> str:
        return self.settings.name

    def mismatch(self, inbound: Inbound) -> str | None:
        """None when every filter matches, otherwise the first filter that did not."""
        s = self.settings
        if s.channel is not None and s.channel != inbound.channel:
            return f"channel is {inbound.channel!r}, route wants {s.channel!r}"
        if s.to is not None and not any(_addr_matches(s.to, r) for r in inbound.recipients):
            return f"no recipient matches {s.to!r}"
        if s.sender is not None and not _addr_matches(s.sender, inbound.sender.value):
            return f"sender {inbound.sender.value!r} does not match {s.sender!r}"
        return None

    def decision(self) -> RouteDecision:
        s = self.settings
        sla = timedelta(minutes=s.sla_minutes) if s.sla_minutes else None
        return RouteDecision(s.name, s.action, s.queue, s.priority, dict(s.skills), sla)


class RouteTable:
    """An ordered route table ending in a catch-all default."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)
        if not self.routes or not self._is_catch_all(self.routes[-1]):
            self.routes.append(Route(DEFAULT_ROUTE))

    @staticmethod
    def _is_catch_all(route: Route) -> bool:
        s = route.settings
        return s.channel is None and s.to is None and s.sender is None

    @classmethod
    def from_settings(cls, routes: Iterable[RouteSettings]) -> RouteTable:
        return cls(Route(r) for r in routes)

    def match(self, inbound: Inbound) -> RouteDecision:
        for route in self.routes:
            if route.mismatch(inbound) is None:
                return route.decision()
        raise AssertionError("the default route matches everything")  # pragma: no cover

    def explain(self, inbound: Inbound) -> list[dict[str, Any]]:
        """Each route in order with whether it matched and, if not, why."""
        out: list[dict[str, Any]] = []
        for route in self.routes:
            why = route.mismatch(inbound)
            out.append({"route": route.name, "matched": why is None, "reason": why})
            if why is None:
                break
        return out

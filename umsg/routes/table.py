"""The ordered route table: first match wins, a catch-all default always exists.

A table whose last route has filters gets the built-in `default` route
appended (enqueue to queue "default", priority 0), so every item has a
destination. `trace` explains a decision: for each route up to the matching
one, every filter with its verdict in words.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from umsg.model import Inbound
from umsg.routes.filters import Check, Filter, Sample
from umsg.routes.targets import RouteDecision, Target

if TYPE_CHECKING:
    pass

DEFAULT_NAME = "default"


@dataclass(frozen=True)
class Route:
    name: str
    filters: tuple[Filter, ...] = ()
    target: Target = field(default_factory=Target)
    builtin: bool = False  # the implicit default, not written by anyone

    @property
    def catch_all(self) -> bool:
        return not self.filters

    def checks(self, sample: Sample) -> list[tuple[str, Check]]:
        return [(f.key, f.check(sample)) for f in self.filters]

    def mismatch(self, sample: Sample) -> str | None:
        """None when every filter matches, otherwise why the first one did not."""
        for f in self.filters:
            verdict = f.check(sample)
            if not verdict.ok:
                return verdict.detail
        return None

    def decision(self) -> RouteDecision:
        return RouteDecision.of(self.name, self.target)


BUILTIN_DEFAULT = Route(DEFAULT_NAME, (), Target(), builtin=True)


@dataclass(frozen=True)
class RouteTrace:
    route: str
    matched: bool
    checks: tuple[tuple[str, Check], ...]
    builtin: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"route": self.route, "matched": self.matched, "builtin": self.builtin,
                "filters": [{"filter": k, "matched": c.ok, "detail": c.detail} for k, c in self.checks]}


@dataclass(frozen=True)
class Explanation:
    sample: Sample
    decision: RouteDecision
    target: Target
    steps: tuple[RouteTrace, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "matched": self.decision.route,
            "action": self.decision.action,
            "target": self.target.describe(),
            "queue": self.decision.queue,
            "priority": self.decision.priority,
            "skills": self.decision.skills,
            "at": self.sample.at.isoformat(),
            "routes": [s.to_dict() for s in self.steps],
        }


def sample_of(item: Sample | Inbound, now: datetime | None = None) -> Sample:
    if isinstance(item, Sample):
        return item
    return Sample(channel=item.channel, sender=item.sender.value, recipients=tuple(item.recipients),
                  at=now or datetime.now(UTC), subject=item.subject, text=item.text, meta=dict(item.meta))


class RouteTable:
    """An ordered route table ending in a catch-all default."""

    def __init__(self, routes: Iterable[Route], version: int = 0, source: str = "config") -> None:
        self.routes: list[Route] = list(routes)
        if not self.routes or not self.routes[-1].catch_all:
            self.routes.append(BUILTIN_DEFAULT)
        self.version = version  # the stored version, 0 for a table from the configuration
        self.source = source  # "config" or "stored"

    def match(self, item: Sample | Inbound, now: datetime | None = None) -> RouteDecision:
        sample = sample_of(item, now)
        for route in self.routes:
            if route.mismatch(sample) is None:
                return route.decision()
        raise AssertionError("the default route matches everything")  # pragma: no cover

    def trace(self, item: Sample | Inbound, now: datetime | None = None) -> Explanation:
        """Every route up to the one that matched, each filter with its verdict."""
        sample = sample_of(item, now)
        steps: list[RouteTrace] = []
        for route in self.routes:
            checks = route.checks(sample)
            matched = all(c.ok for _, c in checks)
            steps.append(RouteTrace(route.name, matched, tuple(checks), route.builtin))
            if matched:
                return Explanation(sample, route.decision(), route.target, tuple(steps))
        raise AssertionError("the default route matches everything")  # pragma: no cover

    def explain(self, item: Sample | Inbound, now: datetime | None = None) -> list[dict[str, Any]]:
        """Short form: each route in order, whether it matched and, if not, the first reason."""
        sample = sample_of(item, now)
        out: list[dict[str, Any]] = []
        for route in self.routes:
            why = route.mismatch(sample)
            out.append({"route": route.name, "matched": why is None, "reason": why})
            if why is None:
                break
        return out

    def names(self) -> Sequence[str]:
        return [r.name for r in self.routes]

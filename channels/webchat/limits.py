"""Abuse limits of one chat instance: rate buckets, open sockets per client address, refusals.

Kept in memory per process (on the adapter, no module state): a gateway that runs several
processes behind one address gives each its own budget, so the effective limit is the
setting times the number of processes. A bucket starts full (`per` events at once) and
refills at `per` events per `window` seconds, so a visitor who pauses is never refused,
and a flood stores at most about one window's worth.

Refusals are counted by reason for the metrics (`umsg_webchat_refused_total`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Past this many buckets, full ones (idle keys) are dropped so memory stays bounded.
_PRUNE_AT = 10_000


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimiter:
    """Token buckets by key; `take` spends one token or says how long until one is free."""

    per: int
    window: float
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def _refilled(self, key: str, now: float) -> _Bucket:
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = _Bucket(float(self.per), now)
        else:
            b.tokens = min(float(self.per), b.tokens + (now - b.at) * self.per / self.window)
            b.at = now
        return b

    def retry_after(self, key: str) -> float:
        """0 when `key` has a token left, else the seconds until it has one (nothing spent)."""
        if self.per <= 0:
            return self.window
        b = self._refilled(key, self.clock())
        return 0.0 if b.tokens >= 1.0 else (1.0 - b.tokens) * self.window / self.per

    def spend(self, key: str) -> None:
        b = self._refilled(key, self.clock())
        b.tokens = max(0.0, b.tokens - 1.0)
        if len(self._buckets) > _PRUNE_AT:
            self._prune()

    def _prune(self) -> None:
        now = self.clock()
        for key in [k for k, b in self._buckets.items()
                    if b.tokens + (now - b.at) * self.per / max(self.window, 1e-9) >= self.per]:
            del self._buckets[key]


class RateLimited(Exception):
    """Over a limit: `reason` names which one, `retry_after` when to try again (seconds)."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass
class Gate:
    """Several buckets that must all have a token; one action spends one of each, or none."""

    name: str  # message | upload | transcript | connect
    limiters: dict[str, RateLimiter]  # scope (visitor, address, recipient) -> buckets

    def check(self, refusals: Counter[str], **keys: str | None) -> None:
        """Spend a token of every scope given a key, or raise RateLimited (and count it)."""
        used = [(scope, self.limiters[scope], key) for scope, key in keys.items()
                if key is not None and scope in self.limiters]
        for scope, limiter, key in used:
            wait = limiter.retry_after(key)
            if wait > 0:
                reason = f"{self.name}_{scope}"
                refusals[reason] += 1
                raise RateLimited(reason, wait)
        for _, limiter, key in used:
            limiter.spend(key)


class SocketCount:
    """Open chat sockets per client address."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()

    def opened(self, address: str, cap: int) -> bool:
        """Count a new socket of `address`; False (and nothing counted) at the cap."""
        if self._open[address] >= cap:
            return False
        self._open[address] += 1
        return True

    def closed(self, address: str) -> None:
        self._open[address] -= 1
        if self._open[address] <= 0:
            del self._open[address]

    def total(self) -> int:
        return sum(self._open.values())


class LimitsCollector(Collector):
    """Prometheus collector of one instance's refusals and open sockets (read when scraped)."""

    def __init__(self, instance: str, refusals: Counter[str], sockets: SocketCount) -> None:
        self._instance = instance
        self._refusals = refusals
        self._sockets = sockets

    def describe(self) -> list[Metric]:
        return []  # as the app's own store collector: no collect() at registration

    def collect(self) -> Iterator[Metric]:
        refused = CounterMetricFamily("umsg_webchat_refused", "web chat requests refused by an abuse limit",
                                      labels=["instance", "reason"])
        for reason, n in sorted(self._refusals.items()):
            refused.add_metric([self._instance, reason], n)
        yield refused
        socks = GaugeMetricFamily("umsg_webchat_sockets", "open web chat sockets", labels=["instance"])
        socks.add_metric([self._instance], self._sockets.total())
        yield socks

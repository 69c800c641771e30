"""The web chat's rate buckets and socket counts on their own, with a hand-driven clock (no
sockets here: test_webchat_abuse.py drives them through the gateway)."""

from __future__ import annotations

from collections import Counter

import pytest

from channels.webchat.limits import Gate, RateLimited, RateLimiter, SocketCount
from channels.webchat.settings import ChatLimits, WebchatSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_lets_a_burst_through_then_refills_at_its_rate() -> None:
    clock = Clock()
    bucket = RateLimiter(per=3, window=60.0, clock=clock)
    for _ in range(3):
        assert bucket.retry_after("v") == 0
        bucket.spend("v")
    assert bucket.retry_after("v") == pytest.approx(20.0)  # one token per 20 s
    assert bucket.retry_after("other") == 0  # keys are independent
    clock.now += 20.0
    assert bucket.retry_after("v") == 0
    clock.now += 3600.0
    for _ in range(3):
        bucket.spend("v")
    assert bucket.retry_after("v") > 0  # refilled to the burst, never beyond


def test_a_zero_rate_refuses_everything() -> None:
    assert RateLimiter(per=0, window=3600.0).retry_after("v") == 3600.0


def test_a_gate_spends_every_scope_or_none_and_counts_refusals() -> None:
    clock = Clock()
    gate = Gate("message", {"visitor": RateLimiter(5, 60.0, clock), "address": RateLimiter(2, 60.0, clock)})
    refusals: Counter[str] = Counter()
    gate.check(refusals, visitor="a", address="10.0.0.1")
    gate.check(refusals, visitor="b", address="10.0.0.1")
    with pytest.raises(RateLimited) as over:
        gate.check(refusals, visitor="c", address="10.0.0.1")
    assert over.value.reason == "message_address" and refusals == {"message_address": 1}
    # The refused call spent nothing of visitor c: it still has its whole burst elsewhere.
    for _ in range(5):
        gate.check(refusals, visitor="c", address=f"10.0.0.{_ + 2}")
    with pytest.raises(RateLimited):
        gate.check(refusals, visitor="c", address="10.0.0.99")
    assert refusals == {"message_address": 1, "message_visitor": 1}
    gate.check(refusals, visitor="d", address=None)  # a scope without a key is not limited


def test_idle_buckets_are_pruned_so_memory_stays_bounded() -> None:
    clock = Clock()
    bucket = RateLimiter(per=1, window=1.0, clock=clock)
    for i in range(10_050):
        bucket.spend(f"k{i}")
    clock.now += 5.0
    bucket.spend("last")  # past the threshold: the full (idle) buckets go
    assert len(bucket._buckets) < 100


def test_sockets_per_address_are_counted_up_to_the_cap() -> None:
    socks = SocketCount()
    assert socks.opened("a", 2) and socks.opened("a", 2) and not socks.opened("a", 2)
    assert socks.opened("b", 2) and socks.total() == 3
    socks.closed("a")
    assert socks.opened("a", 2) and socks.total() == 3


def test_defaults_are_safe_and_an_existing_configuration_stays_valid() -> None:
    settings = WebchatSettings.model_validate({"secret": "s" * 16})
    assert settings.limits == ChatLimits()
    assert settings.limits.transcripts_per_hour == 3 and settings.limits.sockets_per_address == 20
    tuned = WebchatSettings.model_validate({"secret": "s" * 16, "limits": {"messages_per_minute": 5}})
    assert tuned.limits.messages_per_minute == 5
    with pytest.raises(ValueError):
        WebchatSettings.model_validate({"secret": "s" * 16, "limits": {"messages_per_minut": 5}})

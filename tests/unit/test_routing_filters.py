"""Every filter kind, table-driven: a route's settings, a sample, and whether it matches."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from umsg.config import RouteSettings
from umsg.routes.build import build_route
from umsg.routes.filters import Sample
from umsg.routes.table import RouteTable

# Monday 2026-03-30 10:00 UTC; Berlin is on summer time (UTC+2) since Sunday 2026-03-29.
MONDAY = datetime(2026, 3, 30, 10, 0, tzinfo=UTC)

BERLIN_HOURS: dict[str, Any] = {
    "tz": "Europe/Berlin",
    "mon": "08:00-18:00",
    "tue": "08:00-18:00",
    "wed": "08:00-18:00",
    "thu": "08:00-18:00",
    "fri": "08:00-12:00, 13:00-17:00",
    "holidays": ["2026-04-03", "2026-12-25"],
}


def sample(**kw: Any) -> Sample:
    base: dict[str, Any] = {
        "channel": "email",
        "sender": "ann@example.com",
        "recipients": ("support@acme.test",),
        "at": MONDAY,
    }
    base.update(kw)
    return Sample(**base)


def utc(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


CASES: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    # -- channel ---------------------------------------------------------------------------
    ("channel equal", {"channel": "sms"}, {"channel": "sms"}, True),
    ("channel differs", {"channel": "sms"}, {"channel": "email"}, False),
    ("channel any of", {"channel": ["sms", "voicemail"]}, {"channel": "voicemail"}, True),
    # -- recipient: exact, prefix, regex, range --------------------------------------------
    ("to exact, case-insensitive", {"to": "sales@acme.test"}, {"recipients": ("Sales@ACME.test",)}, True),
    ("to exact, other address", {"to": "sales@acme.test"}, {"recipients": ("sales@acme.tes",)}, False),
    ("to any recipient", {"to": "sales@acme.test"}, {"recipients": ("a@x.test", "sales@acme.test")}, True),
    ("to prefix", {"to": "sales@*"}, {"recipients": ("sales@other.test",)}, True),
    ("to prefix miss", {"to": "sales@*"}, {"recipients": ("presales@acme.test",)}, False),
    ("dialled number prefix, spacing ignored", {"to": "+49800*"}, {"recipients": ("+49 800 123 456",)}, True),
    ("short code exact", {"to": "80012"}, {"channel": "sms", "recipients": ("80012",)}, True),
    (
        "to regex whole value",
        {"to": r"re:^(sales|vertrieb)@acme\.test$"},
        {"recipients": ("vertrieb@acme.test",)},
        True,
    ),
    ("to regex must match whole", {"to": "re:sales"}, {"recipients": ("sales@acme.test",)}, False),
    ("to regex partial via .*", {"to": "re:sales.*"}, {"recipients": ("sales@acme.test",)}, True),
    ("to list: any pattern", {"to": ["+4930*", "80012"]}, {"recipients": ("80012",)}, True),
    # -- sender, number ranges ---------------------------------------------------------------
    ("sender exact", {"sender": "ann@example.com"}, {}, True),
    ("sender prefix number", {"sender": "+4470*"}, {"sender": "+447012345678"}, True),
    ("range: inside", {"sender": "+4930100..+4930199"}, {"sender": "+4930100"}, True),
    ("range: upper bound inclusive", {"sender": "+4930100..+4930199"}, {"sender": "+4930199"}, True),
    ("range: just above", {"sender": "+4930100..+4930199"}, {"sender": "+4930200"}, False),
    ("range: longer number is outside", {"sender": "+4930100..+4930199"}, {"sender": "+49301001"}, False),
    ("range: not a number", {"sender": "+4930100..+4930199"}, {"sender": "ann@example.com"}, False),
    ("range: digits without plus", {"sender": "4930100..4930199"}, {"sender": "+4930150"}, True),
    # -- time window -----------------------------------------------------------------------
    (
        "window inside (local Berlin)",
        {"time": {"from": "11:00", "to": "13:00", "tz": "Europe/Berlin"}},
        {"at": utc(2026, 3, 30, 10, 30)},
        True,
    ),
    (
        "window outside",
        {"time": {"from": "11:00", "to": "13:00", "tz": "Europe/Berlin"}},
        {"at": utc(2026, 3, 30, 11, 0)},
        False,
    ),
    (
        "window wraps midnight, late",
        {"time": {"from": "22:00", "to": "06:00", "tz": "UTC"}},
        {"at": utc(2026, 3, 30, 23, 15)},
        True,
    ),
    (
        "window wraps midnight, early",
        {"time": {"from": "22:00", "to": "06:00", "tz": "UTC"}},
        {"at": utc(2026, 3, 31, 5, 59)},
        True,
    ),
    (
        "window wraps midnight, day",
        {"time": {"from": "22:00", "to": "06:00", "tz": "UTC"}},
        {"at": utc(2026, 3, 31, 6, 0)},
        False,
    ),
    (
        "window weekday listed",
        {"time": {"from": "00:00", "to": "24:00", "days": ["sat", "sun"], "tz": "UTC"}},
        {"at": utc(2026, 3, 28, 12, 0)},
        True,
    ),
    (
        "window weekday not listed",
        {"time": {"from": "00:00", "to": "24:00", "days": ["sat", "sun"], "tz": "UTC"}},
        {"at": MONDAY},
        False,
    ),
    # -- business hours across the DST change (Sunday 2026-03-29) and holidays -----------------
    # 06:30 UTC is 07:30 in winter (closed) but 08:30 in summer (open).
    (
        "hours: Friday 06:30 UTC = 07:30 CET, closed",
        {"hours": {**BERLIN_HOURS, "open": True}},
        {"at": utc(2026, 3, 27, 6, 30)},
        False,
    ),
    (
        "hours: Monday 06:30 UTC = 08:30 CEST, open",
        {"hours": {**BERLIN_HOURS, "open": True}},
        {"at": utc(2026, 3, 30, 6, 30)},
        True,
    ),
    (
        "hours: Monday 16:30 UTC = 18:30 CEST, closed",
        {"hours": {**BERLIN_HOURS, "open": True}},
        {"at": utc(2026, 3, 30, 16, 30)},
        False,
    ),
    (
        "hours: Thursday 16:30 UTC in winter = 17:30 CET, open",
        {"hours": {**BERLIN_HOURS, "open": True}},
        {"at": utc(2026, 3, 26, 16, 30)},
        True,
    ),
    (
        "hours: Friday lunch break is closed",
        {"hours": {**BERLIN_HOURS, "open": False}},
        {"at": utc(2026, 3, 27, 11, 30)},
        True,
    ),
    (
        "hours: Good Friday holiday is closed",
        {"hours": {**BERLIN_HOURS, "open": False}},
        {"at": utc(2026, 4, 3, 9, 0)},
        True,
    ),
    (
        "hours: holiday is local date (23:30 UTC on 04-02 = 01:30 on 04-03)",
        {"hours": {**BERLIN_HOURS}},
        {"at": utc(2026, 4, 2, 23, 30)},
        False,
    ),
    (
        "hours: Sunday closed",
        {"hours": {**BERLIN_HOURS, "open": False}},
        {"at": utc(2026, 3, 29, 10, 0)},
        True,
    ),
    # -- contact attributes ------------------------------------------------------------------
    ("vip = true", {"contact": "vip = true"}, {"attributes": {"vip": True}}, True),
    ("vip = true, attribute false", {"contact": "vip = true"}, {"attributes": {"vip": False}}, False),
    ("vip = true is not 1", {"contact": "vip = true"}, {"attributes": {"vip": 1}}, False),
    ("missing attribute never matches", {"contact": "vip != true"}, {"attributes": {}}, False),
    ("value >= 1000", {"contact": "value >= 1000"}, {"attributes": {"value": 1000}}, True),
    ("value >= 1000, float below", {"contact": "value >= 1000"}, {"attributes": {"value": 999.5}}, False),
    ("value compared to a string", {"contact": "value >= 1000"}, {"attributes": {"value": "2000"}}, False),
    (
        "all conditions must hold",
        {"contact": ["vip = true", "value > 10"]},
        {"attributes": {"vip": True, "value": 5}},
        False,
    ),
    ("tier in list", {"contact": 'tier in ["gold", "platinum"]'}, {"attributes": {"tier": "gold"}}, True),
    ("bare word string", {"contact": "tier = gold"}, {"attributes": {"tier": "gold"}}, True),
    # -- language, menu, keywords --------------------------------------------------------------
    ("language exact", {"language": "de"}, {"meta": {"language": "de"}}, True),
    ("language region inside base", {"language": "de"}, {"meta": {"language": "de_CH"}}, True),
    ("language other", {"language": ["de", "fr"]}, {"meta": {"language": "en"}}, False),
    ("language undetected", {"language": "de"}, {"meta": {}}, False),
    ("menu choice", {"menu": "2"}, {"meta": {"menu": 2}}, True),
    ("menu prefix (sub-menu)", {"menu": "3*"}, {"meta": {"menu": "31"}}, True),
    ("menu none chosen", {"menu": "2"}, {"meta": {}}, False),
    ("keyword in subject, any case", {"keywords": ["refund"]}, {"subject": "REFUND please"}, True),
    ("keyword in text", {"keywords": ["refund", "cancel"]}, {"text": "I want to cancel."}, True),
    ("keyword is a whole word", {"keywords": ["refund"]}, {"text": "refunded already"}, False),
    ("phrase across whitespace", {"keywords": ["cancel order"]}, {"text": "please cancel\n  order 7"}, True),
    ("no keyword", {"keywords": ["refund"]}, {"subject": None, "text": None}, False),
    # -- several kinds: all must match -------------------------------------------------------
    (
        "all filters match",
        {"channel": "sms", "sender": "+4930*", "keywords": "stop"},
        {"channel": "sms", "sender": "+49301234", "text": "STOP"},
        True,
    ),
    (
        "one filter fails",
        {"channel": "sms", "sender": "+4930*", "keywords": "stop"},
        {"channel": "sms", "sender": "+49401234", "text": "STOP"},
        False,
    ),
]


@pytest.mark.parametrize(("settings", "facts", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_filter(settings: dict[str, Any], facts: dict[str, Any], expected: bool) -> None:
    route = build_route(RouteSettings.model_validate({"name": "r", "queue": "q", **settings}))
    verdicts = route.checks(sample(**facts))
    assert all(c.ok for _, c in verdicts) is expected, verdicts
    assert verdicts and all(c.detail for _, c in verdicts)


def test_first_match_wins_and_trace_gives_every_filter_of_earlier_routes() -> None:
    table = RouteTable(
        build_route(RouteSettings.model_validate(r))
        for r in [
            {"name": "vip-sms", "channel": "sms", "contact": "vip = true", "queue": "vip", "priority": 10},
            {"name": "vip", "contact": "vip = true", "queue": "vip", "priority": 5},
            {"name": "general", "queue": "general"},
        ]
    )
    exp = table.trace(sample(attributes={"vip": True}))
    assert exp.decision.route == "vip" and exp.decision.priority == 5
    first = exp.steps[0]
    assert not first.matched
    # Every filter is reported, the one that matched as well as the one that did not.
    assert [(k, c.ok) for k, c in first.checks] == [("channel", False), ("contact", True)]
    assert "route wants 'sms'" in first.checks[0][1].detail
    assert len(exp.steps) == 2 and table.names()[-1] == "general"


def test_table_without_catch_all_gets_the_builtin_default() -> None:
    table = RouteTable([build_route(RouteSettings(name="sms", channel="sms"))])
    exp = table.trace(sample())
    assert exp.decision.route == "default" and exp.decision.queue == "default" and exp.steps[-1].builtin


def test_decision_carries_the_target() -> None:
    rs = RouteSettings.model_validate(
        {
            "name": "vip",
            "contact": "vip = true",
            "queue": "vip",
            "priority": 7,
            "sla_minutes": 30,
            "skills": {"billing": 3, "german": 2},
            "preferred_agent": {"rule": "last_agent", "expiry_minutes": 120},
        }
    )
    d = build_route(rs).decision()
    assert (d.queue, d.priority, d.skills) == ("vip", 7, {"billing": 3, "german": 2})
    assert d.sla_due(MONDAY) == datetime(2026, 3, 30, 10, 30, tzinfo=UTC)
    assert d.preferred is not None and d.preferred.rule == "last_agent" and d.preferred.expiry_minutes == 120
    drop = build_route(RouteSettings(name="spam", sender="spam@*", action="drop")).decision()
    assert drop.action == "drop" and drop.queue is None
    reply = build_route(
        RouteSettings(name="info", action="auto_reply", template="Hi {contact_name}")
    ).decision()
    assert reply.queue is None and reply.reply is not None
    both = build_route(RouteSettings(name="ooh", action="auto_reply", template="x", queue="later")).decision()
    assert both.queue == "later"

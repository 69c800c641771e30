"""Shadowing: a route an earlier route always wins over is refused, naming both; others are accepted."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from umsg.config import RouteSettings, load_settings
from umsg.errors import ConfigError
from umsg.routes.build import parse_table, table_problems
from umsg.routes.filters import parse_condition
from umsg.routes.patterns import parse_pattern

HOURS: dict[str, Any] = {"tz": "Europe/Berlin", "mon": "08:00-18:00", "holidays": ["2026-12-25"]}

# (case, earlier route's filters, later route's filters): the later one can never match.
REFUSED: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("catch-all before anything", {}, {"channel": "sms"}),
    ("same filters", {"channel": "sms"}, {"channel": "sms"}),
    ("narrower channel list", {"channel": ["sms", "email"]}, {"channel": "sms"}),
    ("extra filter on the later route", {"channel": "sms"}, {"channel": "sms", "keywords": "stop"}),
    ("prefix covers longer prefix", {"to": "sales@*"}, {"to": "sales@acme*"}),
    ("prefix covers exact", {"sender": "+4930*"}, {"sender": "+4930123"}),
    (
        "regex covers an exact value it matches",
        {"to": r"re:(sales|info)@acme\.test"},
        {"to": "info@acme.test"},
    ),
    ("same regex", {"to": "re:a.*"}, {"to": ["re:a.*"]}),
    ("wider number range", {"sender": "+4930100..+4930199"}, {"sender": "+4930120..+4930129"}),
    ("range covers an exact number", {"sender": "+4930100..+4930199"}, {"sender": "+4930150"}),
    (
        "wider time window, same zone",
        {"time": {"from": "08:00", "to": "20:00", "tz": "Europe/Berlin"}},
        {"time": {"from": "09:00", "to": "17:00", "days": ["mon"], "tz": "Europe/Berlin"}},
    ),
    (
        "wrapping window covers its night part",
        {"time": {"from": "22:00", "to": "06:00"}},
        {"time": {"from": "23:00", "to": "02:00"}},
    ),
    ("same calendar, same state", {"hours": {**HOURS, "open": False}}, {"hours": {**HOURS, "open": False}}),
    ("weaker contact condition", {"contact": "value >= 1000"}, {"contact": "value > 5000"}),
    ("equality implies a range", {"contact": "value > 10"}, {"contact": "value = 11"}),
    ("conjunction implies a part", {"contact": "vip = true"}, {"contact": ["vip = true", "value >= 10"]}),
    (
        "in-list implies a wider in-list",
        {"contact": 'tier in ["gold", "platinum"]'},
        {"contact": "tier = gold"},
    ),
    ("base language covers region", {"language": "de"}, {"language": ["de-CH", "de-AT"]}),
    ("menu prefix covers choice", {"menu": "3*"}, {"menu": "31"}),
    ("keyword inside a phrase", {"keywords": "refund"}, {"keywords": "refund now"}),
]

# (case, earlier, later): the later route can still match something.
ACCEPTED: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("different channel", {"channel": "sms"}, {"channel": "email"}),
    ("later route is wider", {"channel": "sms", "keywords": "stop"}, {"channel": "sms"}),
    ("earlier has a filter the later lacks", {"sender": "vip@*"}, {"channel": "email"}),
    ("prefix does not cover shorter prefix", {"to": "sales@acme*"}, {"to": "sales@*"}),
    ("overlapping ranges", {"sender": "+4930100..+4930150"}, {"sender": "+4930140..+4930199"}),
    ("prefix vs range is not provable", {"sender": "+49301*"}, {"sender": "+4930100..+4930199"}),
    ("different regexes are not compared", {"to": "re:.*"}, {"to": "re:sales.*"}),
    ("regex does not match the exact value", {"to": "re:sales@.*"}, {"to": "info@acme.test"}),
    (
        "windows in different zones",
        {"time": {"from": "00:00", "to": "24:00", "tz": "Europe/Berlin"}},
        {"time": {"from": "09:00", "to": "10:00", "tz": "UTC"}},
    ),
    (
        "window narrower than the later one",
        {"time": {"from": "09:00", "to": "17:00"}},
        {"time": {"from": "08:00", "to": "18:00"}},
    ),
    ("open vs closed", {"hours": {**HOURS, "open": True}}, {"hours": {**HOURS, "open": False}}),
    ("different calendars", {"hours": {**HOURS, "open": True}}, {"hours": {**HOURS, "tue": "08:00-18:00"}}),
    (
        "time window vs calendar is not compared",
        {"time": {"from": "00:00", "to": "24:00"}},
        {"hours": {**HOURS}},
    ),
    ("stronger contact condition first", {"contact": "value > 5000"}, {"contact": "value >= 1000"}),
    ("opposite directions", {"contact": "value > 10"}, {"contact": "value < 5"}),
    ("true is not 1", {"contact": "vip = true"}, {"contact": "vip = 1"}),
    ("region does not cover base", {"language": "de-CH"}, {"language": "de"}),
    ("phrase does not cover keyword", {"keywords": "refund now"}, {"keywords": "refund"}),
    ("keyword is not inside another word", {"keywords": "fund"}, {"keywords": "refund"}),
]


def table(earlier: dict[str, Any], later: dict[str, Any]) -> list[RouteSettings]:
    return [
        RouteSettings.model_validate({"name": "first", **earlier}),
        RouteSettings.model_validate({"name": "second", **later}),
    ]


@pytest.mark.parametrize(("earlier", "later"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_shadowed_route_is_refused_naming_both(earlier: dict[str, Any], later: dict[str, Any]) -> None:
    problems = table_problems(table(earlier, later), "p")
    assert len(problems) == 1, problems
    key, reason = problems[0]
    assert key == "routes.1"
    assert "'second' can never match" in reason and "'first' (routes.0)" in reason


@pytest.mark.parametrize(("earlier", "later"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_reachable_route_is_accepted(earlier: dict[str, Any], later: dict[str, Any]) -> None:
    assert table_problems(table(earlier, later), "p") == []


def test_shadowing_is_checked_per_project_and_loading_refuses_with_keys() -> None:
    routes = [
        {"name": "all-a", "project": "a"},
        {"name": "sms-b", "project": "b", "channel": "sms"},
        {"name": "sms-a", "project": "a", "channel": "sms"},
    ]
    with pytest.raises(ConfigError) as err:
        load_settings(None, environ={}, overrides={"routes": routes})
    assert err.value.problems == [
        (
            "routes.2",
            "route 'sms-a' can never match: the earlier route 'all-a' (routes.0) matches everything it "
            "matches",
        )
    ]


def test_repeated_names_and_a_non_default_route_named_default() -> None:
    routes = [
        RouteSettings(name="default", channel="sms"),
        RouteSettings(name="x", channel="email"),
        RouteSettings(name="x", channel="fax"),
    ]
    problems = dict(table_problems(routes, "p"))
    assert "catch-all" in problems["routes.0"]
    assert "already used by routes.1" in problems["routes.2"]


def test_json_tables_name_the_route_in_the_key() -> None:
    _, problems = parse_table([{"name": "all"}, {"name": "late", "channel": "sms"}], "p")
    assert problems == [
        (
            "routes[1] (late)",
            "route 'late' can never match: the earlier route 'all' (routes[0]) matches everything it matches",
        )
    ]


# -- soundness: whenever `covers` claims coverage, no value contradicts it -----------------------

PATTERN_TEXTS = ["+4930*", "+49301*", "+4930100", "+4930150", "+4930100..+4930199", "+4930120..+4930129",
                 "4930100..4930999", "re:\\+4930\\d{3}", "re:\\+49.*", "sales@*", "sales@acme.test",
                 "re:sales@.*", "*"]
VALUES = st.one_of(
    st.sampled_from(["+4930100", "+4930150", "+4930199", "+4930200", "+49301", "+4930100123", "4930150",
                     "+49 30 150", "sales@acme.test", "SALES@acme.test", "sales@x.test", "info@acme.test"]),
    st.from_regex(r"\+?49 ?30[0-9 ]{0,6}", fullmatch=True),
    st.text(max_size=12),
)


@given(wide=st.sampled_from(PATTERN_TEXTS), narrow=st.sampled_from(PATTERN_TEXTS), value=VALUES)
def test_pattern_cover_is_sound(wide: str, narrow: str, value: str) -> None:
    a, b = parse_pattern(wide), parse_pattern(narrow)
    if a.covers(b) and b.matches(value):
        assert a.matches(value), (wide, narrow, value)


CONDITIONS = ["v = 5", "v = 5.5", "v != 5", "v > 3", "v >= 5", "v < 10", "v <= 5", "v in [1, 5, 9]",
              "v = true", "v != true", "v = \"a\"", "v in [\"a\", \"b\"]", "v > \"m\""]
ATTR_VALUES = st.one_of(st.integers(-2, 12), st.floats(-2, 12, allow_nan=False), st.booleans(),
                        st.sampled_from(["a", "b", "z", ""]), st.none())


@given(strong=st.sampled_from(CONDITIONS), weak=st.sampled_from(CONDITIONS), value=ATTR_VALUES)
def test_condition_implication_is_sound(strong: str, weak: str, value: object) -> None:
    a, b = parse_condition(strong), parse_condition(weak)
    if a.implies(b) and a.holds({"v": value}):
        assert b.holds({"v": value}), (strong, weak, value)

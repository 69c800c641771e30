"""Routes in the TOML configuration: a good file loads per project; every mistake names its key."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from umsg.config import load_settings
from umsg.errors import ConfigError
from umsg.routes.book import RouteBook
from umsg.routes.filters import Sample
from umsg.routes.targets import render

GOOD = """
project = "acme"

[[routes]]
name = "blocklist"
sender = ["spam@*", "+4930100..+4930199"]
action = "drop"

[[routes]]
name = "vip"
contact = ["vip = true", "value >= 1000"]
queue = "vip"
priority = 10
sla_minutes = 30
skills = { billing = 3 }
preferred_agent = { rule = "last_agent", expiry_minutes = 1440 }

[[routes]]
name = "closed"
hours = { tz = "Europe/Berlin", mon = "08:00-18:00", open = false, holidays = [2026-12-25] }
action = "auto_reply"
template = "Dear {contact_name}, we are closed; your case {conversation_id} waits for us."
queue = "general"

[[routes]]
name = "partner"
project = "other"
to = "re:^partner-.*@acme\\\\.test$"
action = "forward"
forward_to = "desk@partner.test"

[[routes]]
name = "general"
queue = "general"
"""

BAD = """
[[routes]]
name = "one"
sender = "+4930199..+4930100"
chanel = "sms"

[[routes]]
name = "two"
to = "re:(unclosed"
time = { from = "25:00", to = "06:00", days = ["mon", "funday"], tz = "Mars/Olympus" }

[[routes]]
name = "three"
contact = "vip >>= 1"
skills = { billing = 7 }
hours = { tz = "UTC", mon = "18:00-08:00" }

[[routes]]
name = "four"
action = "auto_reply"
template = "Hello {customer}"

[[routes]]
name = "five"
action = "auto_reply"

[[routes]]
name = "six"
action = "drop"
queue = "vip"

[[routes]]
name = "seven"
preferred_agent = { rule = "agent" }
keywords = []
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "umsg.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_good_file_loads_one_table_per_project(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD), environ={})
    book = RouteBook.from_settings(settings.routes, settings.project)
    assert book.configured("acme").names() == ["blocklist", "vip", "closed", "general"]
    assert book.configured("other").names() == ["partner", "default"]
    assert book.configured("nobody").names() == ["default"]
    at = datetime(2026, 12, 25, 10, 0, tzinfo=UTC)  # a holiday
    s = Sample(channel="email", sender="ann@example.com", recipients=("support@acme.test",), at=at)
    assert book.configured("acme").match(s).route == "closed"
    assert (
        book.configured("other")
        .match(Sample(channel="email", sender="x@y.test", recipients=("partner-eu@acme.test",), at=at))
        .route
        == "partner"
    )


def test_every_mistake_is_reported_with_its_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, BAD), environ={})
    problems = dict(err.value.problems)
    expected = {
        "routes.0.sender": "range starts after it ends",
        "routes.0.chanel": "unknown key (did you mean 'channel'?)",
        "routes.1.to": "not a valid regular expression",
        "routes.1.time.from": "'25:00' is not a time of day",
        "routes.1.time.days": "'funday' is not a weekday",
        "routes.1.time.tz": "unknown time zone 'Mars/Olympus'",
        "routes.2.contact": "'>= 1' is not a value",
        "routes.2.skills.billing": "less than or equal to 5",
        "routes.2.hours.mon": "must end after it starts",
        "routes.3.template": "unknown template variable {customer}",
        "routes.4": "needs a template",
        "routes.5": "queue cannot be used with action 'drop'",
        "routes.6.preferred_agent": "rule 'agent' needs a login",
        "routes.6.keywords": "must not be empty",
    }
    for key, words in expected.items():
        assert key in problems, (key, problems)
        assert words in problems[key], (key, problems[key])
    assert len(problems) == len(expected), problems


@pytest.mark.parametrize(
    ("template", "rendered"),
    [
        ("Hi {contact_name}, re: {subject} (#{conversation_id})", "Hi Ann, re: Invoice (#42)"),
        (
            "Literal {{braces}} stay; {channel} from {sender}",
            "Literal {braces} stay; email from ann@example.com",
        ),
        ("{route} → {queue}", "ooh → later"),
    ],
)
def test_templates_render_known_variables(template: str, rendered: str) -> None:
    values = {
        "contact_name": "Ann",
        "subject": "Invoice",
        "conversation_id": 42,
        "channel": "email",
        "sender": "ann@example.com",
        "route": "ooh",
        "queue": "later",
    }
    assert render(template, values) == rendered


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("{contact_name.__class__}", "unknown template variable"),
        ("{subject!r}", "unknown template variable"),
        ("{subject:>10}", "unknown template variable"),
        ("unbalanced {", "malformed template"),
    ],
)
def test_templates_refuse_anything_but_plain_variables(template: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(
            None,
            environ={},
            overrides={"routes": [{"name": "r", "action": "auto_reply", "template": template}]},
        )
    ((key, reason),) = err.value.problems
    assert key == "routes.0.template" and words in reason

"""`umsg routes test`: the explanation names the matching route and, per filter, why earlier ones failed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from umsg.cli import main

CONFIG = """
project = "acme"

[[routes]]
name = "blocklist"
sender = "+4930100..+4930199"
action = "drop"

[[routes]]
name = "vip-sms"
channel = "sms"
contact = "vip = true"
queue = "vip"
priority = 10

[[routes]]
name = "german-menu"
channel = "voicemail"
menu = "2"
language = "de"
queue = "german"

[[routes]]
name = "after-hours"
hours = { tz = "Europe/Berlin", mon = "08:00-18:00", tue = "08:00-18:00", open = false }
action = "auto_reply"
template = "We are closed."
queue = "general"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "umsg.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def test_explains_each_earlier_route_per_filter(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        [
            "routes",
            "test",
            "--config",
            str(config),
            "--channel",
            "sms",
            "--from",
            "+49 30 200 123",
            "--to",
            "80012",
            "--text",
            "hello",
            "--meta",
            "language=de",
            "--at",
            "2026-03-30T06:30:00Z",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    lines = [line.strip() for line in out.splitlines()]
    assert "sample: sms from +4930200123 to 80012 at 2026-03-30T06:30:00+00:00" in lines
    assert "1. blocklist: no match" in lines
    assert "- sender: sender '+4930200123' does not match +4930100..+4930199" in lines
    assert "2. vip-sms: no match" in lines
    assert "+ channel: channel is 'sms'" in lines  # the filters that did match are listed too
    assert "- contact: vip = true is false (vip = (missing))" in lines
    assert "- channel: channel is 'sms', route wants 'voicemail'" in lines
    assert "- menu: no menu selection; route wants 2" in lines
    assert "+ language: language 'de' is in de" in lines
    # 06:30 UTC on the Monday after the DST change is 08:30 in Berlin: open, so not after-hours.
    assert any(line.startswith("- hours: route wants closed; open at Mon 2026-03-30 08:30") for line in lines)
    assert "5. default (built-in): MATCHED" in lines
    assert lines[-1] == "=> route 'default': enqueue to 'default' priority 0"


def test_attributes_and_json_output(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        [
            "routes",
            "test",
            "--config",
            str(config),
            "--channel",
            "sms",
            "--from",
            "+4940123",
            "--to",
            "80012",
            "--attr",
            "vip=true",
            "--json",
            "--at",
            "2026-03-30T12:00:00+02:00",
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert status == 0
    assert data["matched"] == "vip-sms" and data["priority"] == 10 and data["queue"] == "vip"
    assert [r["route"] for r in data["routes"]] == ["blocklist", "vip-sms"]
    assert data["routes"][1]["filters"] == [
        {"filter": "channel", "matched": True, "detail": "channel is 'sms'"},
        {"filter": "contact", "matched": True, "detail": "contact has vip = true"},
    ]


def test_bad_arguments_are_config_errors(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        [
            "routes",
            "test",
            "--config",
            str(config),
            "--channel",
            "sms",
            "--from",
            "x",
            "--meta",
            "oops",
            "--to",
            "1",
        ]
    )
    assert status == 2
    assert "error: meta: 'oops' is not KEY=VALUE" in capsys.readouterr().err
    status = main(
        ["routes", "test", "--config", str(config), "--channel", "sms", "--from", "x", "--at", "noon"]
    )
    assert status == 2
    assert "error: at: 'noon' is not an ISO time" in capsys.readouterr().err

"""Web chat: frame validation, visitor token signing, dedupe keys, file names and settings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from channels.registry import ChannelRegistry
from channels.webchat import WebchatChannel
from channels.webchat.ids import dedupe_key, new_visitor_id, safe_filename, sign_visitor, verify_visitor
from channels.webchat.protocol import Hello, LeaveMessage, ProtocolError, Rate, Say, parse_frame
from channels.webchat.settings import WebchatSettings
from umsg.errors import ConfigError

SECRET = "s" * 32


@pytest.mark.parametrize(("raw", "kind"), [
    ('{"type": "hello"}', Hello),
    ('{"type": "hello", "token": "abc", "page": "https://x/"}', Hello),
    ('{"type": "message", "client_id": "c-1_A", "text": " hi "}', Say),
    ('{"type": "rate", "score": 5, "comment": "great"}', Rate),
    ('{"type": "leave_message", "client_id": "c", "email": "a@b.co", "text": "x"}', LeaveMessage),
])
def test_valid_frames(raw: str, kind: type) -> None:
    assert isinstance(parse_frame(raw, 100), kind)


@pytest.mark.parametrize(("raw", "code", "client_id"), [
    ("nope", "bad_json", None),
    ("[1]", "bad_frame", None),
    ('{"type": "shout"}', "unknown_type", None),
    ('{"type": "message", "client_id": "c1", "text": ""}', "invalid", "c1"),
    ('{"type": "message", "client_id": "has space", "text": "x"}', "invalid", "has space"),
    ('{"type": "message", "client_id": "c2", "text": "x", "extra": 1}', "invalid", "c2"),
    ('{"type": "message", "client_id": "c3", "text": "' + "x" * 101 + '"}', "too_long", "c3"),
    ('{"type": "rate", "score": 0}', "invalid", None),
    ('{"type": "leave_message", "client_id": "c", "email": "not-an-email", "text": "x"}', "invalid", "c"),
])
def test_invalid_frames_name_the_problem(raw: str, code: str, client_id: str | None) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_frame(raw, 100)
    frame = err.value.frame()
    assert frame["type"] == "error" and frame["code"] == code and frame.get("client_id") == client_id


def test_oversized_frame_is_refused_before_parsing() -> None:
    with pytest.raises(ProtocolError) as err:
        parse_frame("x" * (300 * 1024), 100)
    assert err.value.code == "too_large"


def test_tokens_verify_only_with_the_same_secret_and_scope() -> None:
    vid = new_visitor_id()
    token = sign_visitor(SECRET, "webchat", vid)
    assert verify_visitor(SECRET, "webchat", token) == vid
    assert verify_visitor("t" * 32, "webchat", token) is None
    assert verify_visitor(SECRET, "other", token) is None
    other = new_visitor_id()
    assert verify_visitor(SECRET, "webchat", f"{other}.{token.split('.')[1]}") is None  # swapped id
    for bad in (None, 7, "", vid, token + "x", token[:-1], "." + token, "v_x.y"):
        assert verify_visitor(SECRET, "webchat", bad) is None
    with pytest.raises(ValueError):
        sign_visitor(SECRET, "webchat", "not-a-visitor")


def test_dedupe_key_is_stable_per_visitor_and_client_id() -> None:
    a, b = new_visitor_id(), new_visitor_id()
    assert dedupe_key(a, "c1") == dedupe_key(a, "c1") != dedupe_key(b, "c1")
    assert dedupe_key(a, "c1") != dedupe_key(a, "c2")
    with pytest.raises(ValueError):
        dedupe_key(a, "x:y")


@pytest.mark.parametrize(("name", "expected"), [
    ("report.pdf", "report.pdf"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\photo.png", "photo.png"),
    ("a\x00b\u202ec.png", "abc.png"),
    ("", "file"),
    (None, "file"),
    ("...", "file"),
    ("x" * 300, "x" * 200),
])
def test_safe_filename(name: str | None, expected: str) -> None:
    assert safe_filename(name) == expected


def test_settings_validate_origins_types_and_hours() -> None:
    s = WebchatSettings(secret=SECRET, allowed_origins=["https://Shop.Example:8443"], upload_types=["image/*"],
                        hours={"tz": "Europe/Berlin", "mon": "09:00-17:00"})
    assert s.origin_allowed("https://shop.example:8443", "http://umsg:80")
    assert s.origin_allowed("http://umsg:80", "http://umsg:80") and s.origin_allowed(None, "http://umsg")
    assert not s.origin_allowed("https://evil.example", "http://umsg:80")
    assert s.upload_allowed("image/png; charset=binary") and not s.upload_allowed("text/html")
    assert s.hours is not None
    cal = s.hours.calendar()
    assert cal.is_open(datetime(2026, 1, 5, 10, 0, tzinfo=UTC))  # Monday 11:00 in Berlin
    assert not cal.is_open(datetime(2026, 1, 6, 10, 0, tzinfo=UTC))  # Tuesday: closed
    for bad in ({"allowed_origins": ["shop.example"]}, {"upload_types": ["png"]}, {"secret": "short"},
                {"hours": {"tz": "Mars/Olympus"}}, {"hours": {"tz": "UTC", "mon": "9-5"}}, {"colour": "red"}):
        with pytest.raises(ConfigError):
            WebchatChannel.validate_settings({"secret": SECRET, **bad})
    assert "***" in repr(s) and SECRET not in repr(s)


def test_registry_knows_webchat() -> None:
    assert ChannelRegistry(use_entry_points=False).get("webchat") is WebchatChannel

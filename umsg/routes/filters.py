"""The filter kinds of a route, and the sample item they judge.

Every filter answers `check(sample) -> Check` (did it match, and in words
why) and `covers(other)` for a filter of the same kind: True only when every
sample `other` accepts is certainly accepted by this one. The shadowing check
(umsg.routes.shadow) builds on `covers`, so a False there only means "not
proven", never "refuse".
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol

from umsg.routes.clock import Calendar, TimeWindow
from umsg.routes.patterns import Pattern, any_matches, set_covers


@dataclass(frozen=True)
class Sample:
    """What routes look at: the item's facts, its contact's attributes and the time of arrival."""

    channel: str
    sender: str
    recipients: tuple[str, ...]
    at: datetime
    subject: str | None = None
    text: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


class Filter(Protocol):
    key: ClassVar[str]

    def check(self, sample: Sample) -> Check: ...

    def covers(self, other: Filter) -> bool: ...


def _list(items: Sequence[object]) -> str:
    return ", ".join(str(i) for i in items)


@dataclass(frozen=True)
class ChannelFilter:
    key: ClassVar[str] = "channel"
    channels: tuple[str, ...]

    def check(self, sample: Sample) -> Check:
        if sample.channel in self.channels:
            return Check(True, f"channel is {sample.channel!r}")
        want = repr(self.channels[0]) if len(self.channels) == 1 else f"one of {_list(self.channels)}"
        return Check(False, f"channel is {sample.channel!r}, route wants {want}")

    def covers(self, other: Filter) -> bool:
        return isinstance(other, ChannelFilter) and set(other.channels) <= set(self.channels)


@dataclass(frozen=True)
class RecipientFilter:
    """Recipient address, dialled number or SMS short code: any recipient may match."""

    key: ClassVar[str] = "to"
    patterns: tuple[Pattern, ...]

    def check(self, sample: Sample) -> Check:
        hit = next((r for r in sample.recipients if any_matches(self.patterns, r)), None)
        if hit is not None:
            return Check(True, f"recipient {hit!r} matches {_list(self.patterns)}")
        got = _list(sample.recipients) or "(none)"
        return Check(False, f"no recipient matches {_list(self.patterns)} (recipients: {got})")

    def covers(self, other: Filter) -> bool:
        return isinstance(other, RecipientFilter) and set_covers(self.patterns, other.patterns)


@dataclass(frozen=True)
class SenderFilter:
    key: ClassVar[str] = "sender"
    patterns: tuple[Pattern, ...]

    def check(self, sample: Sample) -> Check:
        ok = any_matches(self.patterns, sample.sender)
        verb = "matches" if ok else "does not match"
        return Check(ok, f"sender {sample.sender!r} {verb} {_list(self.patterns)}")

    def covers(self, other: Filter) -> bool:
        return isinstance(other, SenderFilter) and set_covers(self.patterns, other.patterns)


@dataclass(frozen=True)
class TimeFilter:
    key: ClassVar[str] = "time"
    window: TimeWindow

    def check(self, sample: Sample) -> Check:
        ok = self.window.contains(sample.at)
        where = "inside" if ok else "outside"
        return Check(ok, f"{sample.at.isoformat()} is {where} {self.window.describe()}")

    def covers(self, other: Filter) -> bool:
        if not isinstance(other, TimeFilter) or other.window.tz != self.window.tz:
            return False  # different zones drift apart at DST changes: not provable
        return other.window.slots() <= self.window.slots()


@dataclass(frozen=True)
class HoursFilter:
    """Business hours: matches when the calendar's open/closed state equals `open`."""

    key: ClassVar[str] = "hours"
    calendar: Calendar
    open: bool

    def check(self, sample: Sample) -> Check:
        is_open = self.calendar.is_open(sample.at)
        want = "open" if self.open else "closed"
        return Check(is_open == self.open, f"route wants {want}; {self.calendar.why(sample.at)}")

    def covers(self, other: Filter) -> bool:
        return isinstance(other, HoursFilter) and other.calendar == self.calendar and other.open == self.open


# -- contact attributes --------------------------------------------------------------------

_COND = re.compile(r"^\s*([A-Za-z_][\w.-]*)\s*(==|!=|>=|<=|=|>|<|\bin\b)\s*(.+?)\s*$")
_ORDER = {">", ">=", "<", "<="}
_BARE = re.compile(r"^[\w.@+:/-]+$")


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _same(a: object, b: object) -> bool:
    """Equality that keeps `true` apart from `1` (Python's True == 1 is not what an admin means)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return a == b
    return type(a) is type(b) and a == b


def _compare(op: str, a: object, b: object) -> bool:
    if op == "=":
        return _same(a, b)
    if op == "!=":
        return not _same(a, b)
    if op == "in":
        return isinstance(b, tuple) and any(_same(a, v) for v in b)
    comparable = (_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str))
    if not comparable:
        return False
    x: Any = a
    y: Any = b
    return bool({">": x > y, ">=": x >= y, "<": x < y, "<=": x <= y}[op])


@dataclass(frozen=True)
class Condition:
    """`attr op value` on the contact's attributes; a missing attribute never matches."""

    attr: str
    op: str  # = != > >= < <= in
    value: Any  # a JSON scalar, or a tuple of them for `in`

    def __str__(self) -> str:
        shown = json.dumps(list(self.value)) if isinstance(self.value, tuple) else json.dumps(self.value)
        return f"{self.attr} {self.op} {shown}"

    def holds(self, attributes: Mapping[str, Any]) -> bool:
        return self.attr in attributes and _compare(self.op, attributes[self.attr], self.value)

    def implies(self, other: Condition) -> bool:
        """Whenever this condition holds, `other` holds too (only claimed when certain)."""
        if other.attr != self.attr:
            return False
        if self.op == "=":
            return _compare(other.op, self.value, other.value)
        if self.op == "in":
            return all(_compare(other.op, v, other.value) for v in self.value)
        if self.op == "!=":
            return other.op == "!=" and _same(self.value, other.value)
        if other.op not in _ORDER or not (_is_number(self.value) and _is_number(other.value)):
            return False
        mine, theirs = self.value, other.value
        if self.op[0] != other.op[0]:
            return False  # opposite directions never imply each other on an unbounded domain
        if self.op[0] == ">":
            # x > a ⇒ x >= b when a >= b;  x >= a ⇒ x > b when a > b.
            return bool(mine > theirs or (mine == theirs and (self.op == ">" or other.op == ">=")))
        return bool(mine < theirs or (mine == theirs and (self.op == "<" or other.op == "<=")))


def _literal(text: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        if _BARE.match(text):
            return text  # a bare word is a string: `tier = gold`
        raise ValueError(f"{text!r} is not a value: quote a string, e.g. \"gold\"") from None
    if isinstance(value, list):
        if not all(v is None or isinstance(v, str | int | float | bool) for v in value):
            raise ValueError(f"{text!r}: a list may hold only strings, numbers and booleans")
        return tuple(value)
    if isinstance(value, dict):
        raise ValueError(f"{text!r}: compare with a string, number, boolean or a list for 'in'")
    return value


def parse_condition(raw: str) -> Condition:
    if not isinstance(raw, str):
        raise ValueError("a contact condition is a string such as 'vip = true' or 'value >= 1000'")
    m = _COND.match(raw)
    if m is None:
        raise ValueError(f"{raw!r} is not a condition 'attribute op value' (op: = != > >= < <= in)")
    attr, op, value = m.group(1), m.group(2), _literal(m.group(3))
    op = "=" if op == "==" else op
    if op == "in" and not isinstance(value, tuple):
        raise ValueError(f"{raw!r}: 'in' needs a list, e.g. tier in [\"gold\", \"platinum\"]")
    if op != "in" and isinstance(value, tuple):
        raise ValueError(f"{raw!r}: a list is only for 'in'")
    if op in _ORDER and not (_is_number(value) or isinstance(value, str)):
        raise ValueError(f"{raw!r}: {op} compares numbers or strings")
    return Condition(attr, op, value)


@dataclass(frozen=True)
class ContactFilter:
    """Conditions on the contact's attributes; all must hold."""

    key: ClassVar[str] = "contact"
    conditions: tuple[Condition, ...]

    def check(self, sample: Sample) -> Check:
        failed = [c for c in self.conditions if not c.holds(sample.attributes)]
        if not failed:
            return Check(True, f"contact has {_list(self.conditions)}")
        parts = []
        for c in failed:
            have = json.dumps(sample.attributes[c.attr]) if c.attr in sample.attributes else "(missing)"
            parts.append(f"{c} is false ({c.attr} = {have})")
        return Check(False, "; ".join(parts))

    def covers(self, other: Filter) -> bool:
        return isinstance(other, ContactFilter) and all(
            any(mine.implies(theirs) for mine in other.conditions) for theirs in self.conditions)


# -- item facts: language, menu, keywords --------------------------------------------------


def language_tag(value: object) -> str:
    return str(value).strip().lower().replace("_", "-")


@dataclass(frozen=True)
class LanguageFilter:
    """Detected language (meta["language"]); "de" also matches "de-CH"."""

    key: ClassVar[str] = "language"
    tags: tuple[str, ...]

    @staticmethod
    def _within(tag: str, wide: str) -> bool:
        return tag == wide or tag.startswith(wide + "-")

    def check(self, sample: Sample) -> Check:
        raw = sample.meta.get("language")
        if raw is None or not str(raw).strip():
            return Check(False, f"no detected language; route wants {_list(self.tags)}")
        tag = language_tag(raw)
        ok = any(self._within(tag, t) for t in self.tags)
        return Check(ok, f"language {tag!r} {'is' if ok else 'is not'} in {_list(self.tags)}")

    def covers(self, other: Filter) -> bool:
        return isinstance(other, LanguageFilter) and all(
            any(self._within(t, w) for w in self.tags) for t in other.tags)


@dataclass(frozen=True)
class MenuFilter:
    """The caller's menu/DTMF selection (meta["menu"])."""

    key: ClassVar[str] = "menu"
    patterns: tuple[Pattern, ...]

    def check(self, sample: Sample) -> Check:
        raw = sample.meta.get("menu")
        if raw is None or str(raw) == "":
            return Check(False, f"no menu selection; route wants {_list(self.patterns)}")
        ok = any_matches(self.patterns, str(raw))
        return Check(ok, f"menu selection {str(raw)!r} {'matches' if ok else 'does not match'} "
                         f"{_list(self.patterns)}")

    def covers(self, other: Filter) -> bool:
        return isinstance(other, MenuFilter) and set_covers(self.patterns, other.patterns)


def keyword_regex(word: str) -> re.Pattern[str]:
    """Whole-word, case-insensitive; a phrase tolerates any whitespace between its words."""
    body = r"\s+".join(re.escape(w) for w in word.split())
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


@dataclass(frozen=True)
class KeywordFilter:
    """Any of the keywords (or phrases) as whole words in the subject or the text."""

    key: ClassVar[str] = "keywords"
    words: tuple[str, ...]

    def _hit(self, text: str) -> str | None:
        return next((w for w in self.words if keyword_regex(w).search(text)), None)

    def check(self, sample: Sample) -> Check:
        for where, text in (("subject", sample.subject), ("text", sample.text)):
            hit = self._hit(text or "")
            if hit is not None:
                return Check(True, f"{where} contains {hit!r}")
        return Check(False, f"neither subject nor text contains any of {_list(self.words)}")

    def covers(self, other: Filter) -> bool:
        # A text containing the narrower phrase as whole words contains the wider keyword too.
        return isinstance(other, KeywordFilter) and all(self._hit(w) is not None for w in other.words)


def parse_keywords(raw: str | Sequence[str]) -> tuple[str, ...]:
    items = [raw] if isinstance(raw, str) else list(raw)
    if not items:
        raise ValueError("the list of keywords must not be empty")
    out = []
    for item in items:
        if not isinstance(item, str) or not item.split():
            raise ValueError("a keyword must be a non-empty string")
        out.append(" ".join(item.split()))
    return tuple(out)


def parse_names(raw: str | Sequence[str], what: str) -> tuple[str, ...]:
    items = [raw] if isinstance(raw, str) else list(raw)
    if not items or not all(isinstance(i, str) and i.strip() for i in items):
        raise ValueError(f"give one {what} or a non-empty list of them")
    return tuple(i.strip().lower() for i in items)

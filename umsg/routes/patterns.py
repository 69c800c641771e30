"""Patterns for addresses, dialled numbers, short codes and menu choices.

One pattern, as written in TOML or JSON:

- `"sales@acme.test"`: exact (case-insensitive; separators inside numbers are ignored)
- `"sales@*"`, `"+4930*"`: prefix, everything that starts with the text before the `*`
- `"re:^sales(-de)?@acme\\.test$"`: a regular expression that must match the whole value
  (case-insensitive; numbers are matched without spaces or dashes, like every other kind)
- `"+4930100..+4930199"`: an inclusive range of numbers, compared on their digits
  (E.164 without the `+`), so `+4930100123` is not inside `+4930100..+4930199`

A filter holds a list of patterns and matches when any of them does.
`covers` answers "does every value the other pattern matches also match this
one?" and only says yes when that is certain; the shadowing check relies on it
never claiming coverage it cannot prove.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

PatternKind = Literal["exact", "prefix", "regex", "range"]

MAX_PATTERN = 500
_NUMBERISH = re.compile(r"^\+?[\d\s().-]+$")
_SEPARATORS = re.compile(r"[\s().-]")


def normalise(value: str) -> str:
    """Lower case; numbers lose their spacing so `+49 30 100` equals `+4930100`."""
    text = value.strip().lower()
    if _NUMBERISH.match(text):
        return _SEPARATORS.sub("", text)
    return text


def digits(value: str) -> int | None:
    """The number a value spells (a leading `+` and separators ignored), or None if it is not one."""
    text = _SEPARATORS.sub("", value.strip()).removeprefix("+")
    return int(text) if text.isdigit() else None


@dataclass(frozen=True)
class Pattern:
    kind: PatternKind
    text: str  # as written, for messages
    key: str = ""  # normalised exact value or prefix
    regex: re.Pattern[str] | None = None
    low: int = 0
    high: int = 0

    def __str__(self) -> str:
        return self.text

    def matches(self, value: str) -> bool:
        if self.kind == "exact":
            return normalise(value) == self.key
        if self.kind == "prefix":
            return normalise(value).startswith(self.key)
        if self.kind == "regex":
            assert self.regex is not None
            return self.regex.fullmatch(normalise(value)) is not None
        number = digits(value)
        return number is not None and self.low <= number <= self.high

    def covers(self, other: Pattern) -> bool:
        """True only when every value `other` matches is certainly matched by this pattern."""
        if other.kind == "exact":
            # A single value: just try it (a range also needs the value to be a number).
            return self.matches(other.key)
        if self.kind == "prefix" and other.kind == "prefix":
            return other.key.startswith(self.key)
        if self.kind == "regex" and other.kind == "regex":
            return self.text == other.text
        if self.kind == "range" and other.kind == "range":
            return self.low <= other.low and other.high <= self.high
        # Prefix vs regex, regex vs range and the like: not decidable here, so never claimed.
        return False


def parse_pattern(raw: str) -> Pattern:
    """One pattern from its written form; ValueError says what is wrong with it."""
    if not isinstance(raw, str):
        raise ValueError(f"a pattern must be a string, not {type(raw).__name__}")
    text = raw.strip()
    if not text:
        raise ValueError("a pattern must not be empty")
    if len(text) > MAX_PATTERN:
        raise ValueError(f"a pattern must be at most {MAX_PATTERN} characters")
    if text.startswith("re:"):
        source = text[3:]
        try:
            compiled = re.compile(source, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"{text!r} is not a valid regular expression: {exc}") from exc
        return Pattern("regex", text, regex=compiled)
    if ".." in text:
        lo_text, _, hi_text = text.partition("..")
        lo, hi = digits(lo_text), digits(hi_text)
        if lo is None or hi is None:
            raise ValueError(f"{text!r}: both ends of a number range must be numbers, "
                             "e.g. +4930100..+4930199")
        if lo > hi:
            raise ValueError(f"{text!r}: the range starts after it ends")
        return Pattern("range", text, low=lo, high=hi)
    if text.endswith("*"):
        stem = text[:-1]
        if "*" in stem:
            raise ValueError(f"{text!r}: '*' is allowed only at the end (use re: for more)")
        return Pattern("prefix", text, key=normalise(stem))
    if "*" in text:
        raise ValueError(f"{text!r}: '*' is allowed only at the end (use re: for more)")
    return Pattern("exact", text, key=normalise(text))


def parse_patterns(raw: str | Sequence[str]) -> tuple[Pattern, ...]:
    """A pattern or a non-empty list of them (any may match)."""
    items = [raw] if isinstance(raw, str) else list(raw)
    if not items:
        raise ValueError("the list of patterns must not be empty (leave the key out to match anything)")
    return tuple(parse_pattern(item) for item in items)


def any_matches(patterns: Iterable[Pattern], value: str) -> bool:
    return any(p.matches(value) for p in patterns)


def set_covers(wide: Sequence[Pattern], narrow: Sequence[Pattern]) -> bool:
    """Every pattern of `narrow` is covered by one pattern of `wide` (a sound under-approximation)."""
    return all(any(w.covers(n) for w in wide) for n in narrow)

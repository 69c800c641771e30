"""Time windows and business-hours calendars, in an IANA time zone.

Both work on local wall-clock time (zoneinfo), so "08:00-18:00 Europe/Berlin"
stays 08:00-18:00 across a daylight-saving change. Times have minute
resolution; an interval `08:00-18:00` includes 08:00 and excludes 18:00.

- A time window: `{from = "22:00", to = "06:00", days = ["mon", ...], tz = "..."}`. The
  days are the local weekday of the instant being judged; `from` after `to` wraps past
  midnight (22:00-24:00 and 00:00-06:00 of each listed day).
- A calendar: weekly opening hours per weekday (`mon = "08:00-12:00, 13:00-17:00"`,
  a missing or empty day is closed), holidays as local dates (closed all day), a time zone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_MINUTES = 24 * 60
_HHMM = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")

Interval = tuple[int, int]  # minutes since local midnight, [start, end)


def zone(name: str) -> ZoneInfo:
    """The time zone `name`; ValueError for a name the tz database does not know."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as 'Europe/Berlin')") from exc


def parse_hhmm(text: str, *, end: bool = False) -> int:
    m = _HHMM.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"{text!r} is not a time of day HH:MM")
    minutes = int(m.group(1)) * 60 + int(m.group(2))
    if minutes > DAY_MINUTES or (minutes == DAY_MINUTES and not end):
        raise ValueError(f"{text!r}: 24:00 is allowed only as the end of an interval")
    return minutes


def parse_intervals(text: str) -> tuple[Interval, ...]:
    """`"08:00-12:00, 13:00-17:00"` → ((480, 720), (780, 1020)); empty or "closed" → ()."""
    if not isinstance(text, str):
        raise ValueError("opening hours must be a string like '08:00-18:00'")
    if text.strip().lower() in ("", "closed"):
        return ()
    out: list[Interval] = []
    for piece in text.split(","):
        start_text, sep, end_text = piece.partition("-")
        if not sep:
            raise ValueError(f"{piece.strip()!r} is not an interval HH:MM-HH:MM")
        start, stop = parse_hhmm(start_text), parse_hhmm(end_text, end=True)
        if stop <= start:
            raise ValueError(f"{piece.strip()!r}: an opening interval must end after it starts")
        out.append((start, stop))
    out.sort()
    for (_, a_end), (b_start, _) in zip(out, out[1:], strict=False):
        if b_start < a_end:
            raise ValueError(f"{text!r}: the intervals overlap")
    return tuple(out)


def parse_days(names: Sequence[str]) -> frozenset[int]:
    if not names:
        raise ValueError("the list of days must not be empty (leave it out for every day)")
    out = set()
    for name in names:
        key = str(name).strip().lower()[:3]
        if key not in DAYS:
            raise ValueError(f"{name!r} is not a weekday (mon, tue, wed, thu, fri, sat, sun)")
        out.add(DAYS.index(key))
    return frozenset(out)


def _local(at: datetime, tz: str) -> datetime:
    if at.tzinfo is None:
        raise ValueError("routing needs an aware datetime")
    return at.astimezone(ZoneInfo(tz))


def _minute(local: datetime) -> int:
    return local.hour * 60 + local.minute


@dataclass(frozen=True)
class TimeWindow:
    tz: str
    start: int
    end: int
    days: frozenset[int] = frozenset(range(7))

    def contains(self, at: datetime) -> bool:
        local = _local(at, self.tz)
        if local.weekday() not in self.days:
            return False
        m = _minute(local)
        if self.start < self.end:
            return self.start <= m < self.end
        return m >= self.start or m < self.end  # wraps past midnight

    def slots(self) -> frozenset[tuple[int, int]]:
        """Every (weekday, minute) inside the window: small (≤ 10,080) and exact for comparing."""
        minutes = [m for m in range(DAY_MINUTES) if (self.start <= m < self.end if self.start < self.end
                                                      else m >= self.start or m < self.end)]
        return frozenset((d, m) for d in self.days for m in minutes)

    def describe(self) -> str:
        days = ",".join(DAYS[d] for d in sorted(self.days)) if len(self.days) < 7 else "every day"
        return f"{_fmt(self.start)}-{_fmt(self.end)} {days} ({self.tz})"


@dataclass(frozen=True)
class Calendar:
    tz: str
    week: tuple[tuple[Interval, ...], ...]  # seven entries, Monday first
    holidays: frozenset[date] = frozenset()

    def is_open(self, at: datetime) -> bool:
        local = _local(at, self.tz)
        if local.date() in self.holidays:
            return False
        m = _minute(local)
        return any(start <= m < stop for start, stop in self.week[local.weekday()])

    def why(self, at: datetime) -> str:
        local = _local(at, self.tz)
        state = "open" if self.is_open(at) else "closed"
        if local.date() in self.holidays:
            return f"closed: {local.date().isoformat()} is a holiday ({self.tz})"
        hours = ", ".join(f"{_fmt(a)}-{_fmt(b)}" for a, b in self.week[local.weekday()]) or "closed all day"
        return f"{state} at {local:%a %Y-%m-%d %H:%M} {self.tz} (hours that day: {hours})"


def parse_calendar(tz: str, week: Mapping[str, str], holidays: Sequence[date | str]) -> Calendar:
    zone(tz)
    days: list[tuple[Interval, ...]] = []
    for name in DAYS:
        days.append(parse_intervals(week.get(name, "")))
    parsed: set[date] = set()
    for h in holidays:
        try:
            parsed.add(h if isinstance(h, date) else date.fromisoformat(str(h)))
        except ValueError as exc:
            raise ValueError(f"holiday {h!r} is not a date YYYY-MM-DD") from exc
    return Calendar(tz, tuple(days), frozenset(parsed))


def _fmt(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"

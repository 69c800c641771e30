"""Typed settings of channel routes (the `[[routes]]` tables) and of the business hours they use.

Each value is validated by the parser that will later read it (`umsg.routes.clock`,
`filters`, `patterns`, `targets`), so a configuration that loads is one the route table can
build. `umsg.config.Settings` holds a list of `RouteSettings`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from umsg.routes import clock
from umsg.routes.filters import parse_condition, parse_keywords, parse_names
from umsg.routes.patterns import parse_patterns
from umsg.routes.targets import check_template


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _checked(parse: Callable[[Any], Any], value: Any) -> Any:
    """Run a routing parser for validation only; its message becomes the problem's reason."""
    if value is not None:
        try:
            parse(value)
        except ValueError as exc:
            raise PydanticCustomError("route", str(exc)) from exc
    return value


class TimeWindowSettings(_Strict):
    """`{from = "08:00", to = "18:00", days = ["mon", ...], tz = "Europe/Berlin"}` (local time)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    start: str = Field(alias="from")
    end: str = Field(alias="to")
    days: list[str] | None = None
    tz: str = "UTC"

    @field_validator("tz")
    @classmethod
    def _tz(cls, v: str) -> str:
        return str(_checked(clock.zone, v))

    @field_validator("start")
    @classmethod
    def _start(cls, v: str) -> str:
        return str(_checked(clock.parse_hhmm, v))

    @field_validator("end")
    @classmethod
    def _end(cls, v: str) -> str:
        return str(_checked(lambda t: clock.parse_hhmm(t, end=True), v))

    @field_validator("days")
    @classmethod
    def _days(cls, v: list[str] | None) -> list[str] | None:
        return _checked(clock.parse_days, v)  # type: ignore[no-any-return]

    @model_validator(mode="after")
    def _not_empty(self) -> TimeWindowSettings:
        if clock.parse_hhmm(self.start) == clock.parse_hhmm(self.end, end=True):
            raise PydanticCustomError("route", "an empty window: 'from' equals 'to' (leave out 'time' for "
                                               "all day)")
        return self


class CalendarSettings(_Strict):
    """Business hours: intervals per weekday (`"09:00-12:00,13:00-17:00"`) in a time zone, plus holidays."""

    tz: str
    mon: str = ""
    tue: str = ""
    wed: str = ""
    thu: str = ""
    fri: str = ""
    sat: str = ""
    sun: str = ""
    holidays: list[date | str] = Field(default_factory=list)

    @field_validator("tz")
    @classmethod
    def _tz(cls, v: str) -> str:
        return str(_checked(clock.zone, v))

    @field_validator("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    @classmethod
    def _day(cls, v: str) -> str:
        return str(_checked(clock.parse_intervals, v))

    @field_validator("holidays")
    @classmethod
    def _holidays(cls, v: list[date | str]) -> list[date | str]:
        _checked(lambda hs: clock.parse_calendar("UTC", {}, hs), v)
        return v

    def calendar(self) -> clock.Calendar:
        week = {d: getattr(self, d) for d in clock.DAYS}
        return clock.parse_calendar(self.tz, week, list(self.holidays))


class HoursSettings(CalendarSettings):
    """A business-hours calendar, and whether the route wants it `open` (true) or closed (false)."""

    open: bool = True


class PreferredAgentSettings(_Strict):
    """`{rule = "last_agent", expiry_minutes = 1440}` or `{rule = "agent", login = "alice"}`."""

    rule: Literal["last_agent", "agent"]
    login: str | None = Field(default=None, min_length=1, max_length=200)
    expiry_minutes: float = Field(default=30.0, gt=0, le=366 * 24 * 60)

    @model_validator(mode="after")
    def _login(self) -> PreferredAgentSettings:
        if (self.rule == "agent") != (self.login is not None):
            raise PydanticCustomError("route", "rule 'agent' needs a login; 'last_agent' takes none")
        return self


Patterns = str | list[str] | None


class RouteSettings(_Strict):
    """One channel route: filters that must all match, then a target; the first match wins.

    Filters (each optional; a list means any of its entries): `channel` (configured channel
    instances by name, never an adapter type; `api` for messages posted through the API);
    `to` (recipient address, dialled number, short code) and `sender` as patterns (exact, `prefix*`,
    `re:regex`, number range `+4930100..+4930199`); `time` (a daily window); `hours` (a
    business-hours calendar with `open = true|false`); `contact` (attribute conditions such
    as "vip = true", "value >= 1000", all must hold); `language`; `menu` (DTMF selection, as
    patterns); `keywords` (whole words in subject or text). See umsg/routes/ for semantics.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
    # None: the project of the settings (`Settings.project`).
    project: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    description: str | None = None
    channel: Patterns = None
    to: Patterns = None
    sender: Patterns = None
    time: TimeWindowSettings | None = None
    hours: HoursSettings | None = None
    contact: Patterns = None
    language: Patterns = None
    menu: Patterns = None
    keywords: Patterns = None
    action: Literal["enqueue", "auto_reply", "drop", "forward"] = "enqueue"
    # None: "default" for enqueue; for auto_reply/forward, no queue item (answered or handed on).
    queue: str | None = Field(default=None, min_length=1, max_length=100)
    priority: int = Field(default=0, ge=-1000, le=1000)
    sla_minutes: float | None = Field(default=None, gt=0)
    skills: dict[str, Annotated[int, Field(ge=1, le=5)]] = Field(default_factory=dict)
    preferred_agent: PreferredAgentSettings | None = None
    template: str | None = Field(default=None, min_length=1, max_length=10_000)
    reply_subject: str | None = Field(default=None, max_length=500)
    reply_once_per_minutes: float = Field(default=60.0, ge=0)
    forward_to: str | None = Field(default=None, min_length=1, max_length=320)
    forward_channel: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_-]{0,31}$")

    @field_validator("channel", "language")
    @classmethod
    def _names(cls, v: Patterns) -> Patterns:
        return _checked(lambda x: parse_names(x, "name"), v)  # type: ignore[no-any-return]

    @field_validator("to", "sender", "menu")
    @classmethod
    def _patterns(cls, v: Patterns) -> Patterns:
        return _checked(parse_patterns, v)  # type: ignore[no-any-return]

    @field_validator("contact")
    @classmethod
    def _contact(cls, v: Patterns) -> Patterns:
        items = [v] if isinstance(v, str) else v
        if items is not None and not items:
            raise PydanticCustomError("route", "the list of conditions must not be empty")
        for item in items or []:
            _checked(parse_condition, item)
        return v

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, v: Patterns) -> Patterns:
        return _checked(parse_keywords, v)  # type: ignore[no-any-return]

    @field_validator("template", "reply_subject")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        return _checked(check_template, v)  # type: ignore[no-any-return]

    @model_validator(mode="after")
    def _target(self) -> RouteSettings:
        """Target keys must fit the action, so a typo'd action is not silently a queue."""
        a = self.action
        wrong: list[str] = []
        if a != "auto_reply":
            wrong += [k for k in ("template", "reply_subject") if getattr(self, k) is not None]
        if a != "forward":
            wrong += [k for k in ("forward_to", "forward_channel") if getattr(self, k) is not None]
        if a == "drop":
            wrong += [k for k in ("queue", "sla_minutes", "preferred_agent") if getattr(self, k) is not None]
            wrong += ["skills"] if self.skills else []
        if wrong:
            raise PydanticCustomError("route", f"{', '.join(wrong)} cannot be used with action '{a}'")
        if a == "auto_reply" and self.template is None:
            raise PydanticCustomError("route", "action 'auto_reply' needs a template")
        if a == "forward" and self.forward_to is None:
            raise PydanticCustomError("route", "action 'forward' needs forward_to")
        if a in ("auto_reply", "forward") and self.queue is None and (
                self.skills or self.sla_minutes or self.preferred_agent):
            raise PydanticCustomError("route", "skills, sla_minutes and preferred_agent need a queue")
        return self

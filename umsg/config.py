"""Typed configuration: defaults, a TOML file, environment overrides, and validation.

Precedence, lowest first: built-in defaults (the embedded SQLite store in a
local data folder), the TOML file, `UMSG_*` environment variables (nested keys
joined by a double underscore: `UMSG_HTTP__PORT=9000`), command-line flags.
Every problem is reported with its dotted key and a reason.
"""

from __future__ import annotations

import difflib
import os
import tomllib
import typing
from collections.abc import Callable, Mapping
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from umsg.errors import ConfigError
from umsg.router.settings import RouterSettings
from umsg.routing import clock
from umsg.routing.filters import parse_condition, parse_keywords, parse_names
from umsg.routing.patterns import parse_patterns
from umsg.routing.targets import check_template

ENV_PREFIX = "UMSG_"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Strict):
    # Empty means the embedded default: SQLite in WAL mode inside the data folder.
    url: str = ""
    # PostgreSQL only: confine the gateway's tables to this schema.
    schema_name: str | None = Field(default=None, alias="schema")
    pool_size: int = Field(default=10, ge=1, le=200)
    auto_migrate: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and not (v.startswith("sqlite") or v.startswith("postgres")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return v


class HttpSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    public_url: str | None = None


class IngestSettings(_Strict):
    # Group commit: up to this many messages share one transaction.
    batch_max: int = Field(default=64, ge=1, le=10_000)
    # How long the writer waits for more messages before committing a batch.
    batch_wait_ms: float = Field(default=0.0, ge=0, le=1000)
    max_message_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    # Region for phone numbers that arrive without a country code (ISO 3166 alpha-2).
    default_region: str | None = Field(default=None, pattern="^[A-Z]{2}$")
    # Worker processes for conversions (0: one per CPU).
    converter_workers: int = Field(default=0, ge=0, le=64)
    # Bounded hand-off to the writer: callers wait (back-pressure) rather than pile up memory.
    max_pending: int = Field(default=1024, ge=1)


class QueueSettings(_Strict):
    lease_seconds: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=5, ge=1)
    sweep_seconds: float = Field(default=5.0, gt=0)


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

    Filters (each optional; a list means any of its entries): `channel`; `to` (recipient
    address, dialled number, short code) and `sender` as patterns (exact, `prefix*`,
    `re:regex`, number range `+4930100..+4930199`); `time` (a daily window); `hours` (a
    business-hours calendar with `open = true|false`); `contact` (attribute conditions such
    as "vip = true", "value >= 1000", all must hold); `language`; `menu` (DTMF selection, as
    patterns); `keywords` (whole words in subject or text). See umsg/routing/ for semantics.
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


class ChannelSettings(BaseModel):
    """A configured channel instance: its adapter type plus the adapter's own settings."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str
    enabled: bool = True


class Settings(_Strict):
    data_dir: Path = Path("./data")
    instance_id: str | None = None
    project: str = "default"
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    database: DatabaseSettings = DatabaseSettings()
    http: HttpSettings = HttpSettings()
    ingest: IngestSettings = IngestSettings()
    queue: QueueSettings = QueueSettings()
    router: RouterSettings = RouterSettings()
    # Derived parts made on ingest: readable text from HTML, a PDF and a thumbnail for fax
    # TIFFs, an MP3 for recordings. `fax-render` is for outgoing faxes only, never listed here.
    converters: list[str] = Field(
        default_factory=lambda: ["html-to-text", "fax-to-pdf", "fax-thumbnail", "wav-to-mp3"]
    )
    routes: list[RouteSettings] = Field(default_factory=list)
    channels: dict[str, ChannelSettings] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _route_tables(self) -> Settings:
        # Table-wide problems (repeated names, routes that can never match) name a route by
        # its position; ConfigError passes through pydantic untouched and so keeps those keys.
        from umsg.routing.build import table_problems

        problems = table_problems(self.routes, self.project)
        if problems:
            raise ConfigError(problems)
        return self

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite:///{(self.data_dir / 'umsg.db').resolve()}"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    def masked(self) -> dict[str, Any]:
        """The settings as a dict with passwords in URLs and secret-looking keys masked."""
        masked: dict[str, Any] = _mask(self.model_dump(mode="json", by_alias=True))
        return masked


def _mask(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _mask(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, key) for v in value]
    if isinstance(value, str):
        if any(s in key.lower() for s in ("password", "secret", "token", "auth")) and value:
            return "***"
        if "://" in value:
            parts = urlsplit(value)
            if parts.password:
                host = parts.netloc.rsplit("@", 1)[1]
                return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
    return value


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Turn `UMSG_A__B=v` variables into `{"a": {"b": "v"}}` (values parsed as TOML scalars)."""
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "UMSG_CONFIG":
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX):].split("__") if p]
        if not path:
            continue
        node = out
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = _parse_scalar(raw)
    return out


def _parse_scalar(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _model_of(annotation: Any) -> Any:
    """The pydantic model inside `list[M]` or `M | None` (for "did you mean" on nested keys)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _problems(err: ValidationError, data: Mapping[str, Any]) -> list[tuple[str, str]]:
    problems = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        reason = e["msg"]
        if e["type"] == "extra_forbidden":
            parent: Any = data
            for p in e["loc"][:-1]:
                parent = parent.get(p, {}) if isinstance(parent, Mapping) else {}
            model: Any = Settings
            for p in e["loc"][:-1]:
                if isinstance(p, int):
                    continue  # a list position: the element model is unwrapped below
                field = getattr(model, "model_fields", {}).get(p)
                model = _model_of(getattr(field, "annotation", None)) if field else None
            known = list(getattr(model, "model_fields", {}) or {})
            guess = difflib.get_close_matches(str(e["loc"][-1]), known, n=1)
            reason = "unknown key" + (f" (did you mean '{guess[0]}'?)" if guess else "")
        problems.append((key, reason))
    return problems


def load_settings(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build settings from defaults, an optional TOML file, the environment and overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError([("", f"configuration file not found: {path}")]) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([("", f"{path} is not valid TOML: {exc}")]) from exc
    data = _deep_merge(data, env_overrides(os.environ if environ is None else environ))
    if overrides:
        data = _deep_merge(data, overrides)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc, data)) from exc


def check_file(path: Path) -> list[tuple[str, str]]:
    """Validate a configuration file alone (no environment); return (key, reason) problems."""
    try:
        load_settings(path, environ={})
    except ConfigError as exc:
        return exc.problems
    return []

"""Typed configuration: defaults, a TOML file, environment overrides, and validation.

Precedence, lowest first: built-in defaults (the embedded SQLite store in a
local data folder), the TOML file, `UMSG_*` environment variables (nested keys
joined by a double underscore: `UMSG_HTTP__PORT=9000`), command-line flags.
Every problem is reported with its dotted key and a reason.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from umsg.errors import ConfigError
from umsg.router.settings import RouterSettings
from umsg.routes.build import table_problems
from umsg.routes.settings import CalendarSettings as CalendarSettings
from umsg.routes.settings import HoursSettings as HoursSettings
from umsg.routes.settings import RouteSettings as RouteSettings
from umsg.secrets_mask import mask_secrets

ENV_PREFIX = "UMSG_"
# Variables of the prefix that are not settings: the file to read, and crash tests' failpoints.
NOT_SETTINGS = frozenset({"UMSG_CONFIG", "UMSG_FAILPOINTS"})


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
    # Open connections in all (None: a quarter of the process's open-file limit, at most 4096).
    # At the cap the oldest connection with no request in progress is closed to admit a new one.
    max_connections: int | None = Field(default=None, ge=1)
    # Open connections from one client address; behind a reverse proxy every client is the
    # proxy, so raise it there (or let the proxy do the per-client limiting).
    max_connections_per_peer: int = Field(default=256, ge=1)
    # A connection with no request in progress (never sent one, sent only part of its head, or
    # idle between keep-alive requests) is closed after this long.
    idle_timeout_seconds: float = Field(default=30.0, gt=0)
    # Live event feeds (the inbox websocket) one signed-in user may hold at once.
    max_feeds_per_user: int = Field(default=16, ge=1)


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


class AccountSettings(_Strict):
    """Agents' accounts: sign-in throttling, session lifetimes, and who may scrape /metrics."""

    # Sign-in throttling: this many failed attempts within `failure_window_seconds` lock the
    # login (or, with the address limit, the client address) for `lockout_seconds`; attempts
    # while locked are refused with 429 and Retry-After, even with the right password.
    max_failures_per_login: int = Field(default=5, ge=1, le=10_000)
    # Higher than per login: agents of one office often share one address (NAT).
    max_failures_per_address: int = Field(default=50, ge=1, le=1_000_000)
    failure_window_seconds: float = Field(default=900.0, gt=0)
    lockout_seconds: float = Field(default=900.0, gt=0)
    # Inbox sessions: a session token expires after `session_idle_seconds` unless the page
    # refreshes it (POST /api/v1/session/refresh rotates it), and a chain of refreshes ends
    # `session_absolute_seconds` after the password was given.
    session_idle_seconds: float = Field(default=1800.0, gt=0)
    session_absolute_seconds: float = Field(default=12 * 3600.0, gt=0)
    # /metrics: by default it needs `Authorization: Bearer <metrics_token>` or an admin API
    # token; `metrics_public = true` serves it to anyone (only behind a trusted network).
    metrics_token: SecretStr | None = None
    metrics_public: bool = False
    # Password hashes computed at once (each scrypt hash holds 128 MiB while it runs).
    hash_concurrency: int = Field(default=2, ge=1, le=64)


# A channel instance's name is the channel stored on its messages (32 characters) and the
# path of its web routes (`/channels/NAME/`); route filters compare it in lower case.
CHANNEL_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class ChannelSettings(BaseModel):
    """A configured channel instance: its adapter type plus the adapter's own settings.

    The instance's name (the key under `channels`) is the channel: messages, conversations
    and queue items carry it, and replies on it leave through this instance.
    """

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
    accounts: AccountSettings = AccountSettings()
    # Derived parts made on ingest: readable text from HTML, a PDF and a thumbnail for fax
    # TIFFs, an MP3 for recordings. `fax-render` is for outgoing faxes only, never listed here.
    converters: list[str] = Field(
        default_factory=lambda: ["html-to-text", "fax-to-pdf", "fax-thumbnail", "wav-to-mp3"]
    )
    routes: list[RouteSettings] = Field(default_factory=list)
    channels: dict[str, ChannelSettings] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _channel_names(self) -> Settings:
        bad = [n for n in self.channels if not CHANNEL_NAME.match(n)]
        if bad:
            raise ConfigError([(f"channels.{n}", "a channel instance's name is 1-32 lower-case letters, digits, "
                                                 "'-' or '_', starting with a letter") for n in bad])
        return self

    @model_validator(mode="after")
    def _route_tables(self) -> Settings:
        # Table-wide problems (repeated names, routes that can never match) name a route by
        # its position; ConfigError passes through pydantic untouched and so keeps those keys.
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
        """The settings as a dict with secrets masked (umsg.secrets_mask: secret-looking keys and
        everything under them, URL passwords and secret query parameters)."""
        masked: dict[str, Any] = mask_secrets(self.model_dump(mode="json", by_alias=True))
        return masked


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
        if not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS:
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

"""Typed settings of the email channel and its connection-string form."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from channels.base import AdapterSettings
from umsg.errors import ConfigError

_LIST_KEYS = ("addresses",)


class EmailSettings(AdapterSettings):
    # Our mail domain: Message-IDs of outgoing mail and reply+TOKEN@ addresses are in it.
    domain: str = Field(min_length=1, max_length=253)
    # Addresses this channel owns (`support@acme.example`) or whole domains (`@acme.example`);
    # inbound SMTP refuses every other recipient. Empty means just `domain`.
    addresses: list[str] = Field(default_factory=list)
    # Inbound SMTP listener "host:port" (port 0: any free port); None: no listener.
    listen: str | None = None
    max_message_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    max_sessions: int = Field(default=100, ge=1)
    max_recipients: int = Field(default=100, ge=1)
    # Sessions one client address may hold at once (the rest get 421), so that one host cannot
    # take every one of `max_sessions` and keep all other senders' mail refused.
    max_sessions_per_peer: int = Field(default=20, ge=1)
    # Idle time allowed between commands. Commands that move no mail (NOOP, RSET, VRFY, HELP,
    # EXPN) do not renew it, and a session may send at most `max_junk_commands` of them between
    # two accepted messages before it is closed with 421.
    session_timeout_seconds: float = Field(default=300.0, gt=0)
    max_junk_commands: int = Field(default=20, ge=0)
    # Processes that parse mail received over SMTP (0: parse in the event loop's process).
    # Parsing is pure CPU; one worker keeps big messages off the loop's core on a two-core machine.
    parse_workers: int = Field(default=1, ge=0, le=32)
    # Messages up to this size are parsed on the loop all the same. Parse time grows with the
    # structure more than the bytes (base64 bodies are not decoded twice): the corpus's 36 KiB
    # message takes ~2 ms, while under load the round trip to the worker (pickling, a wake-up
    # in each process, the queue behind other big messages) measured tens of milliseconds.
    parse_inline_bytes: int = Field(default=64 * 1024, ge=0)
    # What one parse in a worker may spend (wall clock; CPU in whole seconds). Past it the worker
    # is killed and the mail stored from its headers alone, with its raw original.
    parse_seconds: float = Field(default=60.0, gt=0)
    parse_cpu_seconds: int = Field(default=30, ge=1)
    tls_cert: str | None = None
    tls_key: str | None = None
    # SMTP AUTH users (login -> password); empty: no AUTH offered. AUTH is offered only after
    # STARTTLS, so without tls_cert/tls_key it is never offered (a warning at start says so).
    auth_users: dict[str, SecretStr] = Field(default_factory=dict)
    # Outbound relay: smtp://[user:pass@]host:port (plain/STARTTLS when offered) or smtps://.
    relay: str | None = None
    relay_timeout_seconds: float = Field(default=30.0, gt=0)
    # IMAP mailbox to poll: imap://user:pass@host:port/INBOX or imaps://...
    imap: str | None = None
    imap_idle: bool = True
    imap_poll_seconds: float = Field(default=60.0, gt=0)
    imap_timeout_seconds: float = Field(default=30.0, gt=0)
    imap_batch: int = Field(default=50, ge=1)
    # After the commit, move the message to this folder (it must exist) instead of marking it \Seen.
    imap_move_to: str | None = Field(default=None, min_length=1)
    project: str = "default"

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str) -> str:
        if "@" in v or " " in v or "." not in v:
            raise ValueError("must be a domain name like support.example.com")
        return v.lower()

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for a in v:
            if "@" not in a:
                raise ValueError(f"{a!r} is neither an address nor an @domain")
        return [a.lower().strip() for a in v]

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str | None) -> str | None:
        if v is None:
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError("must be host:port")
        return v

    @field_validator("relay", "imap")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None:
            scheme = urlsplit(v).scheme
            if scheme not in ("smtp", "smtps", "imap", "imaps") or not urlsplit(v).hostname:
                raise ValueError("must be an smtp://, smtps://, imap:// or imaps:// URL with a host")
        return v

    @model_validator(mode="after")
    def _tls_pair(self) -> EmailSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self

    @property
    def owned(self) -> list[str]:
        return self.addresses or [f"@{self.domain}"]

    def owns(self, address: str) -> bool:
        """Whether mail to `address` is ours to accept (never an open relay)."""
        addr = address.strip().strip("<>").lower()
        if "@" not in addr:
            return False
        local, domain = addr.rsplit("@", 1)
        if domain == self.domain and local.split("+", 1)[0] == "reply":
            return True  # reply+TOKEN@ addresses of our own mail
        for owned in self.owned:
            if owned.startswith("@"):
                if domain == owned[1:]:
                    return True
            elif addr == owned or (local.split("+", 1)[0] + "@" + domain) == owned:
                return True
        return False

    @property
    def listen_host(self) -> str:
        return (self.listen or "127.0.0.1:0").rpartition(":")[0].strip("[]")

    @property
    def listen_port(self) -> int:
        return int((self.listen or "127.0.0.1:0").rpartition(":")[2])


def email_url_fields(url: str) -> dict[str, Any]:
    """`email://HOST:PORT?domain=D&addresses=a@d,@d2&relay=smtp://...` -> settings.

    The host and port are the inbound SMTP listener; every query key names a setting
    (`addresses` is comma-separated); `email:///?domain=D` has no listener.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("email", "smtp"):
        raise ConfigError([("url", "expected an email://HOST:PORT?domain=... URL")])
    out: dict[str, Any] = {}
    if parts.hostname:
        try:
            port = parts.port if parts.port is not None else 25
        except ValueError as exc:
            raise ConfigError([("url", f"bad port: {exc}")]) from exc
        out["listen"] = f"{parts.hostname}:{port}"
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        value = unquote(value)
        out[key] = [v for v in value.split(",") if v] if key in _LIST_KEYS else value
    return out

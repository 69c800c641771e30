"""Typed settings of the webhook channel and its connection-string form."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator

from channels.base import AdapterSettings
from umsg.errors import ConfigError

# `webhook+https://` and `webhooks://` mean https; `webhook://` means plain http.
_SCHEMES = {
    "webhook": "http",
    "webhook+http": "http",
    "webhook+https": "https",
    "webhooks": "https",
    "http": "http",
    "https": "https",
}


class WebhookSettings(AdapterSettings):
    callback_url: str
    secret: SecretStr = Field(min_length=1)
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    project: str = "default"

    @field_validator("callback_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return v


def webhook_url_fields(url: str) -> dict[str, Any]:
    """Split a webhook connection string into settings; query keys naming settings are taken out."""
    parts = urlsplit(url)
    scheme = _SCHEMES.get(parts.scheme)
    if scheme is None:
        raise ConfigError([("url", "expected a webhook://, webhook+https:// or https:// URL")])
    out: dict[str, Any] = {}
    kept = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in WebhookSettings.model_fields and key != "callback_url":
            out[key] = value
        else:
            kept.append((key, value))
    out["callback_url"] = urlunsplit((scheme, parts.netloc, parts.path, urlencode(kept), parts.fragment))
    return out

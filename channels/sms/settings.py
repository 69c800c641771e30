"""Typed settings of the SMS channels and their connection strings.

SMPP: `smpp://system_id:password@host:2775?connections=2&window=10&rate_limit=50&source_addr=ACME`
(query keys are setting names; lists such as `opt_out_keywords` are comma-separated).
Twilio-compatible: `twilio://ACCOUNT_SID:AUTH_TOKEN@api.twilio.com?from_number=%2B15005550006`
(`base_url` overrides where the REST API lives; tests point it at a local server).
Passwords and tokens are `SecretStr` and masked wherever settings are shown.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator

from channels.base import AdapterSettings

DEFAULT_OPT_OUT = ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "退订")
DEFAULT_OPT_IN = ("START", "UNSTOP")


def _listify(value: Any) -> Any:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class SmsCommon(AdapterSettings):
    """What both SMS transports share: identity handling, opt-out, where messages go."""

    project: str = "default"
    default_region: str | None = None  # for national numbers, e.g. "GB"
    opt_out_keywords: list[str] = Field(default_factory=lambda: list(DEFAULT_OPT_OUT))
    opt_in_keywords: list[str] = Field(default_factory=lambda: list(DEFAULT_OPT_IN))
    max_segments: int = Field(10, ge=1, le=255)

    _split_lists = field_validator("opt_out_keywords", "opt_in_keywords", mode="before")(_listify)


class SmppSettings(SmsCommon):
    host: str
    port: int = Field(2775, ge=1, le=65535)
    system_id: str = Field(max_length=15)
    password: SecretStr = SecretStr("")
    system_type: str = ""
    connections: int = Field(1, ge=1, le=32)
    window: int = Field(10, ge=1, le=1000)
    rate_limit: float | None = Field(None, gt=0)  # submit_sm per second per connection
    enquire_link_seconds: float = Field(30.0, gt=0)
    response_timeout_seconds: float = Field(10.0, gt=0)
    connect_timeout_seconds: float = Field(10.0, gt=0)
    reconnect_min_seconds: float = Field(0.5, gt=0)
    reconnect_max_seconds: float = Field(30.0, gt=0)
    throttle_backoff_seconds: float = Field(0.2, gt=0)
    throttle_backoff_max_seconds: float = Field(10.0, gt=0)
    # How long `send` keeps retrying one part (throttling, reconnects) before the dispatcher retries.
    send_timeout_seconds: float = Field(60.0, gt=0)
    source_addr: str = ""
    source_ton: int = Field(1, ge=0, le=6)
    source_npi: int = Field(1, ge=0, le=18)
    dest_ton: int = Field(1, ge=0, le=6)
    dest_npi: int = Field(1, ge=0, le=18)
    registered_delivery: bool = True
    concat: Literal["udh8", "udh16", "sar", "payload"] = "udh8"
    reassembly_timeout_seconds: float = Field(120.0, gt=0)
    # Identical single-part texts from one number within this window are one message (SMSC retries).
    dedupe_window_seconds: int = Field(600, ge=1)
    # Vendor TLV carrying the SMSC's own id of an MO message, when it sends one (best dedupe key).
    mo_id_tlv: int | None = None
    max_inflight_mo: int = Field(64, ge=1)


class TwilioSettings(SmsCommon):
    account_sid: str
    auth_token: SecretStr
    from_number: str = ""
    messaging_service_sid: str | None = None
    base_url: str = "https://api.twilio.com"
    # The URL the provider calls us at, as it signs it (behind a proxy it differs from what we see).
    public_url: str | None = None
    status_callback: bool = True
    timeout_seconds: float = Field(15.0, gt=0)
    retries: int = Field(3, ge=0, le=10)
    retry_backoff_seconds: float = Field(0.5, ge=0)
    # Largest inbound media item fetched (Twilio's own MMS limit is 5 MB per message).
    media_max_bytes: int = Field(10 * 1024 * 1024, ge=1)

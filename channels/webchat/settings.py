"""Typed settings of the web chat channel."""

from __future__ import annotations

import fnmatch
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from channels.base import AdapterSettings
from umsg.config import CalendarSettings


class ChatLimits(BaseModel):
    """Abuse limits (`[channels.NAME.limits]`), per process; see channels/webchat/limits.py.
    A rate `N` lets N through at once and N more per window (a minute or an hour)."""

    model_config = ConfigDict(extra="forbid")
    # Chat lines (also prechat, leave_message, rate: each one writes) per visitor / client address.
    messages_per_minute: int = Field(default=20, ge=1, le=10_000)
    messages_per_minute_per_address: int = Field(default=60, ge=1, le=100_000)
    uploads_per_hour: int = Field(default=20, ge=1, le=10_000)
    uploads_per_hour_per_address: int = Field(default=60, ge=1, le=100_000)
    # Mails (confirmation links and transcripts) per visitor / client address / recipient address.
    transcripts_per_hour: int = Field(default=3, ge=0, le=1000)
    transcripts_per_hour_per_address: int = Field(default=5, ge=0, le=10_000)
    transcripts_per_hour_per_recipient: int = Field(default=2, ge=0, le=1000)
    # How long a transcript confirmation link stays valid.
    confirm_link_hours: float = Field(default=24.0, gt=0, le=24 * 30)
    # New sockets per client address and minute, and open at once.
    connects_per_minute_per_address: int = Field(default=60, ge=1, le=100_000)
    sockets_per_address: int = Field(default=20, ge=1, le=100_000)
    # A socket that sends no frame for this long is closed (the widget reconnects when used).
    idle_timeout_seconds: float = Field(default=900.0, gt=0, le=86_400)


class WebchatSettings(AdapterSettings):
    # Signs visitor tokens (HMAC-SHA256): without it nobody can claim another visitor's history.
    secret: SecretStr = Field(min_length=16)
    # Pages allowed to open the chat socket and upload (scheme://host[:port]); "*" allows any.
    # The server's own origin is always allowed.
    allowed_origins: list[str] = Field(default_factory=list)
    project: str = "default"
    max_text_chars: int = Field(default=4000, ge=1, le=100_000)
    max_upload_bytes: int = Field(default=5 * 1024 * 1024, ge=1)
    # Media types a visitor may upload; a trailing "/*" matches a whole family.
    upload_types: list[str] = Field(
        default_factory=lambda: ["image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf",
                                 "text/plain"])
    # Staffed hours; None: always. Outside them the widget offers "leave a message".
    hours: CalendarSettings | None = None
    # Also offline when no agent of the project is in state "available".
    offline_when_no_agent: bool = True
    prechat_form: bool = True
    transcript: bool = True
    rating: bool = True
    # The email instance that carries offline messages' follow-ups and transcripts; None: the
    # one configured email instance (several: name one; none: the conversation stays on the chat).
    email_channel: str | None = Field(default=None, min_length=1, max_length=32)
    title: str = Field(default="Chat with us", max_length=100)
    # How many earlier messages a (re)connecting visitor gets back.
    history_limit: int = Field(default=200, ge=0, le=2000)
    limits: ChatLimits = Field(default_factory=ChatLimits)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        out = []
        for o in v:
            if o == "*":
                out.append(o)
                continue
            parts = urlsplit(o)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
                raise ValueError(f"{o!r} is not an origin like https://www.example.com")
            out.append(f"{parts.scheme}://{parts.netloc}".lower())
        return out

    @field_validator("upload_types")
    @classmethod
    def _types(cls, v: list[str]) -> list[str]:
        for t in v:
            if t.count("/") != 1 or " " in t:
                raise ValueError(f"{t!r} is not a media type like image/png or image/*")
        return [t.lower() for t in v]

    def origin_allowed(self, origin: str | None, own: str) -> bool:
        """May a page of `origin` use the chat? Requests without Origin (not browsers) may."""
        if origin is None:
            return True
        o = origin.lower().rstrip("/")
        return o == own.lower() or "*" in self.allowed_origins or o in self.allowed_origins

    def upload_allowed(self, media_type: str) -> bool:
        mt = media_type.split(";", 1)[0].strip().lower()
        return any(fnmatch.fnmatchcase(mt, pattern) for pattern in self.upload_types)

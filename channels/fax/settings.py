"""Typed settings of the fax channel: the SIP front door, its fax numbers and sending."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from channels.base import AdapterSettings
from channels.telephony.settings import SipTcpSettings


class FaxNumberSettings(BaseModel):
    """One fax number, keyed by the dialled number (Request-URI user) in `numbers`; `*` catches all."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    owner_email: str | None = None  # fax-to-email: the PDF and transfer details go here
    project: str | None = None
    ident: str | None = None  # our station id (CSI); defaults to the number
    # Ask the caller to switch to T.38 by re-INVITE after answering on G.711.
    request_t38: bool = False
    # False: refuse T.38 (488 to a T.38 INVITE or re-INVITE), fax over G.711 only.
    t38: bool = True
    # Send 180 Ringing before answering. Fax machines answer at once, and some callers
    # (the shared sipp fax scenarios) accept only an optional 100 before the 200.
    ringing: bool = False
    email_subject: str = "Fax from {sender} ({pages} page(s), {result})"
    email_template: str | None = None  # None: channels.fax.notify.DEFAULT_TEMPLATE


class FaxSendSettings(BaseModel):
    """Sending faxes: the SIP trunk, how to call through it and when to try again."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The SIP URI a fax to `{number}` is sent to, e.g. "sip:{number}@trunk.example:5060;transport=tcp".
    trunk: str
    username: str | None = None  # digest credentials, when the trunk challenges
    password: str | None = None
    ident: str = ""  # our station id (TSI) on sent faxes
    caller: str | None = None  # the From user (our number); defaults to `ident` or "umsg"
    # "invite": offer T.38 in the INVITE, and call again on G.711 when the trunk answers 488;
    # "reinvite": call on G.711, then ask for T.38 (a 488 keeps G.711); "off": G.711 only.
    t38: Literal["invite", "reinvite", "off"] = "invite"
    resolution: Literal["fine", "normal"] = "fine"
    paper: Literal["a4", "letter"] = "a4"
    cover_page: bool = False  # always add a cover page; `meta`/flags `fax_cover` asks per message
    ring_seconds: float = Field(default=60.0, gt=0)
    # Seconds to wait before each retry after busy, no answer, an unreachable trunk or a failed
    # transfer; the last entry repeats until `max_attempts` calls were made.
    retry_seconds: list[float] = Field(default_factory=lambda: [60.0, 300.0, 900.0])
    max_attempts: int = Field(default=4, ge=1)
    max_concurrent: int = Field(default=4, ge=1)  # calls placed at once; more jobs wait their turn

    @field_validator("trunk")
    @classmethod
    def _has_number(cls, value: str) -> str:
        if "{number}" not in value:
            raise ValueError("the trunk URI must contain {number}, e.g. sip:{number}@trunk.example:5060")
        return value

    @field_validator("retry_seconds")
    @classmethod
    def _non_negative(cls, value: list[float]) -> list[float]:
        if any(v < 0 for v in value):
            raise ValueError("retry delays cannot be negative")
        return value


class FaxSettings(AdapterSettings):
    host: str = "127.0.0.1"
    port: int = Field(5060, ge=0, le=65535)  # UDP and TCP; 0 picks a free port
    tcp: bool = True
    sip_tcp: SipTcpSettings = SipTcpSettings()  # bounds of accepted SIP-over-TCP connections
    max_calls: int = Field(30, ge=1)
    public_address: str | None = None
    default_region: str | None = None
    numbers: dict[str, FaxNumberSettings] = Field(default_factory=dict)
    send: FaxSendSettings | None = None  # None: this instance only receives
    project: str | None = None
    # The instance (of type email) that mails owners their faxes; None: the one configured
    # email instance.
    notify_channel: str | None = None
    ecm: bool = True
    # A fax call ends on T.30 phase E; then the caller has this long to hang up before we do.
    hangup_after_seconds: float = Field(10.0, gt=0)
    # Backstop for a call that never reaches phase E.
    max_call_seconds: float = Field(1800.0, gt=0)
    # With `request_t38`, how long after answering we send the re-INVITE.
    t38_request_delay_seconds: float = Field(0.5, ge=0)

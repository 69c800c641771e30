"""Typed settings of the voicemail channel: the SIP front door and its mailboxes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from channels.base import AdapterSettings
from channels.telephony.settings import SipTcpSettings


class MailboxSettings(BaseModel):
    """One mailbox, keyed by the dialled number (the Request-URI user) in `mailboxes`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    greeting: str | None = None  # WAV file (any rate, mono); None: the shipped default greeting
    owner_email: str | None = None
    max_seconds: float = Field(180.0, gt=0)
    min_seconds: float = Field(2.0, ge=0)  # shorter recordings are missed calls
    silence_seconds: float = Field(6.0, gt=0)  # this much silence ends the recording
    beep: bool = True
    project: str | None = None
    # With the channel's `fax_channel`: the fax number (of that channel) that receives a fax
    # machine calling this mailbox; None: the dialled number itself (or the fax channel's `*`).
    fax_number: str | None = None
    email_subject: str = "Voicemail from {caller} ({duration} s)"
    email_template: str | None = None  # None: channels.voicemail.notify.DEFAULT_TEMPLATE


class VoicemailSettings(AdapterSettings):
    host: str = "127.0.0.1"
    port: int = Field(5060, ge=0, le=65535)  # UDP and TCP; 0 picks a free port
    tcp: bool = True
    sip_tcp: SipTcpSettings = SipTcpSettings()  # bounds of accepted SIP-over-TCP connections
    max_calls: int = Field(20, ge=1)
    public_address: str | None = None
    default_region: str | None = None  # for national caller numbers, e.g. "DE"
    mailboxes: dict[str, MailboxSettings] = Field(default_factory=dict)
    project: str | None = None
    # The instance (of type email) that mails owners their voicemails; None: the one
    # configured email instance.
    notify_channel: str | None = None
    # The fax channel instance a fax machine (CNG tone heard) is handed to; None: no hand-over.
    fax_channel: str | None = None
    # Samples above this amplitude count as sound (silence detection and trimming).
    silence_threshold: int = Field(400, ge=1, le=32767)

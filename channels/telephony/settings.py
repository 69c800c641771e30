"""Settings shared by the SIP channels (voicemail, fax): the bounds of accepted SIP-over-TCP connections."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from channels.telephony.transport import TcpLimits

_DEFAULT = TcpLimits()


class SipTcpSettings(BaseModel):
    """`[channels.NAME.sip_tcp]`: caps and time-outs of accepted SIP-over-TCP connections."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_connections: int = Field(default=_DEFAULT.max_connections, ge=1)
    max_per_peer: int = Field(default=_DEFAULT.max_per_peer, ge=1)
    first_message_seconds: float = Field(default=_DEFAULT.first_message_seconds, gt=0)
    message_seconds: float = Field(default=_DEFAULT.message_seconds, gt=0)
    # Longer than any call: requests inside a call travel on its connection.
    idle_seconds: float = Field(default=_DEFAULT.idle_seconds, gt=0)

    def limits(self) -> TcpLimits:
        return TcpLimits(self.max_connections, self.max_per_peer, self.first_message_seconds,
                         self.message_seconds, self.idle_seconds)

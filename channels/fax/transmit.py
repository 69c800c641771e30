"""Sending one fax on one outgoing call: dial through the trunk, run T.30 as the caller, hang up.

T.38 first (per `FaxSendSettings.t38`): with "invite" the INVITE offers `m=image udptl t38`,
and a 488 (the trunk or the far machine has no T.38) makes us call again at once on G.711;
with "reinvite" the call starts on G.711 and we ask for T.38 (a 488 keeps G.711). The peer
may also re-INVITE to T.38 on its own, which is accepted. Dial failures (`uac.DialError`:
busy, no answer, unreachable, refused) propagate to the job runner, which decides on retries.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from channels.fax.engine import Direction, FaxOutcome
from channels.fax.media import FaxLeg, LegOptions
from channels.fax.settings import FaxSendSettings
from channels.telephony.call import Call
from channels.telephony.spandsp import SpanDsp
from channels.telephony.uac import DialError, SipClient

log = logging.getLogger(__name__)

NOT_ACCEPTABLE = 488
# After phase E the sender keeps the line this long, so the DCN reaches the receiver.
DRAIN_SECONDS = 0.5


@dataclass(frozen=True)
class Transmission:
    """What one answered call achieved: the T.30 outcome, how T.38 went, the SIP Call-ID."""

    outcome: FaxOutcome
    t38: str  # "invite" | "peer-reinvite" | "our-reinvite" | "refused" | "none"
    fallback: bool  # the T.38 INVITE was refused and the fax went on a second call over G.711
    call_id: str


def target_for(send: FaxSendSettings, number: str) -> str:
    """The trunk URI for `number` (spaces and dashes dropped, a leading + kept)."""
    cleaned = "".join(ch for ch in number if ch.isdigit() or ch == "+")
    return send.trunk.replace("{number}", cleaned or number)


async def _dial(client: SipClient, send: FaxSendSettings, target: str) -> tuple[Call, bool]:
    """An answered call, T.38 first when configured: (call, fell back to G.711)."""
    if send.t38 == "invite":
        try:
            return await client.call(target, t38=True, ring_seconds=send.ring_seconds), False
        except DialError as exc:
            if exc.status != NOT_ACCEPTABLE:
                raise
            log.info("T.38 INVITE to %s refused (488); calling again on G.711", target)
    return await client.call(target, t38=False, ring_seconds=send.ring_seconds), send.t38 == "invite"


async def transmit(client: SipClient, dsp: SpanDsp, send: FaxSendSettings, number: str, tiff: Path, *,
                   ecm: bool = True, max_seconds: float = 1800.0, request_delay: float = 0.5) -> Transmission:
    """Send `tiff` to `number`; raises `DialError` when no call could be established."""
    call, fallback = await _dial(client, send, target_for(send, number))
    options = LegOptions(Direction.SEND, send.ident, ecm=ecm, allow_t38=send.t38 != "off",
                         request_t38=send.t38 == "reinvite", request_delay=request_delay,
                         max_seconds=max_seconds, paced=True, drain_seconds=DRAIN_SECONDS)
    leg = FaxLeg(dsp, call, tiff, options)
    try:
        outcome = await leg.run()
    finally:
        # Phase E: the sender hangs up (T.30's DCN already told the receiver we are done).
        with contextlib.suppress(Exception):
            await call.hangup()
    return Transmission(outcome, leg.t38, fallback, call.call_id)

"""Receiving one fax on one call: answer, run T.30 (`media.FaxLeg`), hand the result over.

The call starts on whatever the INVITE offered: T.38 (`m=image udptl t38`) is answered as
T.38 (unless the number has `t38 = false`: then a T.38-only offer is refused 488), audio as
G.711; the leg switches to T.38 when the peer re-INVITEs or the number asks (`request_t38`).
The result is handed to `deliver` while the call is still up, so the BYE is answered only
after the fax is stored. After phase E the caller has `hangup_after_seconds` to hang up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from channels.fax.engine import Direction, FaxOutcome
from channels.fax.media import FaxLeg, LegOptions
from channels.fax.settings import FaxNumberSettings, FaxSettings
from channels.telephony.call import Call, CallError
from channels.telephony.spandsp import SpanDsp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reception:
    """What one call delivered: the outcome, the TIFF (None without pages) and how T.38 went."""

    number: str
    started_at: datetime
    outcome: FaxOutcome
    tiff: bytes | None
    t38: str  # "invite" | "peer-reinvite" | "our-reinvite" | "refused" | "none"
    udptl: dict[str, int]


Deliver = Callable[[Call, Reception], Awaitable[None]]


class FaxReceiveApp:
    """The CallApp of one fax number."""

    def __init__(self, number: str, box: FaxNumberSettings, settings: FaxSettings, dsp: SpanDsp,
                 deliver: Deliver) -> None:
        self.number = number
        self.box = box
        self.settings = settings
        self.dsp = dsp
        self.deliver = deliver

    def options(self) -> LegOptions:
        box, s = self.box, self.settings
        return LegOptions(Direction.RECEIVE, box.ident or self.number, ecm=s.ecm, allow_t38=box.t38,
                          request_t38=box.request_t38 and box.t38, request_delay=s.t38_request_delay_seconds,
                          max_seconds=s.max_call_seconds)

    async def run(self, call: Call) -> None:
        started_at = datetime.now(UTC)
        with tempfile.TemporaryDirectory(prefix="umsg-fax-rx-") as tmp:
            tiff_path = Path(tmp) / "fax.tif"
            leg = FaxLeg(self.dsp, call, tiff_path, self.options())
            try:
                outcome = await leg.run()
            except CallError as exc:
                log.info("fax call %s not taken: %s", call.call_id, exc)  # e.g. 488 to T.38 we refuse
                return
            tiff = tiff_path.read_bytes() if outcome.pages > 0 and tiff_path.is_file() else None
        result = Reception(self.number, started_at, outcome, tiff, leg.t38, dict(vars(leg.decoder.stats)))
        await self.deliver(call, result)
        if leg.reached_phase_e and not call.ended.is_set():
            # Phase E: the caller normally hangs up now; the server hangs up if it does not.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.ended.wait(), self.settings.hangup_after_seconds)

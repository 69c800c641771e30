"""The media side of one fax call, either direction: T.30 over G.711, or T.38 over UDPTL.

A `FaxLeg` runs one SpanDSP terminal (receiving into, or sending from, a TIFF) on an answered
`Call`. It starts on whatever the call negotiated: T.38 when the answer (or the offer we
answered) is `m=image udptl t38`, G.711 otherwise. On G.711 the peer may re-INVITE to T.38
(accepted when `allow_t38`: the audio T.30 session is dropped and a T.38 one starts, as fax
gateways do), or we ask ourselves after `request_delay` (`request_t38`); a 488 keeps G.711.
The leg ends on T.30 phase E, when the call ends (pages so far kept) or at `max_seconds`.

Time: a receiving leg answers every received audio sample with one sent (the modem's two
sides share one clock; the caller paces), with silence standing in when the peer sends
nothing. A calling leg (`paced`) is the clock itself: it sends one frame every 20 ms of real
time and feeds whatever arrived. T.38 terminals are ticked with the samples actually elapsed,
so T.30 timers run in real time either way.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from channels.fax.engine import SAMPLES_PER_FRAME, Direction, FaxOutcome, FaxSession, Transport
from channels.telephony import sdp
from channels.telephony.call import Call, CallError, Datagrams
from channels.telephony.spandsp import SpanDsp
from channels.telephony.udptl import UdptlDecoder, UdptlEncoder, UdptlError

log = logging.getLogger(__name__)

FRAME_SECONDS = SAMPLES_PER_FRAME / 8000
# No audio for this long counts as a silent frame (RTP may pause; T.30 timers must not).
SILENT_PEER_SECONDS = 3 * FRAME_SECONDS
SILENCE = bytes(2 * SAMPLES_PER_FRAME)


@dataclass(frozen=True)
class LegOptions:
    """How one leg behaves; the adapter fills it from the number's or the trunk's settings."""

    direction: Direction
    ident: str
    ecm: bool = True
    allow_t38: bool = True
    request_t38: bool = False
    request_delay: float = 0.5
    max_seconds: float = 1800.0
    paced: bool = False  # the calling side keeps the audio clock
    # Keep the line running this long after phase E, so T.30's last frames (DCN) leave.
    drain_seconds: float = 0.0


class FaxLeg:
    """One call's fax media, switching from audio to T.38 at most once."""

    def __init__(self, dsp: SpanDsp, call: Call, path: Path, options: LegOptions) -> None:
        self.dsp = dsp
        self.call = call
        self.path = path
        self.options = options
        self.t38 = "none"  # "invite" | "peer-reinvite" | "our-reinvite" | "refused" | "none"
        self.decoder = UdptlDecoder()
        self.reached_phase_e = False
        self._switch: asyncio.Future[Datagrams] | None = None
        self._deadline = 0.0
        self._finished_at: float | None = None

    def _over(self, session: FaxSession) -> bool:
        """Phase E was reached (and drained), or the backstop passed."""
        now = asyncio.get_running_loop().time()
        if now >= self._deadline:
            return True
        if not session.finished:
            return False
        if self._finished_at is None:
            self._finished_at = now
        return now - self._finished_at >= self.options.drain_seconds

    def _session(self, transport: Transport, datagrams: Datagrams | None = None) -> FaxSession:
        send_ifp = None
        if datagrams is not None:
            encoder = UdptlEncoder(redundancy=3)
            send = datagrams.send

            def send_ifp(ifp: bytes, _count: int) -> None:
                send(encoder.encode(ifp))
        o = self.options
        return FaxSession(self.dsp, transport=transport, direction=o.direction, path=self.path, ident=o.ident,
                          ecm=o.ecm, calling=o.paced, send_ifp=send_ifp)

    async def run(self) -> FaxOutcome:
        """Answer if needed (incoming), then run T.30 until phase E or the call ends."""
        call = self.call
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self.options.max_seconds
        if not call.answered and call.offered_t38() is not None and self.options.allow_t38:
            self.t38 = "invite"
            return await self._run_t38(await call.answer_t38())
        if call.answered and call.outgoing and call.audio_choice is None and call.offered_t38() is not None:
            self.t38 = "invite"  # the peer answered our T.38 INVITE with T.38
            return await self._run_t38(call.datagrams())
        if not call.answered:
            await call.answer()  # a T.38-only offer we may not take is refused 488 here
        self._switch = loop.create_future()
        call.on_offer = self._peer_offer
        asker = asyncio.create_task(self._ask_for_t38()) if self.options.request_t38 else None
        try:
            return await self._run_audio()
        finally:
            if asker is not None:
                asker.cancel()

    # -- switching to T.38 -------------------------------------------------------------------

    def _switch_to(self, datagrams: Datagrams, how: str) -> None:
        if self._switch is not None and not self._switch.done():
            self.t38 = how
            self._switch.set_result(datagrams)

    async def _peer_offer(self, offer: sdp.SessionDescription) -> sdp.SessionDescription | None:
        media = sdp.t38_offered(offer)
        if not self.options.allow_t38:
            self.t38 = "refused"
            return None  # the call layer answers 488: the peer stays on G.711
        if media is None or self.call.rtp is None or self._switch is None or self._switch.done():
            return None
        answer = sdp.image_description(self.call.local_host, self.call.rtp.local_port, sdp.new_session_id(),
                                       attributes=tuple(media.attributes) or sdp.T38_DEFAULT_ATTRIBUTES)
        datagrams = self.call.datagrams()
        datagrams.point_to(offer.address_for(media), media.port)
        self._switch_to(datagrams, "peer-reinvite")
        return answer

    async def _ask_for_t38(self) -> None:
        call = self.call
        await asyncio.sleep(self.options.request_delay)  # let the line settle: T.30 has not begun yet
        if call.rtp is None or call.ended.is_set():
            return
        offer = sdp.image_description(call.local_host, call.rtp.local_port, sdp.new_session_id(), version=1)
        try:
            status, answer = await call.reinvite(offer)
        except (CallError, TimeoutError) as exc:
            log.info("T.38 re-INVITE on call %s failed (%s); staying on G.711", call.call_id, exc)
            self.t38 = "refused"
            return
        media = sdp.t38_offered(answer) if answer is not None else None
        if status >= 300 or media is None or answer is None:
            log.info("T.38 re-INVITE on call %s answered %s; staying on G.711", call.call_id, status)
            self.t38 = "refused"
            return
        datagrams = call.datagrams()
        datagrams.point_to(answer.address_for(media), media.port)
        self._switch_to(datagrams, "our-reinvite")

    # -- media loops -------------------------------------------------------------------------

    async def _run_audio(self) -> FaxOutcome:
        assert self.call.rtp is not None and self._switch is not None
        session = self._session(Transport.AUDIO)
        try:
            loop = self._paced_audio if self.options.paced else self._answering_audio
            switched = await loop(session)
        finally:
            self.reached_phase_e = session.finished
            outcome = session.close()
        if switched is not None:
            # T.30 restarts on T.38; what the audio session began receiving is dropped.
            if self.options.direction is Direction.RECEIVE:
                self.path.unlink(missing_ok=True)
            return await self._run_t38(switched)
        return outcome

    async def _answering_audio(self, session: FaxSession) -> Datagrams | None:
        call = self.call
        assert self._switch is not None
        owed = 0  # samples received but not yet answered with as many sent
        while not self._over(session):
            if self._switch.done():
                return self._switch.result()
            pcm = await call.read_audio(SILENT_PEER_SECONDS)
            if pcm is None:
                if call.ended.is_set():
                    break
                pcm = SILENCE  # the peer sends nothing: it is silence
            # T.30 turns the line around on sample counts, so every received sample is matched
            # by one sent, whatever the loop's own timing.
            session.rx_audio(pcm)
            owed += len(pcm) // 2
            while owed >= SAMPLES_PER_FRAME and call.rtp is not None:
                call.rtp.send_frame(session.tx_audio())
                owed -= SAMPLES_PER_FRAME
        return None

    async def _paced_audio(self, session: FaxSession) -> Datagrams | None:
        call = self.call
        rtp = call.rtp
        assert rtp is not None and self._switch is not None
        loop = asyncio.get_running_loop()
        start = loop.time()
        frames = 0
        quiet = 0  # ticks in a row without received audio
        while not self._over(session) and not call.ended.is_set():
            if self._switch.done():
                return self._switch.result()
            rtp.send_frame(session.tx_audio())
            got = False
            while not rtp.audio.empty():
                session.rx_audio(rtp.audio.get_nowait())
                got = True
            quiet = 0 if got else quiet + 1
            if quiet * FRAME_SECONDS >= SILENT_PEER_SECONDS:
                session.rx_audio(SILENCE)  # keep T.30's timers running through a silent peer
            frames += 1
            # An absolute schedule: a slow iteration does not slow the line's clock.
            delay = start + frames * FRAME_SECONDS - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        return None

    async def _run_t38(self, datagrams: Datagrams) -> FaxOutcome:
        call = self.call
        loop = asyncio.get_running_loop()
        session = self._session(Transport.T38, datagrams)
        last = loop.time()
        try:
            while not self._over(session) and not call.ended.is_set():
                data = await datagrams.receive(FRAME_SECONDS)
                if data is not None:
                    try:
                        for seq, ifp in self.decoder.feed(data):
                            session.rx_ifp(seq, ifp)
                    except UdptlError:
                        pass  # counted by the decoder; a garbage datagram is a lost packet
                samples = int((loop.time() - last) * 8000)
                if samples >= SAMPLES_PER_FRAME:
                    session.tick(samples)
                    last += samples / 8000
        finally:
            self.reached_phase_e = session.finished
            outcome = session.close()
        return outcome

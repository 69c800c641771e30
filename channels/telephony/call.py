"""The call API that applications (voicemail, fax) see: one `Call` per SIP dialog.

A `CallApp` is anything with `async def run(call)`. The SIP server (`uas.SipServer`) creates the
`Call` when an INVITE for a configured number arrives, has already sent 100 and 180, and runs
the app. The app decides:

- `await call.answer()` answers with G.711 audio (the 200 OK is retransmitted until the ACK);
  if the INVITE itself offered T.38 (`call.offered_t38()` is not None), `await call.answer_t38()`
  answers with `m=image <port> udptl t38` instead. Returning without answering rejects (480).
- Audio: `await call.read_audio(wait_seconds)` gives 16-bit mono PCM at 8 kHz decoded from G.711 and
  laid on the sender's clock (None once the call ended and everything was read);
  `await call.play(pcm)` sends paced audio; `call.digits` is a queue of RFC 4733 DTMF digits.
- `call.ended` is set when either side hung up; `await call.hangup()` sends BYE. A BYE from the
  peer is answered 200 only after `run` returns, so an app commits before the caller is told.
- T.38 from our side: `status, answer = await call.reinvite(sdp.image_description(...))`; 200
  means switched (send UDPTL to `answer`'s port), 488 means the peer stays on G.711.
  T.38 from the peer: set `call.on_offer` to an async function taking the offered description
  and returning our answer (or None for 488). Without a handler a T.38 offer is refused with 488
  and a plain session refresh is answered with the current SDP, media untouched.
- UDPTL: `call.datagrams()` switches the negotiated media port to raw datagrams and returns a
  `Datagrams` endpoint (`await receive()`, `send(data)`); the local port stays the one in our SDP.
- Outgoing calls (`uac.SipClient.call`) give the same `Call` once the peer answered: `offer` is
  then the peer's answer, `caller` our user, `dialled` the target's user, `outgoing` True.
- Fax tone hand-over: `call.fax_app` is the fax application configured for the dialled number
  (or None). A voice app that detects CNG (1100 Hz, 0.5 s on / 3 s off; SpanDSP's
  `modem_connect_tones_rx` or `cng.CngDetector`) calls `await call.hand_over(call.fax_app)`,
  which runs the fax app on this same answered call and returns when it finishes. The audio
  the voice app already read (the last `HEARD_SECONDS`) is given to the fax app again first:
  a fax receiver must hear the sender from the start, and a recorded or impatient sender
  does not repeat what it said while the voice app was listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from channels.telephony import sdp
from channels.telephony.dialog import Dialog
from channels.telephony.rtp import RtpSession, open_session
from channels.telephony.sipmsg import SipMessage, response_to
from channels.telephony.transactions import ClientTransactions, Retransmitter, Timers
from channels.telephony.transport import Source

log = logging.getLogger(__name__)

# How much audio read before a fax hand-over is replayed to the fax app (CNG comes early).
HEARD_SECONDS = 5.0


class CallApp(Protocol):
    async def run(self, call: Call) -> None: ...


OfferHandler = Callable[[sdp.SessionDescription], Awaitable[sdp.SessionDescription | None]]


class CallError(Exception):
    """The call could not be answered or a request inside it failed."""


class Datagrams:
    """Raw datagrams on the call's media port (UDPTL for T.38)."""

    def __init__(self, session: RtpSession) -> None:
        self._session = session
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        session.raw_handler = lambda data, _addr: self._queue.put_nowait(data)

    async def receive(self, wait_seconds: float | None = None) -> bytes | None:
        try:
            return await asyncio.wait_for(self._queue.get(), wait_seconds)
        except TimeoutError:
            return None

    def send(self, data: bytes) -> None:
        self._session.send_raw(data)

    def point_to(self, address: str, port: int) -> None:
        self._session.relatch((address, port))


@dataclass
class Call:
    """One incoming (or outgoing) call; see the module docstring for the API."""

    call_id: str
    caller: str  # E.164 when the From user is a number, else as given
    caller_name: str | None
    dialled: str
    offer: sdp.SessionDescription
    invite: SipMessage
    dialog: Dialog
    source: Source
    local_host: str
    timers: Timers
    transactions: ClientTransactions
    fax_app: CallApp | None = None
    on_offer: OfferHandler | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end_reason: str = ""
    answered: bool = False
    rtp: RtpSession | None = None
    local_sdp: sdp.SessionDescription | None = None
    audio_choice: sdp.AudioChoice | None = None
    _ok: Retransmitter | None = None
    _acked: asyncio.Event = field(default_factory=asyncio.Event)
    _final_sent: bool = False
    outgoing: bool = False  # we sent the INVITE (channels.telephony.uac)
    # Audio frames read while a fax hand-over is still possible (None: not kept).
    _heard: deque[bytes] | None = None

    @property
    def digits(self) -> asyncio.Queue[str]:
        if self.rtp is None:
            raise CallError("the call has no media yet")
        return self.rtp.digits

    def offered_t38(self) -> sdp.Media | None:
        return sdp.t38_offered(self.offer)

    # -- answering -------------------------------------------------------------------------

    async def _open_media(self, remote: tuple[str, int] | None, choice: sdp.AudioChoice | None) -> RtpSession:
        pt = choice.payload_type if choice else sdp.PCMU
        return await open_session(self.local_host, remote, pt, choice.event_pt if choice else None,
                                  choice.ptime if choice else 20)

    async def answer(self) -> None:
        """Answer with audio; returns once the ACK arrived (CallError if it never does)."""
        try:
            choice = sdp.choose_audio(self.offer)
        except sdp.SdpError as exc:
            self.reject(488)
            raise CallError(str(exc)) from exc
        self.audio_choice = choice
        self.rtp = await self._open_media((choice.remote_address, choice.remote_port), choice)
        self.local_sdp = sdp.audio_description(self.local_host, self.rtp.local_port, choice, sdp.new_session_id())
        await self._send_ok()

    async def answer_t38(self, attributes: tuple[str, ...] | None = None) -> Datagrams:
        """Answer an initial T.38 offer with `m=image udptl t38`; returns the UDPTL endpoint."""
        media = self.offered_t38()
        if media is None:
            raise CallError("the INVITE offered no T.38 stream")
        self.rtp = await self._open_media((self.offer.address_for(media), media.port), None)
        attrs = tuple(attributes) if attributes is not None else tuple(media.attributes)
        self.local_sdp = sdp.image_description(self.local_host, self.rtp.local_port, sdp.new_session_id(),
                                               attributes=attrs)
        endpoint = Datagrams(self.rtp)
        await self._send_ok()
        return endpoint

    async def _send_ok(self) -> None:
        assert self.local_sdp is not None
        resp = self._response(200, self.local_sdp.to_bytes())
        self._final_sent = True
        self.answered = True
        self._ok = Retransmitter(self.source.send, resp.to_bytes(), self.timers, reliable=self.source.reliable)
        ok = await self._ok.done
        if not ok or self.ended.is_set() and not self._acked.is_set():
            self._finish("no ACK")
            with contextlib.suppress(Exception):
                await self._bye()
            raise CallError("no ACK for our 200 OK")

    def established(self, rtp: RtpSession, local_sdp: sdp.SessionDescription,
                    choice: sdp.AudioChoice | None) -> None:
        """An outgoing call got its 2xx and we sent the ACK: the same state as an answered
        incoming call, so the rest of the API behaves the same (used by `uac.SipClient`)."""
        self.outgoing = True
        self.rtp, self.local_sdp, self.audio_choice = rtp, local_sdp, choice
        self.answered = self._final_sent = True
        self._acked.set()

    def _response(self, status: int, body: bytes = b"") -> SipMessage:
        resp = response_to(self.invite, status, to_tag=self.dialog.local_tag)
        resp.add("Contact", self.dialog.local_contact)
        resp.add("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS")
        if body:
            resp.add("Content-Type", "application/sdp")
        resp.body = body
        return resp

    def reject(self, status: int) -> None:
        """A final error response to the INVITE (before answering)."""
        if self._final_sent:
            return
        self._final_sent = True
        self.source.send(self._response(status).to_bytes())
        self._finish(f"rejected {status}")

    # -- events from the server -------------------------------------------------------------

    def ack_received(self) -> None:
        self._acked.set()
        if self._ok is not None:
            self._ok.stop()

    def cancelled(self) -> bool:
        """CANCEL before the answer: 487 and the call is over; False once answered."""
        if self._final_sent:
            return False
        self.reject(487)
        self.end_reason = "cancelled"
        return True

    def remote_bye(self) -> None:
        self._finish("remote hangup")

    async def reinvite_received(self, req: SipMessage) -> SipMessage:
        """Our answer to the peer's re-INVITE (session refresh, media move, or T.38 offer)."""
        if self.local_sdp is None:
            return response_to(req, 491, to_tag=self.dialog.local_tag)
        try:
            offer = sdp.parse(req.body) if req.body else None
        except sdp.SdpError:
            return response_to(req, 488, to_tag=self.dialog.local_tag)
        answer: sdp.SessionDescription | None = self.local_sdp
        if offer is not None and sdp.t38_offered(offer) is not None and self.local_sdp.first("image") is None:
            answer = await self.on_offer(offer) if self.on_offer is not None else None
            if answer is not None:
                self.local_sdp = answer
        elif offer is not None and self.rtp is not None and (audio := offer.first("audio")) is not None:
            # A refresh keeps our media; only follow the peer if it moved its address.
            remote = (offer.address_for(audio), audio.port)
            if self.rtp.remote != remote and self.audio_choice is not None \
                    and remote != (self.audio_choice.remote_address, self.audio_choice.remote_port):
                self.rtp.relatch(remote)
        if answer is None:
            return response_to(req, 488, to_tag=self.dialog.local_tag)
        resp = response_to(req, 200, to_tag=self.dialog.local_tag)
        resp.add("Contact", self.dialog.local_contact)
        resp.add("Content-Type", "application/sdp")
        resp.body = answer.to_bytes()
        return resp

    # -- the app's requests ------------------------------------------------------------------

    async def read_audio(self, wait_seconds: float | None = None) -> bytes | None:
        """The next received PCM frame; None after the call ended and the buffer is drained,
        or when `wait_seconds` pass without audio (check `ended` to tell them apart)."""
        if self.rtp is None:
            raise CallError("the call has no media yet")
        queue = self.rtp.audio
        if self.ended.is_set() and queue.empty():
            return None
        getter = asyncio.ensure_future(queue.get())
        ender = asyncio.ensure_future(self.ended.wait())
        try:
            done, _ = await asyncio.wait({getter, ender}, timeout=wait_seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ender.cancel()
        if getter in done:
            return self._keep(getter.result())
        getter.cancel()
        if not queue.empty():
            return self._keep(queue.get_nowait())
        return None

    def _keep(self, frame: bytes) -> bytes:
        if self.fax_app is not None:
            if self._heard is None:
                self._heard = deque(maxlen=max(1, int(HEARD_SECONDS * 50)))  # 20 ms frames
            self._heard.append(frame)
        return frame

    async def play(self, pcm: bytes, stop: asyncio.Event | None = None) -> bool:
        if self.rtp is None:
            raise CallError("the call has no media yet")
        return await self.rtp.play(pcm, stop or self.ended)

    def datagrams(self) -> Datagrams:
        if self.rtp is None:
            raise CallError("the call has no media yet")
        return Datagrams(self.rtp)

    async def reinvite(self, offer: sdp.SessionDescription) -> tuple[int, sdp.SessionDescription | None]:
        """Send a re-INVITE with `offer`; (final status, the peer's answer when 2xx)."""
        req = self.dialog.request("INVITE", offer.to_bytes())
        resp = await self.transactions.request(req, self.source.send, reliable=self.source.reliable)
        if 200 <= resp.status < 300:
            ack = self.dialog.request("ACK", cseq=req.cseq[0])
            self.source.send(ack.to_bytes())
            self.local_sdp = offer
            try:
                return resp.status, sdp.parse(resp.body)
            except sdp.SdpError:
                return resp.status, None
        return resp.status, None

    async def hangup(self) -> None:
        if self.ended.is_set():
            return
        self._finish("local hangup")
        if self.answered:
            with contextlib.suppress(TimeoutError):
                await self._bye()
        else:
            self.reject(480)

    async def _bye(self) -> SipMessage:
        req = self.dialog.request("BYE")
        return await self.transactions.request(req, self.source.send, reliable=self.source.reliable)

    async def hand_over(self, app: CallApp) -> None:
        """Run another application on this call (a voice app handing a fax machine to fax)."""
        log.info("call %s handed over to %s", self.call_id, type(app).__name__)
        heard, self._heard = self._heard, None
        self.fax_app = None  # handed over once: nothing more to keep
        if heard and self.rtp is not None:
            # Put what the voice app read back in front of what it has not (no await between).
            queue = self.rtp.audio
            unread = [queue.get_nowait() for _ in range(queue.qsize())]
            for frame in (*heard, *unread):
                queue.put_nowait(frame)
        await app.run(self)

    def _finish(self, reason: str) -> None:
        if not self.ended.is_set():
            self.end_reason = reason
            if self.rtp is not None:
                self.rtp.flush()
            self.ended.set()

    def close_media(self) -> None:
        if self._ok is not None:
            self._ok.stop()
        if self.rtp is not None:
            self.rtp.close()

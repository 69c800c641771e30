"""Two fax sessions wired back to back in memory, on simulated time.

Used by the self-tests, the benchmark and `umsg`'s fax diagnostics: a sender
and a receiver exchange 20 ms audio frames, or IFP packets framed in UDPTL with
redundancy over a lossy in-memory link. Time is simulated, so a 12-page fax
takes as long as the DSP needs, not the minutes a phone line would.
CPU-bound: run it in a worker thread from async code.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from channels.fax.engine import SAMPLES_PER_FRAME, Direction, FaxOutcome, FaxSession, Transport
from channels.telephony.spandsp import G711, SpanDsp
from channels.telephony.udptl import UdptlDecoder, UdptlEncoder, UdptlError

# A backstop in simulated seconds; T.30's own timers end a stuck call well before.
DEFAULT_MAX_SECONDS = 3600.0
# How long to keep running after both ends reached phase E (the last frames drain).
AFTER_PHASE_E_SECONDS = 1.0


@dataclass(frozen=True)
class LoopbackResult:
    sent: FaxOutcome
    received: FaxOutcome
    simulated_seconds: float
    datagrams_lost: int = 0


class _LossyLink:
    """One direction of a UDPTL link that drops datagrams at random."""

    def __init__(self, loss: float, rng: random.Random, redundancy: int) -> None:
        self.encoder = UdptlEncoder(redundancy=redundancy)
        self.decoder = UdptlDecoder()
        self.loss = loss
        self.rng = rng
        self.in_flight: list[bytes] = []
        self.lost = 0

    def send(self, ifp: bytes, _count: int) -> None:
        datagram = self.encoder.encode(ifp)
        if self.rng.random() < self.loss:
            self.lost += 1
        else:
            self.in_flight.append(datagram)

    def deliver(self, to: FaxSession) -> None:
        pending, self.in_flight = self.in_flight, []
        for datagram in pending:
            try:
                for seq, ifp in self.decoder.feed(datagram):
                    to.rx_ifp(seq, ifp)
            except UdptlError:
                continue


def run_pair(
    dsp: SpanDsp,
    transport: Transport,
    tx_tiff: Path,
    rx_tiff: Path,
    *,
    loss: float = 0.0,
    redundancy: int = 3,
    seed: int = 1,
    ecm: bool = True,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    stop_after_seconds: float | None = None,
) -> LoopbackResult:
    """Send `tx_tiff` to a receiver writing `rx_tiff`; both outcomes when done.

    `stop_after_seconds` cuts the call at that simulated time (a dropped call).
    """
    rng = random.Random(seed)
    a_to_b = _LossyLink(loss, rng, redundancy)
    b_to_a = _LossyLink(loss, rng, redundancy)
    sender = FaxSession(dsp, transport=transport, direction=Direction.SEND, path=tx_tiff,
                        ident="+1 555 0100", ecm=ecm, send_ifp=a_to_b.send)
    receiver = FaxSession(dsp, transport=transport, direction=Direction.RECEIVE, path=rx_tiff,
                          ident="+1 555 0199", ecm=ecm, send_ifp=b_to_a.send)
    frame_seconds = SAMPLES_PER_FRAME / 8000
    limit = max_seconds if stop_after_seconds is None else min(max_seconds, stop_after_seconds)
    elapsed = 0.0
    drain = 0.0
    try:
        while elapsed < limit:
            if transport is Transport.AUDIO:
                to_b = sender.tx_audio()
                to_a = receiver.tx_audio()
                receiver.rx_audio(to_b)
                sender.rx_audio(to_a)
            else:
                sender.tick()
                receiver.tick()
                a_to_b.deliver(receiver)
                b_to_a.deliver(sender)
            elapsed += frame_seconds
            if sender.finished and receiver.finished:
                drain += frame_seconds
                if drain >= AFTER_PHASE_E_SECONDS:
                    break
    finally:
        sent = sender.close()
        received = receiver.close()
    return LoopbackResult(sent, received, elapsed, a_to_b.lost + b_to_a.lost)


def receive_recording(dsp: SpanDsp, audio: bytes, rx_tiff: Path, *, alaw: bool = False) -> FaxOutcome:
    """Receive a fax from a recording of the caller's side (raw G.711, 8 kHz).

    The receiver's own answers go nowhere; a recorded T.30 sender does not wait for them.
    """
    codec = G711(dsp, alaw=alaw)
    receiver = FaxSession(dsp, transport=Transport.AUDIO, direction=Direction.RECEIVE, path=rx_tiff)
    try:
        for pos in range(0, len(audio), SAMPLES_PER_FRAME):
            receiver.tx_audio()
            receiver.rx_audio(codec.decode(audio[pos:pos + SAMPLES_PER_FRAME]))
            if receiver.finished:
                break
    finally:
        codec.close()
        outcome = receiver.close()
    return outcome

"""RTP (RFC 3550) for one call: packets, a jitter buffer, and the UDP session.

Receiving: packets go through `JitterBuffer`, which releases them ordered by (extended) sequence
number once `depth` newer packets are held, counts losses (gaps in sequence) and drops late or
duplicate packets. Released audio is decoded to 16-bit PCM and placed on the timeline its RTP
timestamp says: a timestamp gap (loss, silence suppression, a DTMF-only stretch) is filled with
silence, so recorded durations follow the sender's clock, not packet arrival.

Symmetric RTP: we send to where the peer's packets come from (NAT), falling back to the SDP
address until the first packet arrives. A raw mode hands every datagram to a callback instead
(UDPTL for T.38 fax on the negotiated port).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from channels.telephony import g711
from channels.telephony.dtmf import DtmfReceiver

log = logging.getLogger(__name__)

SAMPLE_RATE = 8000
# A timestamp gap longer than this is a new timeline (sender restarted), not silence to record.
MAX_GAP_SAMPLES = 5 * SAMPLE_RATE


@dataclass(frozen=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False

    def to_bytes(self) -> bytes:
        head = bytes([0x80, (0x80 if self.marker else 0) | (self.payload_type & 0x7F)])
        return (head + self.sequence.to_bytes(2, "big") + self.timestamp.to_bytes(4, "big")
                + self.ssrc.to_bytes(4, "big") + self.payload)


def parse_packet(data: bytes) -> RtpPacket | None:
    """An RTP packet, or None for anything else (RTCP, garbage, wrong version)."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    pt = data[1] & 0x7F
    if 72 <= pt <= 76:
        return None  # RTCP multiplexed on the port
    offset = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:  # header extension
        if len(data) < offset + 4:
            return None
        offset += 4 + 4 * int.from_bytes(data[offset + 2: offset + 4], "big")
    end = len(data)
    if data[0] & 0x20:  # padding
        end -= data[-1]
    if offset > end:
        return None
    return RtpPacket(pt, int.from_bytes(data[2:4], "big"), int.from_bytes(data[4:8], "big"),
                     int.from_bytes(data[8:12], "big"), data[offset:end], bool(data[1] & 0x80))


@dataclass
class RtpStats:
    received: int = 0
    lost: int = 0
    late: int = 0
    duplicates: int = 0
    sent: int = 0


class JitterBuffer:
    """Orders packets by sequence number; `push` returns the packets now ready, in order."""

    def __init__(self, depth: int = 5, stats: RtpStats | None = None) -> None:
        self.depth = depth
        self.stats = stats or RtpStats()
        self._held: dict[int, RtpPacket] = {}
        self._next: int | None = None  # extended sequence number expected next
        self._highest = -1
        self._ssrc: int | None = None

    def _extend(self, seq: int) -> int:
        if self._highest < 0:
            return seq
        # Pick the 16-bit wrap cycle that puts seq closest to the highest seen.
        base = self._highest & ~0xFFFF
        cands = (base - 0x10000 + seq, base + seq, base + 0x10000 + seq)
        return min(cands, key=lambda c: abs(c - self._highest))

    def push(self, packet: RtpPacket) -> list[RtpPacket]:
        self.stats.received += 1
        restarted: list[RtpPacket] = []
        if packet.ssrc != self._ssrc:
            # A new source (a re-INVITE, a media server switching streams, DTMF played from
            # another recording) numbers its packets afresh: release what the old one left,
            # then follow the new numbering instead of calling it late or lost.
            restarted = self.flush()
            self._ssrc, self._next, self._highest = packet.ssrc, None, -1
        if restarted:
            return restarted + self._push_same_source(packet)
        return self._push_same_source(packet)

    def _push_same_source(self, packet: RtpPacket) -> list[RtpPacket]:
        ext = self._extend(packet.sequence)
        if self._next is not None and ext < self._next:
            self.stats.late += 1
            return []
        if ext in self._held:
            self.stats.duplicates += 1
            return []
        self._held[ext] = packet
        self._highest = max(self._highest, ext)
        if self._next is None:
            self._next = ext
        out: list[RtpPacket] = []
        while self._held and (self._next in self._held or len(self._held) > self.depth):
            out.extend(self._release_one())
        return out

    def _release_one(self) -> list[RtpPacket]:
        assert self._next is not None
        if self._next not in self._held:
            first = min(self._held)
            self.stats.lost += first - self._next
            self._next = first
        packet = self._held.pop(self._next)
        self._next += 1
        return [packet]

    def flush(self) -> list[RtpPacket]:
        out: list[RtpPacket] = []
        while self._held:
            out.extend(self._release_one())
        return out


@dataclass
class AudioTimeline:
    """Turns released packets into PCM frames on the sender's clock (gaps become silence)."""

    on_audio: Callable[[bytes], None]
    on_digit: Callable[[str], None]
    event_pt: int | None = None
    _last_end: int | None = None  # timestamp just after the last audio sample
    _ssrc: int | None = None
    _dtmf: DtmfReceiver = field(default_factory=DtmfReceiver)

    def feed(self, packet: RtpPacket) -> None:
        if packet.payload_type == self.event_pt and self.event_pt is not None:
            digit = self._dtmf.feed(packet.timestamp, packet.payload)
            if digit is not None:
                self.on_digit(digit)
            return
        if packet.payload_type not in (g711.PCMU_PT, g711.PCMA_PT):
            return  # comfort noise and unknown formats carry no audio we record
        if packet.ssrc != self._ssrc:
            self._ssrc, self._last_end = packet.ssrc, None
        if self._last_end is not None:
            gap = (packet.timestamp - self._last_end) & 0xFFFFFFFF
            if 0 < gap <= MAX_GAP_SAMPLES:
                self.on_audio(b"\x00\x00" * gap)
            elif gap > MAX_GAP_SAMPLES and gap < 0x80000000:
                log.debug("RTP timestamp jumped by %d samples; not filling", gap)
            elif gap >= 0x80000000:
                return  # older than what was played: a retransmitted or reordered duplicate
        self.on_audio(g711.decode(packet.payload_type, packet.payload))
        self._last_end = (packet.timestamp + len(packet.payload)) & 0xFFFFFFFF


class RtpSession(asyncio.DatagramProtocol):
    """One call's RTP socket; create with `open_session`."""

    def __init__(self, remote: tuple[str, int] | None, payload_type: int, event_pt: int | None,
                 ptime: int, jitter_depth: int = 5) -> None:
        self.remote = remote
        self.payload_type = payload_type
        self.ptime = ptime
        self.stats = RtpStats()
        self.audio: asyncio.Queue[bytes] = asyncio.Queue()
        self.digits: asyncio.Queue[str] = asyncio.Queue()
        self.raw_handler: Callable[[bytes, tuple[str, int]], None] | None = None
        self._jitter = JitterBuffer(jitter_depth, self.stats)
        self._timeline = AudioTimeline(self.audio.put_nowait, self.digits.put_nowait, event_pt)
        self._transport: asyncio.DatagramTransport | None = None
        self._latched = False
        self._seq = secrets.randbelow(0x10000)
        self._ts = secrets.randbelow(2**32)
        self._ssrc = secrets.randbelow(2**32)
        self._marker = True
        self.closed = asyncio.Event()

    @property
    def local_port(self) -> int:
        assert self._transport is not None
        return int(self._transport.get_extra_info("sockname")[1])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self._latched:
            self.remote, self._latched = (addr[0], addr[1]), True
        if self.raw_handler is not None:
            self.raw_handler(data, addr)
            return
        packet = parse_packet(data)
        if packet is None:
            return
        for ready in self._jitter.push(packet):
            self._timeline.feed(ready)

    def set_codec(self, payload_type: int, event_pt: int | None) -> None:
        self.payload_type = payload_type
        self._timeline.event_pt = event_pt

    def relatch(self, remote: tuple[str, int]) -> None:
        """The peer's SDP moved its media: send there until its packets show where they come from."""
        self.remote, self._latched = remote, False

    def flush(self) -> None:
        """Release whatever the jitter buffer still holds (the call ended)."""
        for ready in self._jitter.flush():
            self._timeline.feed(ready)

    def send_raw(self, data: bytes) -> None:
        if self._transport is not None and self.remote is not None and not self._transport.is_closing():
            self._transport.sendto(data, self.remote)

    def send_frame(self, pcm: bytes) -> None:
        """Send one frame of 16-bit PCM (normally `ptime` ms) now."""
        payload = g711.encode(self.payload_type, pcm)
        packet = RtpPacket(self.payload_type, self._seq, self._ts, self._ssrc, payload, self._marker)
        self._marker = False
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + len(payload)) & 0xFFFFFFFF
        self.stats.sent += 1
        self.send_raw(packet.to_bytes())

    async def play(self, pcm: bytes, stop: asyncio.Event | None = None) -> bool:
        """Send PCM paced in real time; returns False when `stop` was set before the end."""
        loop = asyncio.get_running_loop()
        frame_bytes = SAMPLE_RATE * self.ptime // 1000 * 2
        start = loop.time()
        for i, offset in enumerate(range(0, len(pcm), frame_bytes)):
            if stop is not None and stop.is_set():
                return False
            frame = pcm[offset: offset + frame_bytes].ljust(frame_bytes, b"\x00")
            self.send_frame(frame)
            # Pace against the absolute schedule so a slow loop does not stretch the prompt.
            delay = start + (i + 1) * self.ptime / 1000 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        return True

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def open_session(host: str, remote: tuple[str, int] | None, payload_type: int, event_pt: int | None,
                       ptime: int, port: int = 0) -> RtpSession:
    loop = asyncio.get_running_loop()
    _t, proto = await loop.create_datagram_endpoint(
        lambda: RtpSession(remote, payload_type, event_pt, ptime), local_addr=(host, port))
    return proto

"""UDPTL framing of T.38 IFP packets (ITU-T T.38 Annex A), redundancy mode.

A UDPTL packet is, in ASN.1 aligned PER: a 16-bit sequence number, the primary
IFP packet as an open type (length determinant + bytes), then the error-recovery
choice: secondary IFP packets (the previous packets again, newest first) or FEC.
We send redundancy (the last `redundancy` primaries as secondaries, 3 by default)
and receive both forms; FEC parity is not used to rebuild packets, only the
primary of such a packet is delivered.

The receiver delivers every IFP packet once, in sequence order: missing packets
recovered from a later packet's secondaries come before its primary, duplicates
and late packets are dropped, and anything that does not parse raises
`UdptlError` (callers count and drop it; it never reaches SpanDSP).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

# A sequence jump larger than this is taken as a restart of the far end's numbering.
RESYNC_WINDOW = 1000
MAX_IFP_BYTES = 16383


class UdptlError(ValueError):
    """A datagram that is not a valid UDPTL packet."""


def _put_length(out: bytearray, n: int) -> None:
    if n < 0x80:
        out.append(n)
    elif n <= MAX_IFP_BYTES:
        out += bytes((0x80 | (n >> 8), n & 0xFF))
    else:
        raise UdptlError(f"an IFP packet of {n} bytes is too large for UDPTL")


def _get_length(buf: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(buf):
        raise UdptlError("truncated length determinant")
    first = buf[pos]
    if first & 0x80 == 0:
        return first, pos + 1
    if first & 0xC0 == 0x80:
        if pos + 1 >= len(buf):
            raise UdptlError("truncated length determinant")
        return ((first & 0x3F) << 8) | buf[pos + 1], pos + 2
    # Fragmented (16K-block) lengths never occur for fax IFP packets.
    raise UdptlError("fragmented length determinant")


def _get_open_type(buf: bytes, pos: int) -> tuple[bytes, int]:
    n, pos = _get_length(buf, pos)
    end = pos + n
    if end > len(buf):
        raise UdptlError("field runs past the end of the datagram")
    return buf[pos:end], end


@dataclass(frozen=True)
class UdptlPacket:
    """A parsed datagram: its sequence number, primary IFP and secondaries (newest first)."""

    seq: int
    primary: bytes
    secondaries: tuple[bytes, ...] = ()


def encode_packet(packet: UdptlPacket) -> bytes:
    """One datagram in redundancy mode."""
    if not 0 <= packet.seq <= 0xFFFF:
        raise UdptlError(f"sequence number {packet.seq} out of range")
    out = bytearray(packet.seq.to_bytes(2, "big"))
    _put_length(out, len(packet.primary))
    out += packet.primary
    out.append(0x00)  # error-recovery CHOICE: secondary-ifp-packets
    _put_length(out, len(packet.secondaries))
    for ifp in packet.secondaries:
        _put_length(out, len(ifp))
        out += ifp
    return bytes(out)


def decode_packet(data: bytes) -> UdptlPacket:
    """Parse one datagram; UdptlError for anything malformed."""
    if len(data) < 4:
        raise UdptlError("datagram too short for UDPTL")
    seq = int.from_bytes(data[:2], "big")
    primary, pos = _get_open_type(data, 2)
    if not primary:
        raise UdptlError("empty primary IFP packet")
    if pos >= len(data):
        raise UdptlError("missing error-recovery field")
    choice = data[pos]
    pos += 1
    if choice & 0x80:
        # FEC mode: we keep the primary and ignore the parity (a length check only).
        return UdptlPacket(seq, primary)
    count, pos = _get_length(data, pos)
    secondaries = []
    for _ in range(count):
        ifp, pos = _get_open_type(data, pos)
        secondaries.append(ifp)
    if pos != len(data):
        raise UdptlError("trailing bytes after the secondary packets")
    return UdptlPacket(seq, primary, tuple(secondaries))


class UdptlEncoder:
    """Numbers outgoing IFP packets and attaches the previous ones as secondaries."""

    def __init__(self, redundancy: int = 3, first_seq: int = 0) -> None:
        self._seq = first_seq & 0xFFFF
        self._history: deque[bytes] = deque(maxlen=max(0, redundancy))
        self.redundancy = redundancy

    def encode(self, ifp: bytes) -> bytes:
        """The datagram carrying `ifp` (and up to `redundancy` earlier packets)."""
        if not ifp:
            raise UdptlError("cannot send an empty IFP packet")
        secondaries = tuple(reversed(self._history)) if self.redundancy else ()
        data = encode_packet(UdptlPacket(self._seq, ifp, secondaries))
        self._seq = (self._seq + 1) & 0xFFFF
        if self.redundancy:
            self._history.append(ifp)
        return data


@dataclass
class UdptlStats:
    received: int = 0
    delivered: int = 0
    recovered: int = 0
    duplicates: int = 0
    malformed: int = 0
    lost: int = 0


class UdptlDecoder:
    """Turns received datagrams into IFP packets in order, once each."""

    def __init__(self) -> None:
        self._expected: int | None = None
        self.stats = UdptlStats()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """The (sequence number, IFP) pairs this datagram makes deliverable, oldest first.

        Malformed datagrams raise UdptlError and change nothing.
        """
        try:
            packet = decode_packet(data)
        except UdptlError:
            self.stats.malformed += 1
            raise
        self.stats.received += 1
        seq = packet.seq
        if self._expected is None:
            self._expected = seq
        ahead = (seq - self._expected) & 0xFFFF
        if ahead >= 0x8000:
            # Behind what we delivered: a duplicate or a late packet already recovered.
            self.stats.duplicates += 1
            return []
        out: list[tuple[int, bytes]] = []
        if ahead > RESYNC_WINDOW:
            self._expected = seq
            ahead = 0
        # Secondaries are newest first: secondaries[i] is seq - 1 - i.
        for back in range(ahead, 0, -1):
            if back <= len(packet.secondaries):
                out.append(((seq - back) & 0xFFFF, packet.secondaries[back - 1]))
                self.stats.recovered += 1
            else:
                self.stats.lost += 1
        out.append((seq, packet.primary))
        self._expected = (seq + 1) & 0xFFFF
        self.stats.delivered += len(out)
        return out

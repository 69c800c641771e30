"""RFC 4733 telephone events (DTMF digits carried in RTP).

One key press arrives as several packets sharing an RTP timestamp (the event's start), the last
ones with the end bit set (sent three times for robustness). `DtmfReceiver` reports each press
once, at its first packet, whatever the duplicates or reordering.
"""

from __future__ import annotations

from dataclasses import dataclass

EVENT_DIGITS = "0123456789*#ABCD"


@dataclass(frozen=True)
class DtmfEvent:
    digit: str
    end: bool
    volume: int
    duration: int  # in timestamp units (1/8000 s)


def parse_event(payload: bytes) -> DtmfEvent | None:
    """The event in a telephone-event payload, or None when it is not a digit or is short."""
    if len(payload) < 4 or payload[0] >= len(EVENT_DIGITS):
        return None
    return DtmfEvent(EVENT_DIGITS[payload[0]], bool(payload[1] & 0x80), payload[1] & 0x3F,
                     int.from_bytes(payload[2:4], "big"))


def build_event(digit: str, *, end: bool, duration: int, volume: int = 10) -> bytes:
    code = EVENT_DIGITS.index(digit.upper())
    return bytes([code, (0x80 if end else 0) | (volume & 0x3F)]) + duration.to_bytes(2, "big")


class DtmfReceiver:
    """Turns a stream of telephone-event packets into key presses (each reported once)."""

    def __init__(self) -> None:
        self._seen: set[int] = set()

    def feed(self, timestamp: int, payload: bytes) -> str | None:
        event = parse_event(payload)
        if event is None or timestamp in self._seen:
            return None
        if len(self._seen) > 256:
            self._seen.clear()  # bounded memory; old timestamps never come back in a live call
        self._seen.add(timestamp)
        return event.digit

"""A fallback fax calling-tone (CNG) detector: 1100 Hz, 0.5 s on, 3 s off (ITU-T T.30).

Goertzel energy at 1100 Hz against the frame's total energy, per 10 ms block; a tone is
reported after `min_on` seconds of consecutive tonal blocks. SpanDSP's `modem_connect_tones_rx`
(channels/telephony/spandsp.py) is the stronger detector; this one needs no library.
"""

from __future__ import annotations

import array
import math

RATE = 8000
BLOCK = 80  # 10 ms


def _goertzel_power(samples: array.array[int], coeff: float) -> float:
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


class CngDetector:
    """Feed 16-bit PCM at 8 kHz; `feed` returns True once a CNG tone has been heard."""

    def __init__(self, frequency: float = 1100.0, min_on: float = 0.4, ratio: float = 0.6) -> None:
        self._coeff = 2 * math.cos(2 * math.pi * frequency / RATE)
        self._need = int(min_on * RATE / BLOCK)
        self._ratio = ratio
        self._run = 0
        self._pending = b""
        self.detected = False

    def feed(self, pcm: bytes) -> bool:
        data = self._pending + pcm
        usable = len(data) // (BLOCK * 2) * BLOCK * 2
        self._pending = data[usable:]
        for off in range(0, usable, BLOCK * 2):
            block = array.array("h")
            block.frombytes(data[off: off + BLOCK * 2])
            energy = sum(x * x for x in block)
            tonal = energy > BLOCK * 100 * 100 and \
                _goertzel_power(block, self._coeff) * 2 / BLOCK > self._ratio * energy
            self._run = self._run + 1 if tonal else 0
            if self._run >= self._need:
                self.detected = True
        return self.detected

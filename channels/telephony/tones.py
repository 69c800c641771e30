"""Fax calling-tone (CNG) detection on a voice call, through SpanDSP.

A voicemail greeting listens with `CngDetector.feed(pcm)`; once a fax machine's
1100 Hz calling tone has been heard (SpanDSP needs about half a second of it),
the call is handed over to the fax receiver instead of being recorded.
"""

from __future__ import annotations

import logging

from channels.telephony.spandsp import MODEM_CONNECT_TONES_FAX_CNG, TONE_REPORT_FUNC, SpanDsp, pcm_array
from umsg.errors import TransientError

log = logging.getLogger(__name__)


class CngDetector:
    """Listens to 16-bit PCM at 8 kHz for a fax calling tone."""

    def __init__(self, dsp: SpanDsp) -> None:
        self._dsp = dsp
        self.detected = False
        self.samples_seen = 0
        self.detected_at_sample: int | None = None
        # Referenced for as long as the detector lives: SpanDSP calls it from modem_connect_tones_rx.
        self._callback = TONE_REPORT_FUNC(self._on_tone)
        self._state = dsp.fn("modem_connect_tones_rx_init")(None, MODEM_CONNECT_TONES_FAX_CNG, self._callback, None)
        if not self._state:
            raise TransientError("modem_connect_tones_rx_init failed")

    def _on_tone(self, _user: int | None, code: int, _level: int, _delay: int) -> None:
        if code == MODEM_CONNECT_TONES_FAX_CNG and not self.detected:
            self.detected = True
            self.detected_at_sample = self.samples_seen

    def feed(self, pcm: bytes) -> bool:
        """Listen to more audio; True once a CNG tone has been detected."""
        if self._state is None or self.detected or len(pcm) < 2:
            return self.detected
        samples = pcm_array(pcm)
        self._dsp.fn("modem_connect_tones_rx")(self._state, samples, len(samples))
        self.samples_seen += len(samples)
        if not self.detected and self._dsp.fn("modem_connect_tones_rx_get")(self._state) == MODEM_CONNECT_TONES_FAX_CNG:
            self._on_tone(None, MODEM_CONNECT_TONES_FAX_CNG, 0, 0)
        return self.detected

    def close(self) -> None:
        if self._state is not None:
            self._dsp.fn("modem_connect_tones_rx_free")(self._state)
            self._state = None

"""Fax sessions: one SpanDSP T.30 terminal sending or receiving one document.

A session runs over audio (16-bit PCM frames at 8 kHz, from G.711) or over T.38
(IFP packets in, IFP packets out through a callback). The caller drives time:
audio sessions by exchanging frames, T.38 sessions by `tick(samples)` every
packet interval. The session ends on T.30 phase E; `outcome()` then gives the
result: pages, rate, ECM, resolution, bad rows, the far end's id and a readable
reason. A call that stops early is ended with `terminate()`: the pages received
so far stay in the TIFF and the outcome is marked partial.

The C calls are short (one 20 ms frame each) and run inline; whole-document
loops (tests, the benchmark) run in a worker thread.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from channels.telephony.spandsp import (
    PHASE_B_HANDLER,
    PHASE_D_HANDLER,
    PHASE_E_HANDLER,
    T4_COMPRESSION_ITU_T6,
    T30_ERR_CALLDROPPED,
    T30_ERR_OK,
    T30_MAX_IDENT_LEN,
    T38_TX_PACKET_HANDLER,
    SpanDsp,
    T30Stats,
    pcm_array,
)
from umsg.errors import PermanentError, TransientError

log = logging.getLogger(__name__)

SAMPLES_PER_FRAME = 160  # 20 ms at 8 kHz
PIXELS_PER_METRE_PER_DPI = 100 / 2.54


class Transport(StrEnum):
    AUDIO = "audio"
    T38 = "t38"


class Direction(StrEnum):
    RECEIVE = "receive"
    SEND = "send"


@dataclass(frozen=True)
class FaxOutcome:
    """What a finished (or abandoned) session achieved."""

    ok: bool
    completion_code: int
    reason: str
    pages: int
    bit_rate: int
    ecm: bool
    x_dpi: int
    y_dpi: int
    width: int
    length: int
    bad_rows: int
    longest_bad_row_run: int
    remote_id: str
    transport: str
    direction: str
    # Some pages arrived (or were sent) but the document did not complete.
    partial: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _dpi(pixels_per_metre: int) -> int:
    return round(pixels_per_metre / PIXELS_PER_METRE_PER_DPI) if pixels_per_metre > 0 else 0


class FaxSession:
    """One T.30 terminal (audio or T.38) sending or receiving one TIFF file."""

    def __init__(
        self,
        dsp: SpanDsp,
        *,
        transport: Transport,
        direction: Direction,
        path: Path,
        ident: str = "",
        ecm: bool = True,
        calling: bool | None = None,
        send_ifp: Callable[[bytes, int], None] | None = None,
    ) -> None:
        self._dsp = dsp
        self.transport = transport
        self.direction = direction
        self.path = path
        self._send_ifp = send_ifp
        self._completion: int | None = None
        self._pages_seen = 0
        self._state: int | None = None
        self._core: int | None = None
        self._last: T30Stats | None = None
        self._remote_id = ""
        self._final: FaxOutcome | None = None
        self._closed = False
        # The sender normally places the call; the channel can say otherwise (polling, hand-over).
        calling = direction is Direction.SEND if calling is None else calling
        # Keep every callback object alive as long as the C state may call it.
        self._cb_b = PHASE_B_HANDLER(self._on_phase_b)
        self._cb_d = PHASE_D_HANDLER(self._on_phase_d)
        self._cb_e = PHASE_E_HANDLER(self._on_phase_e)
        self._cb_tx = T38_TX_PACKET_HANDLER(self._on_t38_packet)
        if transport is Transport.AUDIO:
            state = dsp.fn("fax_init")(None, int(calling))
            if not state:
                raise TransientError("fax_init failed")
            # Send silence when T.30 has nothing to say: RTP needs a full frame every 20 ms.
            dsp.fn("fax_set_transmit_on_idle")(state, 1)
            t30 = dsp.fn("fax_get_t30_state")(state)
        else:
            if send_ifp is None:
                raise ValueError("a T.38 session needs send_ifp")
            state = dsp.fn("t38_terminal_init")(None, int(calling), self._cb_tx, None)
            if not state:
                raise TransientError("t38_terminal_init failed")
            t30 = dsp.fn("t38_terminal_get_t30_state")(state)
            core = dsp.fn("t38_terminal_get_t38_core_state")(state)
            # UDPTL redundancy already repeats every packet, so SpanDSP sends each one once.
            for category in range(5):
                dsp.fn("t38_set_redundancy_control")(core, category, 1)
            self._core = core
        self._state = state
        self._t30 = t30
        self._configure(path, ident, ecm)

    def _configure(self, path: Path, ident: str, ecm: bool) -> None:
        fn = self._dsp.fn
        t30 = self._t30
        safe_ident = "".join(c for c in ident if 32 <= ord(c) < 127)[:T30_MAX_IDENT_LEN]
        fn("t30_set_tx_ident")(t30, safe_ident.encode("ascii"))
        fn("t30_set_ecm_capability")(t30, int(ecm))
        if self.direction is Direction.RECEIVE:
            fn("t30_set_rx_file")(t30, str(path).encode(), -1)
            fn("t30_set_rx_encoding")(t30, T4_COMPRESSION_ITU_T6)
        else:
            if not path.is_file():
                raise PermanentError(f"fax document {path} does not exist")
            fn("t30_set_tx_file")(t30, str(path).encode(), -1, -1)
        fn("t30_set_phase_b_handler")(t30, self._cb_b, None)
        fn("t30_set_phase_d_handler")(t30, self._cb_d, None)
        fn("t30_set_phase_e_handler")(t30, self._cb_e, None)

    # -- callbacks (exceptions must not cross into C) ------------------------------------

    def _on_phase_b(self, _t30: int | None, _user: int | None, result: int) -> int:
        log.debug("fax %s phase B 0x%x", self.direction.value, result)
        return T30_ERR_OK

    def _on_phase_d(self, _t30: int | None, _user: int | None, result: int) -> int:
        try:
            stats = self._dsp.statistics(self._t30)
            self._pages_seen = stats.pages_rx if self.direction is Direction.RECEIVE else stats.pages_tx
        except Exception:  # noqa: BLE001 - never raise into SpanDSP
            log.exception("phase D statistics failed")
        return T30_ERR_OK

    def _on_phase_e(self, _t30: int | None, _user: int | None, code: int) -> None:
        self._completion = int(code)

    def _on_t38_packet(self, _core: int | None, _user: int | None, buf: Any, length: int, count: int) -> int:
        try:
            if self._send_ifp is not None and length > 0:
                self._send_ifp(ctypes.string_at(buf, length), count)
        except Exception:  # noqa: BLE001 - a send failure is a lost packet, T.30 retries
            log.exception("sending a T.38 packet failed")
        return 0

    # -- driving -------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Phase E was reached (successfully or not)."""
        return self._completion is not None

    def rx_audio(self, pcm: bytes) -> None:
        """Feed received 16-bit PCM (audio sessions)."""
        if self._closed or self.transport is not Transport.AUDIO or len(pcm) < 2:
            return
        samples = pcm_array(pcm)
        self._dsp.fn("fax_rx")(self._state, samples, len(samples))

    def tx_audio(self, samples: int = SAMPLES_PER_FRAME) -> bytes:
        """The next `samples` of 16-bit PCM to send (audio sessions); silence when closed."""
        if self._closed or self.transport is not Transport.AUDIO:
            return bytes(2 * samples)
        buf = (ctypes.c_int16 * samples)()
        got = self._dsp.fn("fax_tx")(self._state, buf, samples)
        data = bytes(buf)
        # Pad short reads: the RTP clock does not wait for the modem.
        return data if got >= samples else data[: 2 * max(got, 0)] + bytes(2 * (samples - max(got, 0)))

    def rx_ifp(self, seq: int, ifp: bytes) -> None:
        """Feed one received IFP packet (T.38 sessions), already in order from UDPTL."""
        if self._closed or self.transport is not Transport.T38 or not ifp:
            return
        buf = (ctypes.c_uint8 * len(ifp)).from_buffer_copy(ifp)
        self._dsp.fn("t38_core_rx_ifp_packet")(self._core, buf, len(ifp), seq & 0xFFFF)

    def tick(self, samples: int = SAMPLES_PER_FRAME) -> None:
        """Advance a T.38 session's clock (sends paced packets and runs T.30 timers)."""
        if self._closed or self.transport is not Transport.T38:
            return
        self._dsp.fn("t38_terminal_send_timeout")(self._state, samples)

    def terminate(self) -> None:
        """End the session now (call gone): T.30 closes the file and reaches phase E."""
        if self._closed or self.finished:
            return
        self._dsp.fn("t30_terminate")(self._t30)
        if self._completion is None:
            self._completion = T30_ERR_CALLDROPPED

    def outcome(self) -> FaxOutcome:
        """The result so far (final once `finished`)."""
        code = T30_ERR_CALLDROPPED if self._completion is None else self._completion
        if not self._closed:
            self._last = self._dsp.statistics(self._t30)
        s = self._last
        pages = self._pages_seen
        if s is not None:
            pages = s.pages_rx if self.direction is Direction.RECEIVE else s.pages_tx
        ok = code == T30_ERR_OK
        return FaxOutcome(
            ok=ok,
            completion_code=code,
            reason=self._dsp.completion_reason(code),
            pages=pages,
            bit_rate=s.bit_rate if s else 0,
            ecm=bool(s.error_correcting_mode) if s else False,
            x_dpi=_dpi(s.x_resolution) if s else 0,
            y_dpi=_dpi(s.y_resolution) if s else 0,
            width=s.width if s else 0,
            length=s.length if s else 0,
            bad_rows=s.bad_rows if s else 0,
            longest_bad_row_run=s.longest_bad_row_run if s else 0,
            remote_id=self._remote_id if self._closed else self._dsp.remote_ident(self._t30),
            transport=self.transport.value,
            direction=self.direction.value,
            partial=not ok and pages > 0,
        )

    def close(self) -> FaxOutcome:
        """Terminate if needed, free the C state and return the final outcome."""
        if self._final is not None:
            return self._final
        self.terminate()
        self._remote_id = self._dsp.remote_ident(self._t30)
        final = self.outcome()
        self._closed = True
        free = "fax_free" if self.transport is Transport.AUDIO else "t38_terminal_free"
        self._dsp.fn(free)(self._state)
        self._state = None
        self._final = final
        return final

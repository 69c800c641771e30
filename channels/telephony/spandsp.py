"""ctypes binding of the parts of libspandsp 0.0.6 the fax channel uses.

Covers the audio fax terminal (T.30 over G.711, 16-bit PCM at 8 kHz), the T.38
terminal, the T.30 settings and phase B/D/E callbacks, transfer statistics,
completion-code names, the modem connect-tone (CNG) detector and SpanDSP's G.711
codec. Every function gets `argtypes`/`restype` (an undeclared pointer return
is truncated to 32 bits and the process dies later); struct layouts were
checked against the Debian `libspandsp-dev` 0.0.6 headers.

Nothing here is global: `SpanDsp.load()` returns an object holding the
library handle with its prototypes; sessions keep a reference to it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char_p,
    c_int,
    c_int16,
    c_uint8,
    c_uint16,
    c_void_p,
)
from typing import Any

from umsg.errors import TransientError

LIBRARY_NAMES = ("libspandsp.so.2", "spandsp")

# t4_rx.h: store received pages as T.6 (G4), the smallest lossless fax coding.
T4_COMPRESSION_ITU_T4_1D = 1
T4_COMPRESSION_ITU_T4_2D = 2
T4_COMPRESSION_ITU_T6 = 3

# t30.h
T30_ERR_OK = 0
T30_ERR_CALLDROPPED = 49
T30_MAX_IDENT_LEN = 20

# modem_connect_tones.h
MODEM_CONNECT_TONES_FAX_CNG = 1
MODEM_CONNECT_TONES_FAX_CED_OR_PREAMBLE = 7

# g711.h
G711_ALAW = 0
G711_ULAW = 1

# t38_terminal.h
T38_TERMINAL_OPTION_NO_PACING = 0x01

# t38_core.h packet categories (for t38_set_redundancy_control)
T38_PACKET_CATEGORY_INDICATOR = 0
T38_PACKET_CATEGORY_CONTROL_DATA = 1
T38_PACKET_CATEGORY_CONTROL_DATA_END = 2
T38_PACKET_CATEGORY_IMAGE_DATA = 3
T38_PACKET_CATEGORY_IMAGE_DATA_END = 4


class T30Stats(Structure):
    """t30_stats_t (t30.h); the rtp/rtn event fields are compiled out (#if 0) in 0.0.6."""

    _fields_ = [
        ("bit_rate", c_int),
        ("error_correcting_mode", c_int),
        ("pages_tx", c_int),
        ("pages_rx", c_int),
        ("pages_in_file", c_int),
        ("x_resolution", c_int),
        ("y_resolution", c_int),
        ("width", c_int),
        ("length", c_int),
        ("image_size", c_int),
        ("encoding", c_int),
        ("bad_rows", c_int),
        ("longest_bad_row_run", c_int),
        ("error_correcting_mode_retries", c_int),
        ("current_status", c_int),
    ]


# Callback types (t30.h, t38_core.h, super_tone_rx.h). Instances must stay referenced by
# their owner for as long as the C side may call them.
PHASE_B_HANDLER = CFUNCTYPE(c_int, c_void_p, c_void_p, c_int)
PHASE_D_HANDLER = CFUNCTYPE(c_int, c_void_p, c_void_p, c_int)
PHASE_E_HANDLER = CFUNCTYPE(None, c_void_p, c_void_p, c_int)
T38_TX_PACKET_HANDLER = CFUNCTYPE(c_int, c_void_p, c_void_p, POINTER(c_uint8), c_int, c_int)
TONE_REPORT_FUNC = CFUNCTYPE(None, c_void_p, c_int, c_int, c_int)

_P = c_void_p
_I16P = POINTER(c_int16)
_U8P = POINTER(c_uint8)

# name: (restype, argtypes)
_PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    # fax.h: audio terminal
    "fax_init": (_P, [_P, c_int]),
    "fax_free": (c_int, [_P]),
    "fax_get_t30_state": (_P, [_P]),
    "fax_rx": (c_int, [_P, _I16P, c_int]),
    "fax_tx": (c_int, [_P, _I16P, c_int]),
    "fax_set_transmit_on_idle": (None, [_P, c_int]),
    # t38_terminal.h / t38_core.h
    "t38_terminal_init": (_P, [_P, c_int, T38_TX_PACKET_HANDLER, _P]),
    "t38_terminal_free": (c_int, [_P]),
    "t38_terminal_get_t30_state": (_P, [_P]),
    "t38_terminal_get_t38_core_state": (_P, [_P]),
    "t38_terminal_send_timeout": (c_int, [_P, c_int]),
    "t38_terminal_set_config": (None, [_P, c_int]),
    "t38_core_rx_ifp_packet": (c_int, [_P, _U8P, c_int, c_uint16]),
    "t38_set_redundancy_control": (None, [_P, c_int, c_int]),
    # t30_api.h / t30.h / t30_logging.h
    "t30_set_tx_file": (None, [_P, c_char_p, c_int, c_int]),
    "t30_set_rx_file": (None, [_P, c_char_p, c_int]),
    "t30_set_rx_encoding": (c_int, [_P, c_int]),
    "t30_set_tx_ident": (c_int, [_P, c_char_p]),
    "t30_get_rx_ident": (c_char_p, [_P]),
    "t30_set_ecm_capability": (c_int, [_P, c_int]),
    "t30_set_phase_b_handler": (None, [_P, PHASE_B_HANDLER, _P]),
    "t30_set_phase_d_handler": (None, [_P, PHASE_D_HANDLER, _P]),
    "t30_set_phase_e_handler": (None, [_P, PHASE_E_HANDLER, _P]),
    "t30_get_transfer_statistics": (None, [_P, POINTER(T30Stats)]),
    "t30_completion_code_to_str": (c_char_p, [c_int]),
    "t30_terminate": (None, [_P]),
    "t30_call_active": (c_int, [_P]),
    # modem_connect_tones.h
    "modem_connect_tones_rx_init": (_P, [_P, c_int, TONE_REPORT_FUNC, _P]),
    "modem_connect_tones_rx": (c_int, [_P, _I16P, c_int]),
    "modem_connect_tones_rx_get": (c_int, [_P]),
    "modem_connect_tones_rx_free": (c_int, [_P]),
    # g711.h
    "g711_init": (_P, [_P, c_int]),
    "g711_free": (c_int, [_P]),
    "g711_decode": (c_int, [_P, _I16P, _U8P, c_int]),
    "g711_encode": (c_int, [_P, _U8P, _I16P, c_int]),
}


class SpanDsp:
    """The loaded library; attribute access returns the declared C functions."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        self._fns: dict[str, Any] = {}
        for name, (restype, argtypes) in _PROTOTYPES.items():
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = argtypes
            self._fns[name] = fn

    @classmethod
    def load(cls, path: str | None = None) -> SpanDsp:
        """Open libspandsp (Debian `libspandsp2`); TransientError when it is not installed."""
        candidates = [path] if path else [*LIBRARY_NAMES, ctypes.util.find_library("spandsp")]
        errors = []
        for name in candidates:
            if not name:
                continue
            try:
                return cls(ctypes.CDLL(name))
            except (OSError, AttributeError) as exc:
                errors.append(f"{name}: {exc}")
        raise TransientError("libspandsp 0.0.6 is not available (" + "; ".join(errors) + ")")

    def fn(self, name: str) -> Any:
        """The declared C function `name`."""
        return self._fns[name]

    def completion_reason(self, code: int) -> str:
        """SpanDSP's readable text for a T.30 completion code."""
        raw = self._fns["t30_completion_code_to_str"](int(code))
        return raw.decode("ascii", "replace") if raw else f"completion code {code}"

    def statistics(self, t30: int) -> T30Stats:
        stats = T30Stats()
        self._fns["t30_get_transfer_statistics"](t30, ctypes.byref(stats))
        return stats

    def remote_ident(self, t30: int) -> str:
        raw = self._fns["t30_get_rx_ident"](t30)
        return raw.decode("latin-1").strip() if raw else ""


def pcm_array(pcm: bytes) -> Any:
    """16-bit little-endian PCM bytes as a C int16 array (a copy; odd trailing byte dropped)."""
    n = len(pcm) // 2
    return (c_int16 * n).from_buffer_copy(pcm[: 2 * n])


class G711:
    """SpanDSP's G.711 codec (µ-law or A-law) for one direction of one call."""

    def __init__(self, dsp: SpanDsp, *, alaw: bool = False) -> None:
        self._dsp = dsp
        self._state = dsp.fn("g711_init")(None, G711_ALAW if alaw else G711_ULAW)
        if not self._state:
            raise TransientError("g711_init failed")

    def decode(self, data: bytes) -> bytes:
        """G.711 bytes → 16-bit little-endian PCM."""
        n = len(data)
        if n == 0:
            return b""
        src = (c_uint8 * n).from_buffer_copy(data)
        dst = (c_int16 * n)()
        got = self._dsp.fn("g711_decode")(self._state, dst, src, n)
        return bytes(dst)[: 2 * max(0, got)]

    def encode(self, pcm: bytes) -> bytes:
        """16-bit little-endian PCM → G.711 bytes."""
        src = pcm_array(pcm)
        n = len(src)
        if n == 0:
            return b""
        dst = (c_uint8 * n)()
        got = self._dsp.fn("g711_encode")(self._state, dst, src, n)
        return bytes(dst)[: max(0, got)]

    def close(self) -> None:
        if self._state:
            self._dsp.fn("g711_free")(self._state)
            self._state = None

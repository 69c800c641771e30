"""G.711 µ-law and A-law (ITU-T G.711) between 8-bit payloads and 16-bit little-endian PCM.

Table driven and numpy free: decoding maps each byte through a 256-entry table of 2-byte
samples; encoding maps the top 14 (µ-law) or 13 (A-law) bits of a sample through a prebuilt
byte table. The tables are immutable module constants computed once at import.
"""

from __future__ import annotations

import array
import sys

PCMU_PT, PCMA_PT = 0, 8
_BIAS = 0x84
_CLIP = 32635


def _ulaw_encode_sample(sample: int) -> int:
    sign = 0x80 if sample < 0 else 0
    mag = min(-sample if sample < 0 else sample, _CLIP) + _BIAS
    exponent = 7
    mask = 0x4000
    while exponent > 0 and not mag & mask:
        exponent -= 1
        mask >>= 1
    mantissa = (mag >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def _ulaw_decode_byte(code: int) -> int:
    code = ~code & 0xFF
    exponent = (code >> 4) & 0x07
    mag = (((code & 0x0F) << 3) + _BIAS) << exponent
    mag -= _BIAS
    return -mag if code & 0x80 else mag


def _alaw_encode_sample(sample: int) -> int:
    sign = 0x80 if sample >= 0 else 0
    mag = min(sample if sample >= 0 else -sample - 1, 32767) >> 3  # 13-bit magnitude
    if mag < 32:
        code = mag >> 1
    else:
        exponent = mag.bit_length() - 5
        code = (exponent << 4) | ((mag >> exponent) & 0x0F)
    return (sign | code) ^ 0x55


def _alaw_decode_byte(code: int) -> int:
    code ^= 0x55
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    mag = (mantissa << 4) + 8 if exponent == 0 else ((mantissa << 4) + 0x108) << (exponent - 1)
    return mag if code & 0x80 else -mag


def _pcm_table(decode: object) -> tuple[bytes, ...]:
    assert callable(decode)
    return tuple(int(decode(c)).to_bytes(2, "little", signed=True) for c in range(256))


_ULAW_DEC = _pcm_table(_ulaw_decode_byte)
_ALAW_DEC = _pcm_table(_alaw_decode_byte)
# Encoding tables indexed by the sample shifted right (µ-law: >>2, A-law: >>3), offset to unsigned.
_ULAW_ENC = bytes(_ulaw_encode_sample((i << 2) - 32768) for i in range(16384))
_ALAW_ENC = bytes(_alaw_encode_sample((i << 3) - 32768) for i in range(8192))


def _samples(pcm: bytes) -> array.array[int]:
    a = array.array("h")
    a.frombytes(pcm[: len(pcm) // 2 * 2])
    if sys.byteorder != "little":
        a.byteswap()
    return a


def ulaw_decode(payload: bytes) -> bytes:
    return b"".join([_ULAW_DEC[b] for b in payload])


def alaw_decode(payload: bytes) -> bytes:
    return b"".join([_ALAW_DEC[b] for b in payload])


def ulaw_encode(pcm: bytes) -> bytes:
    table = _ULAW_ENC
    return bytes([table[(s + 32768) >> 2] for s in _samples(pcm)])


def alaw_encode(pcm: bytes) -> bytes:
    table = _ALAW_ENC
    return bytes([table[(s + 32768) >> 3] for s in _samples(pcm)])


def decode(payload_type: int, payload: bytes) -> bytes:
    """PCM for a payload of static type 0 (PCMU) or 8 (PCMA)."""
    return ulaw_decode(payload) if payload_type == 0 else alaw_decode(payload)


def encode(payload_type: int, pcm: bytes) -> bytes:
    return ulaw_encode(pcm) if payload_type == 0 else alaw_encode(pcm)


def silence(payload_type: int, samples: int) -> bytes:
    return bytes([0xFF if payload_type == 0 else 0xD5]) * samples

"""Choosing an encoding for outgoing text, splitting it into parts, and decoding incoming bytes.

GSM-7 when every character fits (160 septets single, 153 per concatenated part),
UCS-2/UTF-16 otherwise (70 units single, 67 per part). A part never ends between
an escape and its character, nor between the two halves of a surrogate pair.
"""

from __future__ import annotations

from dataclasses import dataclass

from channels.sms import gsm

DC_DEFAULT = 0x00  # SMSC default alphabet: GSM 03.38 here
DC_IA5 = 0x01
DC_BINARY = 0x02
DC_LATIN1 = 0x03
DC_BINARY8 = 0x04
DC_UCS2 = 0x08

GSM_SINGLE, GSM_PART = 160, 153
UCS2_SINGLE_BYTES, UCS2_PART_BYTES = 140, 134


@dataclass(frozen=True)
class Encoded:
    """Text ready for the wire: its data_coding and the payload of each part (without UDH)."""

    data_coding: int
    parts: tuple[bytes, ...]
    whole: bytes


def encode_text(text: str, *, part_bytes_gsm: int = GSM_PART, part_bytes_ucs2: int = UCS2_PART_BYTES) -> Encoded:
    """Encode `text` and split it into as few parts as the chosen alphabet allows."""
    if gsm.fits(text):
        data = gsm.encode(text)
        if len(data) <= GSM_SINGLE:
            return Encoded(DC_DEFAULT, (data,), data)
        return Encoded(DC_DEFAULT, tuple(_split_gsm(data, part_bytes_gsm)), data)
    data = text.encode("utf-16-be")
    if len(data) <= UCS2_SINGLE_BYTES:
        return Encoded(DC_UCS2, (data,), data)
    return Encoded(DC_UCS2, tuple(_split_utf16(data, part_bytes_ucs2)), data)


def _split_gsm(data: bytes, size: int) -> list[bytes]:
    parts, start = [], 0
    while start < len(data):
        end = min(start + size, len(data))
        if end < len(data) and _ends_in_escape(data, start, end):
            end -= 1  # the escape goes with its character into the next part
        parts.append(data[start:end])
        start = end
    return parts


def _ends_in_escape(data: bytes, start: int, end: int) -> bool:
    # Count the run of escapes before `end`: an odd run means the last one is unpaired.
    run, i = 0, end - 1
    while i >= start and data[i] == gsm.ESCAPE:
        run += 1
        i -= 1
    return run % 2 == 1


def _split_utf16(data: bytes, size: int) -> list[bytes]:
    size -= size % 2
    parts, start = [], 0
    while start < len(data):
        end = min(start + size, len(data))
        if end < len(data) and 0xD8 <= data[end - 2] <= 0xDB:
            end -= 2  # a high surrogate stays with its low half
        parts.append(data[start:end])
        start = end
    return parts


def decode_text(data: bytes, data_coding: int) -> str:
    """Text from a message body of `data_coding`; undecodable bytes become U+FFFD, never an error."""
    alphabet = _alphabet(data_coding)
    if alphabet == "ucs2":
        if len(data) % 2:
            data = data[:-1]
        return data.decode("utf-16-be", "replace")
    if alphabet == "latin1":
        return data.decode("latin-1")
    if alphabet == "ascii":
        return data.decode("ascii", "replace")
    if alphabet == "binary":
        return data.decode("utf-8", "replace")
    return gsm.decode(data)


def _alphabet(dc: int) -> str:
    if dc in (DC_DEFAULT,):
        return "gsm"
    if dc == DC_IA5:
        return "ascii"
    if dc == DC_LATIN1:
        return "latin1"
    if dc == DC_UCS2:
        return "ucs2"
    if dc in (DC_BINARY, DC_BINARY8):
        return "binary"
    group = dc & 0xF0
    if group == 0xF0:  # message class group: bit 2 says 8-bit, else GSM
        return "binary" if dc & 0x04 else "gsm"
    if group in (0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70):  # general data coding groups
        return {0x00: "gsm", 0x04: "binary", 0x08: "ucs2"}.get(dc & 0x0C, "gsm")
    if group == 0xE0:
        return "ucs2"
    return "gsm"

"""GSM 03.38 default alphabet with its extension table, as SMPP carries it (one septet per octet).

Extension characters (€, [, ], {, }, \\, ~, ^, |, form feed) are an escape (0x1B) plus a
code: they cost two septets and must never be split from their escape.
"""

from __future__ import annotations

ESCAPE = 0x1B

BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
EXTENSION = {0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\", 0x3C: "[", 0x3D: "~",
             0x3E: "]", 0x40: "|", 0x65: "€"}

_ENCODE_BASIC = {ch: i for i, ch in enumerate(BASIC) if i != ESCAPE}
_ENCODE_EXT = {ch: code for code, ch in EXTENSION.items()}


def fits(text: str) -> bool:
    """Whether every character of `text` has a GSM 03.38 code."""
    return all(ch in _ENCODE_BASIC or ch in _ENCODE_EXT for ch in text)


def encode(text: str) -> bytes:
    """Unpacked septets; raises ValueError for a character outside the alphabet."""
    out = bytearray()
    for ch in text:
        code = _ENCODE_BASIC.get(ch)
        if code is not None:
            out.append(code)
            continue
        ext = _ENCODE_EXT.get(ch)
        if ext is None:
            raise ValueError(f"{ch!r} is not in the GSM 03.38 alphabet")
        out += bytes((ESCAPE, ext))
    return bytes(out)


def decode(data: bytes) -> str:
    """Text from unpacked septets; an unknown escape shows as a space (as handsets do)."""
    out: list[str] = []
    escaped = False
    for byte in data:
        code = byte & 0x7F
        if escaped:
            out.append(EXTENSION.get(code, " "))
            escaped = False
        elif code == ESCAPE:
            escaped = True
        else:
            out.append(BASIC[code])
    return "".join(out)

"""A small reader for Microsoft TNEF (`winmail.dat`, application/ms-tnef).

Outlook wraps attachments (and sometimes the whole body) in this container
when it sends "rich text" mail; customers' attachments are invisible until it
is unpacked. Only what an agent needs is read: each attachment's file name
(the MAPI long name when present, else the 8.3 title) and bytes, plus the
plain body. Anything malformed raises `TnefError`; the caller then keeps
`winmail.dat` itself as an ordinary attachment, so nothing is lost.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

SIGNATURE = 0x223E9F78
LVL_MESSAGE, LVL_ATTACHMENT = 1, 2
ATT_BODY = 0x800C
ATT_ATTACH_DATA = 0x800F
ATT_ATTACH_TITLE = 0x8010
ATT_ATTACH_REND_DATA = 0x9002
ATT_ATTACHMENT = 0x9005  # the attachment's MAPI properties
PR_ATTACH_LONG_FILENAME = 0x3707
PR_ATTACH_MIME_TAG = 0x370E
_FIXED = {0x0002: 4, 0x0003: 4, 0x0004: 4, 0x0005: 8, 0x0006: 8, 0x0007: 8, 0x000A: 4, 0x000B: 4,
          0x0014: 8, 0x0040: 8, 0x0048: 16}
_VARIABLE = {0x001E, 0x001F, 0x0102, 0x000D}
_MV = 0x1000


class TnefError(ValueError):
    """The bytes are not a TNEF stream we can read."""


@dataclass
class TnefAttachment:
    filename: str | None = None
    data: bytes = b""
    media_type: str | None = None


@dataclass
class Tnef:
    body: str | None = None
    attachments: list[TnefAttachment] = field(default_factory=list)


def _cstr(data: bytes) -> str:
    return data.split(b"\0", 1)[0].decode("cp1252", "replace")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise TnefError("truncated TNEF stream")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self) -> int:
        return int(struct.unpack("<H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def padded(self, n: int) -> bytes:
        out = self.take(n)
        self.take(-n % 4)
        return out


def _mapi_props(data: bytes) -> dict[int, str]:
    """The string MAPI properties of one property block, by property id."""
    r = _Reader(data)
    props: dict[int, str] = {}
    for _ in range(r.u32()):
        ptype, pid = r.u16(), r.u16()
        if pid >= 0x8000:  # a named property: skip its GUID and name
            r.take(16)
            if r.u32() == 0:
                r.u32()
            else:
                r.padded(r.u32())
        base = ptype & ~_MV
        count = r.u32() if ptype & _MV else 1
        for _ in range(count):
            if base in _FIXED:
                r.padded(_FIXED[base])
            elif base in _VARIABLE:
                # A single-valued variable property still carries a value count.
                for _ in range(1 if ptype & _MV else r.u32()):
                    value = r.padded(r.u32())
                    if base == 0x001F:
                        props.setdefault(pid, value.decode("utf-16-le", "replace").split("\0", 1)[0])
                    elif base == 0x001E:
                        props.setdefault(pid, _cstr(value))
            else:
                raise TnefError(f"unknown MAPI property type 0x{ptype:04x}")
    return props


def read_tnef(data: bytes) -> Tnef:
    """Unpack a TNEF stream into its body and attachments."""
    r = _Reader(data)
    if r.u32() != SIGNATURE:
        raise TnefError("not a TNEF stream (bad signature)")
    r.u16()  # the legacy key: no meaning for readers
    out = Tnef()
    current: TnefAttachment | None = None
    while r.pos < len(data):
        level = r.take(1)[0]
        attr = r.u32() & 0xFFFF
        payload = r.take(r.u32())
        r.u16()  # checksum: Outlook itself does not verify it
        if level == LVL_MESSAGE and attr == ATT_BODY:
            out.body = _cstr(payload)
        elif level != LVL_ATTACHMENT:
            continue
        elif attr == ATT_ATTACH_REND_DATA:
            current = TnefAttachment()
            out.attachments.append(current)
        elif current is None:
            raise TnefError("attachment data before its rendering record")
        elif attr == ATT_ATTACH_TITLE:
            current.filename = current.filename or _cstr(payload)
        elif attr == ATT_ATTACH_DATA:
            current.data = payload
        elif attr == ATT_ATTACHMENT:
            props = _mapi_props(payload)
            if PR_ATTACH_LONG_FILENAME in props:
                current.filename = props[PR_ATTACH_LONG_FILENAME] or current.filename
            if PR_ATTACH_MIME_TAG in props:
                current.media_type = props[PR_ATTACH_MIME_TAG] or None
    return out

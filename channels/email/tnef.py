"""Outlook's TNEF container (`winmail.dat`, application/ms-tnef), read with `tnefparse`.

Outlook wraps attachments, and often the only copy of the body, in this
container when it sends "rich text" mail. What an agent needs is taken out:
each attachment (name, bytes, media type, Content-ID for inline images) and
the body, as HTML (`PR_HTML`, or HTML that Outlook encapsulated in the RTF
body) and as text (`PR_BODY`, the legacy `attBody`, or text derived from
the RTF body, which `compressed_rtf` unpacks).

The attribute framing and the MAPI property decoding are `tnefparse`'s.
The loop over the attributes is ours, so that a damaged attribute costs
only itself (`TNEF()` reads the whole stream in its constructor and loses
everything on the first exception), and so are the few attachment fields
kept; property blocks are bounded before `decode_mapi` sees them, because
it trusts the counts in them (`_bounded`). Only a stream without the TNEF
signature raises `TnefError`; the caller keeps `winmail.dat` itself as a
part either way, so nothing is lost.
"""

from __future__ import annotations

import codecs
import re
import struct
from dataclasses import dataclass, field
from typing import Any

from compressed_rtf import decompress
from compressed_rtf.crc32 import crc32
from tnefparse import properties as mapi
from tnefparse.codepage import Codepage
from tnefparse.mapi import IMESSAGE_SIG, decode_mapi
from tnefparse.tnef import TNEF, TNEFObject

from channels.email.charset import decode_text

DEFAULT_CODEPAGE = "cp1252"  # what Outlook writes when a stream names none (Western Windows)
_FRAME = 11  # level (1) + attribute id and type (4) + length (4) + checksum (2)
_MULTI = 0x1000  # a multi-valued MAPI property type
# MAPI value sizes as decode_mapi steps over them; the other types it reads carry a length.
_VALUE_SIZE = {0x0002: 2, 0x000B: 2, 0x0003: 4, 0x0004: 4, 0x000A: 4, 0x0005: 8, 0x0006: 8, 0x0007: 8,
               0x0014: 8, 0x0040: 8, 0x0048: 16}
_LENGTH_PREFIXED = frozenset({0x0000, 0x000D, 0x001E, 0x001F, 0x0102})
# Windows code pages that tnefparse's Codepage does not map to a Python codec.
_CODEPAGES = {50220: "iso2022_jp", 50221: "iso2022_jp", 50222: "iso2022_jp", 51932: "euc_jp",
              51949: "euc_kr", 54936: "gb18030", 65000: "utf-7", 21866: "koi8_u", 10000: "mac_roman",
              **{28590 + n: f"iso8859_{n}" for n in range(2, 16)}}


class TnefError(ValueError):
    """The bytes are not a TNEF stream (no signature): nothing in them can be read."""


@dataclass
class TnefAttachment:
    filename: str | None = None
    data: bytes = b""
    media_type: str | None = None
    content_id: str | None = None


@dataclass
class Tnef:
    text: str | None = None
    html: str | None = None
    attachments: list[TnefAttachment] = field(default_factory=list)
    guessed: list[str] = field(default_factory=list)  # bodies whose charset is a best guess
    problems: list[str] = field(default_factory=list)  # what was damaged and skipped


@dataclass(frozen=True)
class RtfBody:
    """An RTF body read back: `html` when it encapsulates HTML (`\\fromhtml1`), else `text`."""

    html: str | None = None
    text: str | None = None


def _codec(codepage: Any) -> str | None:
    """The Python codec for a Windows code page number, or None when there is none."""
    if not isinstance(codepage, int) or isinstance(codepage, bool) or codepage <= 0:
        return None
    name = _CODEPAGES.get(codepage) or Codepage(codepage).best_guess()
    try:
        return codecs.lookup(str(name)).name if name else None
    except LookupError:
        return None


def _bounded(block: bytes) -> bytes:
    """A MAPI property block with its property count cut to the properties its bytes can hold.

    `decode_mapi` loops as often as the counts in the data say, past the end
    of the data: a property count of 0xFFFFFFFF, or a multi-valued fixed-size
    property claiming a billion values, keeps it busy for hours or fills the
    memory. This walk steps through the block as `decode_mapi` does and stops
    before the first property that cannot be there; a last property that is
    merely cut short is left in, and `decode_mapi` reads what there is of it.
    """
    if len(block) < 4:
        return block
    count, pos, whole = struct.unpack_from("<I", block)[0], 4, 0
    try:
        while whole < count and pos < len(block):
            ptype, pid = struct.unpack_from("<HH", block, pos)
            pos += 4
            if pid >= 0x8000:  # a named property: GUID, kind, then a number or a padded name
                kind = struct.unpack_from("<I", block, pos + 16)[0]
                pos += 20
                pos += 4 if kind == 0 else 4 + _padded(struct.unpack_from("<I", block, pos)[0])
            values, counted = 1, True
            if ptype & _MULTI:
                ptype ^= _MULTI
                declared = struct.unpack_from("<I", block, pos)[0]
                pos += 4
                # decode_mapi reads one value for a count of 0, and a value count with it
                values, counted = declared or 1, declared == 0
            if ptype in _VALUE_SIZE:
                size = _VALUE_SIZE[ptype] * values + (2 if _VALUE_SIZE[ptype] == 2 and values % 2 else 0)
                if values > 1 and pos + size > len(block):
                    break  # the one loop in decode_mapi that does not run out of bytes by itself
                pos += size
            elif ptype in _LENGTH_PREFIXED:
                if counted:
                    values = struct.unpack_from("<I", block, pos)[0]
                    pos += 4
                for _ in range(values):  # each value reads a 4-byte length, or raises: bounded by the block
                    pos += 4 + _padded(struct.unpack_from("<I", block, pos)[0])
            else:
                break  # decode_mapi stops at a type it does not know
            whole += 1
    except struct.error:
        whole += 1  # this property runs off the end; decode_mapi reads what there is of it, then stops
    return block if whole >= count else struct.pack("<I", whole) + block[4:]


def _padded(length: int) -> int:
    return -(-length // 4) * 4


def read_tnef(data: bytes) -> Tnef:
    """Unpack a TNEF stream into its bodies and attachments, skipping what is damaged."""
    if len(data) < 6 or struct.unpack_from("<I", data)[0] != TNEF.TNEF_SIGNATURE:
        raise TnefError("not a TNEF stream (bad signature)")
    reader = _Reader()
    offset = 6  # signature and legacy key
    while offset + _FRAME <= len(data):
        end = offset + _FRAME + struct.unpack_from("<I", data, offset + 5)[0]
        if end > len(data):
            reader.problems.append(f"attribute at byte {offset} is cut short ({end - len(data)} bytes missing)")
        # One attribute's bytes only: slicing the rest of the stream for each one, as TNEF() does,
        # is quadratic in the number of attributes.
        obj = TNEFObject(data[offset:end], do_checksum=False)  # Outlook ignores checksums too
        try:
            reader.take(obj)
        except Exception as exc:  # noqa: BLE001 - tnefparse states no exceptions; one attribute is lost
            reader.problems.append(f"attribute 0x{obj.name:04x} at byte {offset}: {exc!r}")
        offset = end
    if 0 < len(data) - offset < _FRAME:
        reader.problems.append(f"{len(data) - offset} stray bytes at the end")
    return reader.finish()


# MAPI properties read from an attachment's property block, by what they become.
_ATTACHMENT_PROPS = {
    mapi.MAPI_ATTACH_LONG_FILENAME: "long", mapi.MAPI_ATTACH_FILENAME: "short", mapi.MAPI_DISPLAY_NAME: "display",
    mapi.MAPI_ATTACH_MIME_TAG: "media_type", mapi.MAPI_ATTACH_CONTENT_ID: "content_id",
    mapi.MAPI_ATTACH_DATA_OBJ: "data",
}


class _Attachment:
    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.data = b""
        self.embedded = False

    def result(self) -> TnefAttachment:
        # As tnefparse's long_filename() picks on well-formed streams: the MAPI long name, else the
        # MAPI 8.3 name, else attAttachTitle, else the display name.
        name = next((self.fields[k] for k in ("long", "short", "title", "display") if k in self.fields), None)
        # An attached Outlook message is a TNEF stream of its own.
        media = "application/ms-tnef" if self.embedded else self.fields.get("media_type")
        cid = self.fields.get("content_id", "").strip("<>") or None
        return TnefAttachment(name, self.data, media, cid)


class _Reader:
    """The state of one stream, fed attribute by attribute.

    Attachment records are ours rather than tnefparse's `TNEFAttachment`,
    whose `add_attr` reads an attached message with a whole `TNEF()` and an
    unbounded `decode_mapi` (see `_bounded`).
    """

    def __init__(self) -> None:
        self.codepage = DEFAULT_CODEPAGE
        self.internet_codepage: str | None = None
        self.body: Any = None
        self.html: Any = None
        self.rtf: bytes | None = None
        self.attachments: list[_Attachment] = []
        self.problems: list[str] = []

    def take(self, obj: Any) -> None:
        if obj.name == TNEF.ATTATTACHRENDDATA or (obj.level == TNEF.LVL_ATTACHMENT and not self.attachments):
            self.attachments.append(_Attachment())
        if obj.level == TNEF.LVL_ATTACHMENT:
            att = self.attachments[-1]
            if obj.name == TNEF.ATTATTACHTITLE:
                title = bytes(obj.data).split(b"\0", 1)[0].decode(self.codepage, "replace").strip()
                if title:
                    att.fields["title"] = title
            elif obj.name == TNEF.ATTATTACHDATA:
                att.data = bytes(obj.data)
            elif obj.name == TNEF.ATTATTACHMENT:
                self._attachment_props(att, decode_mapi(_bounded(obj.data), self.codepage))
        elif obj.name == TNEF.ATTMAPIPROPS:
            self._message_props(decode_mapi(_bounded(obj.data), self.codepage))
        elif obj.name == TNEF.ATTBODY:
            self.body = obj.data
        elif obj.name == TNEF.ATTOEMCODEPAGE:
            self.codepage = _codec(struct.unpack_from("<I", obj.data)[0]) or DEFAULT_CODEPAGE

    def _attachment_props(self, att: _Attachment, props: list[Any]) -> None:
        for prop in props:
            key = _ATTACHMENT_PROPS.get(prop.name)
            if key is None:
                continue
            try:
                value = prop.data
                if key == "data" and isinstance(value, bytes):
                    att.embedded = value.startswith(IMESSAGE_SIG)
                    att.data = value[len(IMESSAGE_SIG) :] if att.embedded else value
                elif isinstance(value, str) and value.strip():
                    att.fields[key] = value.strip()
            except Exception as exc:  # noqa: BLE001 - one damaged property, the others still count
                self.problems.append(f"attachment property 0x{prop.name:04x}: {exc!r}")

    def _message_props(self, props: list[Any]) -> None:
        for prop in props:
            try:
                if prop.name == mapi.MAPI_INTERNET_CODEPAGE:
                    self.internet_codepage = _codec(prop.data)
                elif prop.name in (mapi.MAPI_BODY, mapi.MAPI_UNCOMPRESSED_BODY):
                    self.body = prop.data
                elif prop.name == mapi.MAPI_BODY_HTML:
                    self.html = prop.data
                elif prop.name == mapi.MAPI_RTF_COMPRESSED:
                    # raw_data, not data: tnefparse strips trailing NULs from binary values, and the
                    # compressed stream's own header says where it ends.
                    blob = b"".join(prop.raw_data)
                    self.rtf = blob[: struct.unpack_from("<I", blob)[0] + 4] if len(blob) >= 4 else blob
            except Exception as exc:  # noqa: BLE001 - one damaged property, the others still count
                self.problems.append(f"MAPI property 0x{prop.name:04x}: {exc!r}")

    def _decode(self, value: Any, what: str, out: Tnef) -> str | None:
        if isinstance(value, bytes):
            decoded = decode_text(value.rstrip(b"\0"), self.internet_codepage or self.codepage)
            if decoded.guessed:
                out.guessed.append(f"TNEF {what} read as {decoded.charset}")
            value = decoded.text
        if not isinstance(value, str):
            return None
        value = value.strip("\0")
        return value if value.strip() else None

    def finish(self) -> Tnef:
        out = Tnef(attachments=[att.result() for att in self.attachments], problems=self.problems)
        out.text = self._decode(self.body, "text body", out)
        out.html = self._decode(self.html, "HTML body", out)
        if self.rtf is not None and (out.html is None or out.text is None):
            # The RTF body is Outlook's rendering of the same message: it fills only what is missing.
            rtf = _decompress_rtf(self.rtf, out.problems)
            body = read_rtf(rtf) if rtf else RtfBody()
            out.html = out.html or body.html
            out.text = out.text or body.text
        return out


def _decompress_rtf(blob: bytes, problems: list[str]) -> bytes | None:
    try:
        return bytes(decompress(blob))
    except Exception as exc:  # noqa: BLE001 - compressed_rtf raises bare Exception for every fault
        problems.append(f"compressed RTF body: {exc}")
    if len(blob) <= 16 or blob[8:12] != b"LZFu":
        return None
    # A failed CRC means some bytes are wrong, not that all are: read the rest anyway.
    try:
        return bytes(decompress(blob[:12] + struct.pack("<I", crc32(blob[16:])) + blob[16:]))
    except Exception:  # noqa: BLE001
        return None


# -- RTF ---------------------------------------------------------------------------------------

_TOKEN = re.compile(
    rb"\\([a-zA-Z]{1,32})(-?\d{1,10})? ?"  # control word, its parameter and delimiting space
    rb"|\\'([0-9a-fA-F]{2})"  # a byte in the document's code page
    rb"|\\([^a-zA-Z'])"  # control symbol (\{ \} \\ \~ \* and a backslash-newline paragraph)
    rb"|([{}])"
    rb"|[\r\n]+"  # line breaks in RTF source are not text
    rb"|([^\\{}\r\n]+)"
    rb"|\\'?",  # a lone backslash or a broken \' escape: nothing
    re.S)
# Destinations whose text is not the message's: tables, metadata, pictures, field codes.
_SKIPPED = frozenset({
    "fonttbl", "colortbl", "stylesheet", "info", "pict", "object", "fldinst", "header", "footer",
    "headerl", "headerr", "headerf", "footerl", "footerr", "footerf", "themedata", "colorschememapping",
    "datastore", "latentstyles", "listtable", "listoverridetable", "rsidtbl", "xmlnstbl", "generator",
    "filetbl", "revtbl", "pgdsctbl", "nonshppict", "mmathPr",
})
_WORD_TEXT = {
    "par": "\n", "line": "\n", "sect": "\n", "page": "\n", "row": "\n", "tab": "\t", "cell": "\t",
    "emdash": "\u2014", "endash": "\u2013", "bullet": "\u2022", "lquote": "\u2018", "rquote": "\u2019",
    "ldblquote": "\u201c", "rdblquote": "\u201d", "emspace": " ", "enspace": " ", "qmspace": " ",
}
_SYMBOL_TEXT = {b"\\": "\\", b"{": "{", b"}": "}", b"~": "\u00a0", b"_": "\u2011", b"\n": "\n", b"\r": "\n"}


class _Text:
    """Output that gathers code-page bytes and UTF-16 units, so multibyte characters decode whole."""

    def __init__(self) -> None:
        self.codec = DEFAULT_CODEPAGE
        self.parts: list[str] = []
        self.raw = bytearray()
        self.units: list[int] = []

    def flush(self) -> None:
        if self.raw:
            self.parts.append(bytes(self.raw).decode(self.codec, "replace"))
            self.raw.clear()
        if self.units:
            packed = struct.pack(f"<{len(self.units)}H", *self.units)
            self.parts.append(packed.decode("utf-16-le", "replace"))
            self.units.clear()

    def add_bytes(self, data: bytes) -> None:
        if not data:
            return  # nothing to add, and a pending surrogate pair must not be split
        if self.units:
            self.flush()
        self.raw += data

    def add_unit(self, unit: int) -> None:
        if self.raw:
            self.flush()
        self.units.append(unit)

    def add(self, text: str) -> None:
        self.flush()
        self.parts.append(text)

    def value(self) -> str | None:
        self.flush()
        out = "".join(self.parts).strip()
        return out or None


def read_rtf(rtf: bytes) -> RtfBody:
    """The HTML an RTF body encapsulates ([MS-OXRTFEX]), or else its plain text.

    Bytes (`\\'hh` and 8-bit text) are decoded with the document's `\\ansicpgN`
    code page, cp1252 when it names none or one Python lacks (RTF's `\\ansi`
    default, and what Outlook writes on Western Windows). Per-font
    `\\fcharsetN` code pages are not followed: Outlook writes characters
    outside the document code page as `\\uN`, which are exact. Formatting is
    dropped; paragraphs become line breaks.
    """
    out = _Text()
    html = False
    # Per group: skipped destination, inside \htmlrtf, inside {\*\htmltag}, \uc fallback length.
    skip, htmlrtf, htmltag, uc = False, False, False, 1
    stack: list[tuple[bool, bool, bool, int]] = []
    star = False  # the group began with \*: an optional destination, skipped unless we know it
    fallback = 0  # characters still to drop after a \uN
    pos = 0
    while pos < len(rtf):
        m = _TOKEN.match(rtf, pos)
        assert m is not None  # the last alternative matches any backslash; the others, all else
        pos = m.end()
        word, param, hexbyte, symbol, brace, run = m.groups()
        emit = not skip and (htmltag or not htmlrtf)
        if brace is not None:
            fallback, star = 0, False
            if brace == b"{":
                stack.append((skip, htmlrtf, htmltag, uc))
            elif stack:
                skip, htmlrtf, htmltag, uc = stack.pop()
                if not stack:
                    break  # the document's group is closed; Outlook pads what follows with NULs
        elif word is not None:
            name = word.decode("ascii")
            number = int(param) if param is not None else None
            if star:
                star = False
                if name == "htmltag" and html:
                    htmltag = True
                else:
                    skip = True
            elif name in _SKIPPED:
                skip = True
            elif name == "bin":
                pos += max(number or 0, 0)  # binary data: never text
            elif name == "fromhtml":
                html = True
            elif name == "htmlrtf":
                htmlrtf = number != 0
            elif name == "ansicpg":
                out.flush()
                out.codec = _codec(number) or DEFAULT_CODEPAGE
            elif name == "uc":
                uc = max(number or 0, 0)
            elif name == "u" and number is not None:
                if emit:
                    out.add_unit(number % 0x10000)
                fallback = uc
            elif name in _WORD_TEXT and emit:
                out.add(_WORD_TEXT[name])
        elif symbol is not None:
            if symbol == b"*":
                star = True
            elif symbol in _SYMBOL_TEXT and emit:
                out.add(_SYMBOL_TEXT[symbol])
        elif hexbyte is not None:
            if fallback:
                fallback -= 1
            elif emit:
                out.add_bytes(bytes([int(hexbyte, 16)]))
        elif run is not None:
            dropped = min(fallback, len(run))
            fallback -= dropped
            if emit:
                out.add_bytes(run[dropped:])
    value = out.value()
    return RtfBody(html=value) if html else RtfBody(text=value)

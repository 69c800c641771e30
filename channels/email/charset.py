"""Decoding mail text whose declared charset is often wrong.

Mail clients label text with the narrowest charset name they know and then
write characters outside it: GBK text labelled gb2312, Windows-1252 quotes
labelled iso-8859-1, cp949 labelled euc-kr. Decoding strictly by the label
fails (or, in the stdlib's lenient path, silently turns characters into
U+FFFD), so a label is first widened to the superset real senders use, then
decoded strictly; only when that fails is the charset detected, and the
result is flagged so an agent knows the text is a best guess. The raw bytes
are kept elsewhere, so nothing decided here loses data.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from charset_normalizer import from_bytes

# Label as written -> the superset its senders actually use.
ALIASES: dict[str, str] = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cp936": "gb18030",
    "euc-cn": "gb18030",
    "big5": "big5hkscs",
    "x-big5": "big5hkscs",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "euc-kr": "cp949",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "iso-2022-jp": "iso2022_jp_ext",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "iso-8859-9": "cp1254",
    "tis-620": "cp874",
    "windows-874": "cp874",
    "iso-8859-11": "cp874",
    "utf8": "utf-8",
    "unicode-1-1-utf-7": "utf-7",
}


@dataclass(frozen=True)
class Decoded:
    """Text plus how it was obtained; `guessed` means the label was missing, unknown or wrong."""

    text: str
    charset: str
    guessed: bool = False


def normalise_label(label: str | None) -> str | None:
    """The codec to try first for a declared charset, or None when the label names no codec."""
    if not label:
        return None
    name = label.strip().strip('"').lower()
    if not name.isascii() or not name.isprintable():
        return None  # a damaged label: codecs.lookup would raise on it, and it names nothing
    name = ALIASES.get(name, name)
    try:
        return codecs.lookup(name).name
    except (LookupError, ValueError):
        return None


def _single_byte(codec: str) -> bool:
    return codec.startswith(("cp125", "iso8859", "latin", "koi8", "mac-", "cp437", "cp850", "cp866", "cp874"))


def decode_text(data: bytes, label: str | None) -> Decoded:
    """Decode body bytes: widened label strictly, else UTF-8 strictly, else detection (flagged)."""
    codec = normalise_label(label)
    if codec is not None and _single_byte(codec) and not data.isascii():
        # Every byte string "decodes" in a single-byte charset, so a UTF-8 body labelled
        # latin-1 would come out as mojibake; valid multibyte UTF-8 is almost never accidental.
        try:
            return Decoded(data.decode("utf-8"), "utf-8", guessed=True)
        except UnicodeDecodeError:
            pass
    if codec is not None:
        try:
            return Decoded(data.decode(codec), codec)
        except (UnicodeDecodeError, LookupError):
            pass
    # Unlabelled 8-bit mail is nowadays nearly always UTF-8; it decodes strictly or not at all.
    try:
        return Decoded(data.decode("utf-8"), "utf-8", guessed=codec is not None and not data.isascii())
    except UnicodeDecodeError:
        pass
    best = from_bytes(data).best()
    if best is not None:
        return Decoded(str(best), best.encoding, guessed=True)
    # Nothing fits: cp1252-with-replacement keeps every byte visible as some character.
    return Decoded(data.decode(codec or "cp1252", errors="replace"), codec or "cp1252", guessed=True)

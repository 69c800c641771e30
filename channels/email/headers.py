"""Reading header values without the stdlib's lossy decoding.

`policy.default` decodes RFC 2047 words by their label alone, so a GBK
character in a word labelled gb2312 becomes U+FFFD, and raw UTF-8 headers
(RFC 6532) come back as surrogate escapes. Here every encoded word goes
through the widened charset table of `charset.py`, and raw 8-bit bytes are
decoded as UTF-8 (else detected). Header access never raises: a malformed
header is read as its raw text.
"""

from __future__ import annotations

import re
from email.header import decode_header
from email.message import Message
from email.utils import getaddresses, parseaddr

from channels.email.charset import decode_text

_FOLD = re.compile(r"\r?\n[ \t]*")
# Encoded words whose charset stdlib does not know make decode_header raise; we split them ourselves.
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")


def _from_surrogates(value: str) -> str:
    if not any("\udc80" <= ch <= "\udcff" for ch in value):
        return value
    return decode_text(value.encode("utf-8", "surrogateescape"), "utf-8").text


def decode_value(raw: str) -> str:
    """Decode one raw header value: unfold, RFC 2047 words through the alias table, 8-bit as UTF-8."""
    value = _FOLD.sub(" ", raw).strip()
    if "=?" not in value:
        return _from_surrogates(value)
    try:
        chunks = decode_header(value)
    except Exception:  # noqa: BLE001 - a header we cannot split is shown as written
        return _from_surrogates(value)
    out: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            out.append(_from_surrogates(chunk))
        else:
            out.append(decode_text(chunk, charset or "utf-8").text)
    return "".join(out)


def raw_values(msg: Message, name: str) -> list[str]:
    """Every raw value of header `name` (case-insensitive), in order."""
    low = name.lower()
    return [str(v) for k, v in msg.raw_items() if k.lower() == low]


def header_text(msg: Message, name: str) -> str | None:
    """The decoded first value of header `name`, or None."""
    values = raw_values(msg, name)
    return decode_value(values[0]) if values else None


def addresses(msg: Message, *names: str) -> list[tuple[str, str]]:
    """(display name, address) pairs from the named address headers, decoded, empty ones dropped."""
    raws = [decode_value(v) for n in names for v in raw_values(msg, n)]
    pairs = getaddresses(raws)
    return [(n.strip(), a.strip()) for n, a in pairs if a and "@" in a]


def first_address(msg: Message, name: str) -> tuple[str, str] | None:
    value = header_text(msg, name)
    if not value:
        return None
    display, addr = parseaddr(value)
    return (display.strip(), addr.strip()) if addr else None


_MSGID = re.compile(r"<([^<>\s]+)>")


def message_ids(value: str | None) -> list[str]:
    """Message-IDs in a header value (References, In-Reply-To), without angle brackets, in order."""
    if not value:
        return []
    found = _MSGID.findall(value)
    if not found and value.strip() and " " not in value.strip():
        found = [value.strip()]  # some clients omit the brackets
    return list(dict.fromkeys(found))

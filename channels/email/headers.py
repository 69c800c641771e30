"""Reading header values without the stdlib's lossy decoding, and addresses without forgery.

`policy.default` decodes RFC 2047 words by their label alone, so a GBK
character in a word labelled gb2312 becomes U+FFFD, and raw UTF-8 headers
(RFC 6532) come back as surrogate escapes. Here every encoded word goes
through the widened charset table of `charset.py`, and raw 8-bit bytes are
decoded as UTF-8 (else detected). Header access never raises: a malformed
header is read as its raw text.

Address headers are split into mailboxes on the raw, undecoded value (the
stdlib's RFC 5322 parser in `email.headerregistry`), and only then is each
display name decoded. Decoding first would let an encoded `<`, `,` or `@`
inside a name forge or split the address: `=?utf-8?q?Sales_=3Csales=40acme=2Eexample=3E?=
<attacker@evil.example>` is attacker@evil.example, and Outlook's encoded
"Müller, Hans" is one mailbox. A display name that shows an address other
than the real one is reported (`claimed`) so the inbox can warn the agent.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from email import errors, policy
from email.header import decode_header
from email.headerregistry import Address, AddressHeader
from email.message import Message
from email.utils import getaddresses
from typing import Any

from channels.email.charset import decode_text

_FOLD = re.compile(r"\r?\n[ \t]*")

# The patterns below are written to run in linear time on hostile input (no nested or
# adjacent quantifiers over the same characters): header values can be as long as the mail.

# A name-addr whose display name is not a valid phrase (an unquoted "@" or ","): the stdlib
# then reads the name as the address, so the bracketed address is taken as the real one.
_ANGLE = re.compile(r"(?P<name>[^<>]*)<(?P<addr>[^<>\s@]+@[^<>\s@]+)>(?:\s*\([^()]*\))?")
# One bare address word (no brackets, quotes or separators).
_ADDR_WORD = re.compile(r"[^<>\s@\"(),;:]+@[^<>\s@\"(),;:]+")
# What separates the words of a display name when looking for addresses in it.
_NAME_SEPARATORS = re.compile(r"[\s<>()\[\]\"',;:]+")

# The stdlib's RFC 5322 parser costs ~50 µs per word, and mail is parsed on the event loop
# when small: it reads values up to this length, and this many characters per header set;
# longer values are split by `getaddresses` (linear), still before any decoding.
FULL_PARSE_MAX = 1024
FULL_PARSE_BUDGET = 2048


@dataclass(frozen=True)
class Mailbox:
    """One address of an address header: decoded display name ('' when none) and the address."""

    name: str
    address: str

    @property
    def claimed(self) -> tuple[str, ...]:
        """Addresses the display name shows that are not the real one (lower-cased, in order)."""
        return shown_addresses(self.name, exclude=self.address)


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


def shown_addresses(name: str, *, exclude: str = "") -> tuple[str, ...]:
    """The email addresses a reader would see in display name `name`, except `exclude`.

    Compatibility forms (fullwidth "＠", "﹫") are folded and invisible format characters
    removed first, as a reader's eye would do it.
    """
    if not name:
        return ()
    text = "".join(ch for ch in unicodedata.normalize("NFKC", name) if unicodedata.category(ch) != "Cf")
    real = exclude.strip().lower()
    found: list[str] = []
    for word in _NAME_SEPARATORS.split(text):
        local, at, domain = word.strip(".").lower().partition("@")
        if at and local and "@" not in domain and "." in domain.strip(".") and f"{local}@{domain}" != real:
            found.append(f"{local}@{domain}")
    return tuple(dict.fromkeys(found))


def _name(raw: str) -> str:
    name = raw.strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return decode_value(name).strip()


def _rescue(value: str) -> Mailbox | None:
    """One mailbox from a value the RFC 5322 parser found defective, as a mail client would read it."""
    m = _ANGLE.fullmatch(value)
    if m is not None:
        return Mailbox(_name(m.group("name")), _from_surrogates(m.group("addr").strip()))
    if "<" in value or ">" in value:
        return None
    # No angle brackets at all ("Hans Mueller hans@example.de"): the last word is the address.
    words = value.rsplit(None, 1)
    if not words or _ADDR_WORD.fullmatch(words[-1]) is None:
        return None
    return Mailbox(_name(words[0]) if len(words) == 2 else "", _from_surrogates(words[-1]))


def _split_fast(value: str) -> list[Mailbox]:
    """Mailboxes of a value too long for the full parser: `getaddresses` on the raw text."""
    rescued = _rescue(value) if value.count("<") == 1 else None
    if rescued is not None:
        return [rescued]
    return [Mailbox(_name(n), _from_surrogates(a)) for n, a in _getaddresses(value)
            if _ADDR_WORD.fullmatch(a) is not None]


def _getaddresses(value: str) -> list[tuple[str, str]]:
    try:
        return getaddresses([value])
    except RecursionError:  # it recurses once per nested comment: "((((..." is a hostile header
        return []


def _bare(value: str) -> str:
    """`value` without comments and whitespace (quoted text kept): how an addr-spec is compared."""
    out: list[str] = []
    depth, quoted, escaped = 0, False, False
    for ch in value:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(ch)
        elif ch == "\\":
            escaped = True
            if depth == 0:
                out.append(ch)
        elif quoted:
            quoted = ch != '"'
            if not ch.isspace():
                out.append(ch)
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif depth == 0 and not ch.isspace():
            quoted = ch == '"'
            out.append(ch)
    return "".join(out)


def _literal(address: Address, bare: str) -> bool:
    """The address is written in the value (`bare`: its comments and whitespace removed).

    The parser decodes encoded words wherever it finds them, even inside a broken addr-spec
    ("=?..?=@=?..?=" becomes a decoded address): an address not written is not one.
    """
    spec = "".join(address.addr_spec.split())
    return bool(address.username and address.domain) and spec in bare


def mailboxes(raw: str, *, full: bool = True) -> list[Mailbox]:
    """The mailboxes of one raw address-header value (groups flattened); never raises.

    Split by the stdlib's RFC 5322 parser before any decoding. A value it finds
    defective, when it reads as one name and one address, is taken the way mail
    clients show it (the bracketed or the last address is the real one). Values
    longer than FULL_PARSE_MAX (or any, with `full=False`) take the linear split.
    """
    value = _FOLD.sub(" ", raw).strip()
    if not value:
        return []
    if not full or len(value) > FULL_PARSE_MAX:
        return _split_fast(value)
    try:
        header = policy.default.header_factory("to", value)
    except Exception:  # noqa: BLE001 - a header the parser cannot take is read by the fallback alone
        rescued = _rescue(value)
        return [rescued] if rescued is not None else []
    assert isinstance(header, AddressHeader)
    bare = _bare(value)
    found = [a for a in header.addresses if _literal(a, bare)]
    defects: tuple[errors.MessageDefect, ...] = getattr(header, "defects", ())  # BaseHeader's, untyped here
    defective = any(isinstance(d, (errors.InvalidHeaderDefect, errors.HeaderMissingRequiredValue)) for d in defects)
    if defective or len(found) != len(header.addresses):
        rescued = _rescue(value)
        if rescued is not None:
            return [rescued]
    # The stdlib decodes encoded words by their label alone; the raw name of the same mailbox
    # goes through our charset table instead. getaddresses on the raw value keeps words encoded.
    raw_names = [n for n, _ in _getaddresses(value)]
    paired = len(raw_names) == len(header.addresses)
    out: list[Mailbox] = []
    for i, a in enumerate(header.addresses):
        if not _literal(a, bare):
            continue
        name = _from_surrogates(a.display_name)
        if paired and ("=?" in raw_names[i] or not name):  # not name: a comment ("a@b (Name)") names it
            name = _name(raw_names[i])
        out.append(Mailbox(name.strip(), _from_surrogates(a.addr_spec)))
    return out


def header_mailboxes(msg: Message, *names: str) -> list[Mailbox]:
    """Every mailbox of the named headers (every occurrence of each), in order."""
    budget = FULL_PARSE_BUDGET  # many long headers must not add up to seconds of parsing
    out: list[Mailbox] = []
    for value in (v for n in names for v in raw_values(msg, n)):
        full = len(value) <= min(FULL_PARSE_MAX, budget)
        budget -= len(value) if full else 0
        out.extend(mailboxes(value, full=full))
    return out


def addresses(msg: Message, *names: str) -> list[tuple[str, str]]:
    """(display name, address) pairs from the named address headers, decoded, empty ones dropped."""
    return [(mb.name, mb.address) for mb in header_mailboxes(msg, *names)]


def first_address(msg: Message, name: str) -> Mailbox | None:
    """The first mailbox of the first header `name` that has one."""
    for value in raw_values(msg, name):
        found = mailboxes(value)
        if found:
            return found[0]
    return None


def sender_warning(msg: Message, sender: Mailbox) -> dict[str, Any] | None:
    """Why the inbox should warn about this sender, or None.

    The display name shows another address, or the From headers name several
    authors (only the first is the contact). The real address is what the
    message is stored under either way; the warning is what the agent sees.
    """
    shown = list(sender.claimed)
    others = [mb.address for mb in header_mailboxes(msg, "From") if mb.address.lower() != sender.address.lower()]
    reasons = []
    if shown:
        reasons.append("display_name_address")
    if others:
        reasons.append("several_from")
    if not reasons:
        return None
    return {
        "reasons": reasons,
        "address": sender.address,
        "display_name": sender.name,
        "claimed": list(dict.fromkeys(shown + [o.lower() for o in others])),
    }


_MSGID = re.compile(r"<([^<>\s]+)>")


def message_ids(value: str | None) -> list[str]:
    """Message-IDs in a header value (References, In-Reply-To), without angle brackets, in order."""
    if not value:
        return []
    found = _MSGID.findall(value)
    if not found and value.strip() and " " not in value.strip():
        found = [value.strip()]  # some clients omit the brackets
    return list(dict.fromkeys(found))

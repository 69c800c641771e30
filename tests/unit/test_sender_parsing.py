"""Sender and recipient addresses are split on the raw header, display names decoded afterwards.

A generated set of tricky display names (encoded `<` `>` `,` `@`, quotes, parentheses,
Chinese, fullwidth "＠") is written every way senders write them (RFC 2047 Q and B in UTF-8
and ISO-8859-1, the Outlook "Last, First" form, several encoded words, folded lines, quoted
strings, raw UTF-8 per RFC 6532, trailing comments), and each mail must keep the real address,
decode the name exactly, and flag the name only when it shows another address. A table covers
the odd shapes (groups, missing angle brackets, several From, unusable From), and hypothesis
throws arbitrary names at the parser. On the old code (decode first, split after) the
impersonation cases stored the forged address and Outlook's name bounced.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Callable
from email.utils import formataddr
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.email.headers import FULL_PARSE_BUDGET, FULL_PARSE_MAX, Mailbox, mailboxes, shown_addresses
from channels.email.parse import Envelope, to_inbound
from umsg.errors import PermanentError

REAL = "hans.mueller@example.de"

# (display name, the addresses a reader sees in it other than REAL)
NAMES: list[tuple[str, tuple[str, ...]]] = [
    ("Müller, Hans", ()),
    ("Sales <sales@acme.example>", ("sales@acme.example",)),
    ("sales@acme.example", ("sales@acme.example",)),
    ("Lee, Ann <ann@acme.example>, Bob <bob@acme.example>", ("ann@acme.example", "bob@acme.example")),
    ("Support; Billing: <billing@acme.example>", ("billing@acme.example",)),
    ("O'Brien (Support) > all", ()),
    ('Say "hi" to <Sales>', ()),
    ("张伟, 客服部", ()),
    ("客服 <service@acme.example>", ("service@acme.example",)),
    ("sales＠acme.example", ("sales@acme.example",)),  # fullwidth at sign: still reads as an address
    ("Hans <hans.mueller@example.de>", ()),  # the name shows the real address: nothing to warn about
    ("HANS.MUELLER@EXAMPLE.DE", ()),
    ("=?not?an encoded word", ()),
    ("Ünïcödé , x @ y", ()),  # an "@" between words is not an address
]


def _q(text: str, charset: str) -> str:
    # Outlook's Q form: letters and digits literal, space as "_", everything else =XX.
    out = []
    for byte in text.encode(charset):
        ch = chr(byte)
        if ch.isascii() and ch.isalnum():
            out.append(ch)
        elif ch == " ":
            out.append("_")
        else:
            out.append(f"={byte:02X}")
    return f"=?{charset}?Q?{''.join(out)}?="


def _b(text: str, charset: str) -> str:
    return f"=?{charset}?B?{base64.b64encode(text.encode(charset)).decode()}?="


def _split_b(text: str) -> str:
    # Two encoded words, split between characters, with the folding whitespace that joins them.
    half = len(text) // 2
    return f"{_b(text[:half], 'utf-8')}\r\n {_b(text[half:], 'utf-8')}" if half else _b(text, "utf-8")


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _latin1(text: str) -> bool:
    try:
        text.encode("iso-8859-1")
    except UnicodeEncodeError:
        return False
    return True


ENCODINGS: dict[str, tuple[Callable[[str], str], Callable[[str], bool]]] = {
    "q-utf8": (lambda t: _q(t, "utf-8"), lambda t: True),
    "b-utf8": (lambda t: _b(t, "utf-8"), lambda t: True),
    "q-latin1": (lambda t: _q(t, "iso-8859-1"), _latin1),
    "b-latin1": (lambda t: _b(t, "iso-8859-1"), _latin1),
    "two-words": (_split_b, lambda t: True),
    "quoted-rfc6532": (_quoted, lambda t: True),  # raw UTF-8 in a quoted string
}
SHAPES = {
    "angle": "From: {name} <{addr}>",
    "folded": "From: {name}\r\n\t<{addr}>",
    "comment": "From: {name} <{addr}> (via web form)",
}


def _mail(from_line: str, extra: str = "") -> bytes:
    head = f"{from_line}\r\nTo: support@acme.test\r\nSubject: hi\r\nMessage-ID: <{abs(hash(from_line))}@x>\r\n{extra}"
    return (head + "\r\nbody\r\n").encode("utf-8")


GENERATED = [
    pytest.param(name, claimed, enc, shape, id=f"{i}-{enc}-{shape}")
    for (i, (name, claimed)), enc, shape in itertools.product(enumerate(NAMES), ENCODINGS, SHAPES)
    if ENCODINGS[enc][1](name)
]


def test_the_generated_set_is_large() -> None:
    assert len(GENERATED) >= 200


@pytest.mark.parametrize(("name", "claimed", "encoding", "shape"), GENERATED)
def test_generated_header_keeps_the_real_address(name: str, claimed: tuple[str, ...], encoding: str,
                                                 shape: str) -> None:
    encode = ENCODINGS[encoding][0]
    inbound = to_inbound(_mail(SHAPES[shape].format(name=encode(name), addr=REAL)), channel="email")
    assert inbound.sender.value == REAL
    warning = inbound.meta.get("sender_warning")
    if claimed:
        assert warning is not None
        assert warning["reasons"] == ["display_name_address"]
        assert warning["address"] == REAL and warning["display_name"] == name
        assert tuple(warning["claimed"]) == claimed
        assert inbound.sender.name is None  # the contact is not named after the impersonated address
    else:
        assert warning is None
        assert inbound.sender.name == name


@pytest.mark.parametrize(
    ("header", "address", "name"),
    [
        # The findings of issue 16.
        ("=?utf-8?q?Sales_=3Csales=40acme=2Eexample=3E?= <attacker@evil.example>", "attacker@evil.example",
         "Sales <sales@acme.example>"),
        ("=?iso-8859-1?Q?M=FCller=2C_Hans?= <hans.mueller@example.de>", REAL, "Müller, Hans"),
        ("=?iso-8859-1?B?TfxsbGVyLCBIYW5z?= <hans.mueller@example.de>", REAL, "Müller, Hans"),
        ("=?windows-1252?Q?M=FCller=2C_Hans?= <hans.mueller@example.de>", REAL, "Müller, Hans"),
        # An encoded word in a quoted string (not allowed, decoded by every client anyway).
        ('"=?utf-8?q?x_=3Ca=40b=2Eexample=3E?=" <y@z.example>', "y@z.example", "x <a@b.example>"),
        # No angle brackets: the last word is the address.
        ("Hans Mueller hans@example.de", "hans@example.de", "Hans Mueller"),
        ("hans@example.de", "hans@example.de", ""),
        # The name in a comment.
        ("hans@example.de (Hans Müller)", "hans@example.de", "Hans Müller"),
        # An unquoted address as the name: the bracketed one is the real one, as clients show it.
        ("sales@acme.example <attacker@evil.example>", "attacker@evil.example", "sales@acme.example"),
        ("a@x.example b@y.example", "b@y.example", "a@x.example"),
        # An unquoted comma in a raw name (broken clients): one mailbox, not two.
        ("Müller, Hans <hans@example.de>", "hans@example.de", "Müller, Hans"),
        # GBK text labelled gb2312 in the name: decoded through the alias table, not to U+FFFD.
        ("=?gb2312?B?" + base64.b64encode("朱镕基".encode("gbk")).decode() + "?= <zhu@example.cn>",
         "zhu@example.cn", "朱镕基"),
        ("=?x-unknown?q?abc?= <a@b.example>", "a@b.example", "abc"),
        # RFC 6532: UTF-8 address and name, unquoted.
        ("Jörg Müller <jörg@example.de>", "jörg@example.de", "Jörg Müller"),
    ],
)
def test_table_of_sender_headers(header: str, address: str, name: str) -> None:
    inbound = to_inbound(_mail(f"From: {header}"), channel="email")
    assert inbound.sender.value == address
    warning = inbound.meta.get("sender_warning")
    shown = warning["display_name"] if warning else (inbound.sender.name or "")
    assert shown == name


def test_the_impersonation_is_flagged_and_outlook_is_not() -> None:
    forged = to_inbound(_mail("From: =?utf-8?q?Sales_=3Csales=40acme=2Eexample=3E?= <attacker@evil.example>"),
                        channel="email")
    assert forged.sender.value == "attacker@evil.example"
    assert forged.meta["sender_warning"] == {
        "reasons": ["display_name_address"], "address": "attacker@evil.example",
        "display_name": "Sales <sales@acme.example>", "claimed": ["sales@acme.example"],
    }
    outlook = to_inbound(_mail("From: =?iso-8859-1?Q?M=FCller=2C_Hans?= <hans.mueller@example.de>"),
                         channel="email")
    assert outlook.sender.value == REAL and outlook.sender.name == "Müller, Hans"
    assert "sender_warning" not in outlook.meta


def test_several_from_mailboxes_take_the_first_and_warn() -> None:
    inbound = to_inbound(_mail("From: a@x.example, =?utf-8?q?B=2C_b?= <b@y.example>"), channel="email")
    assert inbound.sender.value == "a@x.example"
    assert inbound.meta["sender_warning"]["reasons"] == ["several_from"]
    assert inbound.meta["sender_warning"]["claimed"] == ["b@y.example"]


def test_several_from_headers_take_the_first_and_warn() -> None:
    raw = _mail("From: First <first@x.example>", extra="From: Second <second@y.example>\r\n")
    inbound = to_inbound(raw, channel="email")
    assert inbound.sender.value == "first@x.example"
    assert inbound.meta["sender_warning"]["claimed"] == ["second@y.example"]


@pytest.mark.parametrize("from_line", ["From: undisclosed-recipients:;", "From: Foo <bar", "From: <>",
                                       "From: a@b@c", "From: =?utf-8?q?=3Cx=40y=2Ez=3E?="])
def test_an_unusable_from_falls_back_to_the_envelope_not_a_bounce(from_line: str) -> None:
    inbound = to_inbound(_mail(from_line), channel="email", envelope=Envelope(mail_from="bounce@example.org"))
    assert inbound.sender.value == "bounce@example.org"


def test_an_encoded_address_in_the_name_is_never_the_sender() -> None:
    # Only the name exists; decoding it first would have made x@y.z the sender.
    with pytest.raises(PermanentError):
        to_inbound(_mail("From: =?utf-8?q?=3Cx=40y=2Ez=3E?="), channel="email")


def test_group_syntax_and_encoded_commas_in_recipients() -> None:
    raw = (b"From: c@example.com\r\nTo: Team: =?utf-8?q?Lee=2C_Ann?= <ann@acme.test>, bob@acme.test;,"
           b" =?iso-8859-1?Q?M=FCller=2C_Hans?= <hans@acme.test>\r\nCc: undisclosed-recipients:;\r\n"
           b"Subject: x\r\n\r\nbody\r\n")
    inbound = to_inbound(raw, channel="email")
    assert inbound.recipients == ("ann@acme.test", "bob@acme.test", "hans@acme.test")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Team: a@x.example, B <b@y.example>;", [Mailbox("", "a@x.example"), Mailbox("B", "b@y.example")]),
        ("=?utf-8?q?a=2C_b?= <x@y.example>, c <d@e.example>",
         [Mailbox("a, b", "x@y.example"), Mailbox("c", "d@e.example")]),
        ("=?utf-8?q?a_=3Cv=40w=2Eexample=3E=2C_?= <x@y.example>", [Mailbox("a <v@w.example>,", "x@y.example")]),
        ("", []),
        ("undisclosed-recipients:;", []),
    ],
)
def test_mailboxes(raw: str, expected: list[Mailbox]) -> None:
    assert mailboxes(raw) == expected


def test_shown_addresses_ignores_invisible_characters() -> None:
    assert shown_addresses("sales@ac\u200bme.example", exclude="x@y.example") == ("sales@acme.example",)
    assert shown_addresses("Sales Team", exclude="x@y.example") == ()


_NAME_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=_NAME_TEXT)
def test_any_name_keeps_the_address_and_decodes_exactly(name: str) -> None:
    # formataddr quotes or encodes the name the standard way; the address must survive either.
    header = formataddr((name, REAL), charset="utf-8")
    found = mailboxes(header)
    assert [mb.address for mb in found] == [REAL]
    assert " ".join(found[0].name.split()) == " ".join(name.split())
    assert found[0].claimed == shown_addresses(name, exclude=REAL)


@settings(max_examples=400, deadline=None)
@given(value=st.text(min_size=0, max_size=80))
def test_arbitrary_values_never_raise(value: str) -> None:
    found: Any = mailboxes(value)
    assert all("@" in mb.address for mb in found)


@pytest.mark.parametrize("pad", [0, FULL_PARSE_MAX, 20 * FULL_PARSE_MAX])
def test_long_values_are_split_before_decoding_too(pad: int) -> None:
    # Past FULL_PARSE_MAX the linear split is used; it must be as safe as the full parser.
    filler = "x " * (pad // 2)
    forged = mailboxes(f"=?utf-8?q?Sales_=3Csales=40acme=2Eexample=3E?= {filler}<attacker@evil.example>")
    assert [(mb.address, mb.claimed) for mb in forged] == [("attacker@evil.example", ("sales@acme.example",))]
    unquoted = mailboxes(f"sales@acme.example {filler}<attacker@evil.example>")
    assert [mb.address for mb in unquoted] == ["attacker@evil.example"]
    outlook = mailboxes(f"=?iso-8859-1?Q?M=FCller=2C_Hans?= {filler}<{REAL}>")
    assert [mb.address for mb in outlook] == [REAL] and outlook[0].name.startswith("Müller, Hans")


def test_a_long_recipient_list_keeps_every_address() -> None:
    value = ", ".join(f"=?utf-8?q?Lee=2C_Ann_{i}?= <ann{i}@acme.test>" for i in range(300))
    assert len(value) > FULL_PARSE_MAX
    found = mailboxes(value)
    assert [mb.address for mb in found] == [f"ann{i}@acme.test" for i in range(300)]
    assert found[7].name == "Lee, Ann 7"


@pytest.mark.parametrize("depth", [10, 600, 5000])
def test_nested_comments_never_raise(depth: int) -> None:
    value = "a@b.example " + "(" * depth + ")" * depth
    found = mailboxes(value)
    assert found in ([], [Mailbox("", "a@b.example")])
    raw = _mail(f"From: {value}")
    assert to_inbound(raw, channel="email", envelope=Envelope(mail_from="e@f.example")).sender.value in (
        "a@b.example", "e@f.example")


def test_many_long_headers_share_one_full_parse_budget() -> None:
    # Thirty To headers of hostile words: all read (linear split past the budget), none lost.
    tos = "".join(f"To: {'w ' * 400}<r{i}@acme.test>\r\n" for i in range(30))
    inbound = to_inbound(_mail("From: c@example.com", extra=tos), channel="email")
    assert inbound.recipients == tuple(["support@acme.test"] + [f"r{i}@acme.test" for i in range(30)])
    assert FULL_PARSE_BUDGET < 30 * 800


# Pieces a hostile sender combines: encoded words hiding specials and addresses, specials, quotes.
_TOKENS = [
    "=?utf-8?q?Sales_=3Csales=40acme=2Eexample=3E?=", "=?utf-8?b?PHZpcEBiYW5rLmV4YW1wbGU+?=",
    "=?iso-8859-1?Q?M=FCller=2C_Hans?=", "=?utf-8?q?a=2C_b=40c=2Eexample?=", "=?gb2312?b?1tDOxA==?=",
    "<", ">", ",", ";", ":", "@", '"', "(", ")", "\\", ".", " ", "\r\n ", "x@y.example", "<z@w.example>",
    "name", "Jörg", "sales＠acme.example", "=?", "?=",
]


# What the encoded words above decode to, and no token writes literally.
_ONLY_DECODED = ("sales@acme.example", "vip@bank.example", "b@c.example", "müller", "中文", "<sales", "<vip")


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=st.lists(st.sampled_from(_TOKENS), min_size=1, max_size=12))
def test_no_address_is_ever_made_from_decoded_text(parts: list[str]) -> None:
    # Whatever the combination: the stored sender holds nothing that only decoding produces, and a
    # shown address other than it is flagged.
    value = "".join(parts)
    inbound = to_inbound(_mail(f"From: {value}"), channel="email", envelope=Envelope(mail_from="env@example.org"))
    sender = inbound.sender.value
    assert not [d for d in _ONLY_DECODED if d in sender.lower()], (value, sender)
    warning = inbound.meta.get("sender_warning")
    if warning is not None:
        assert warning["address"] == sender and warning["claimed"]
        assert sender.lower() not in warning["claimed"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # RFC 5322's own examples: comments and folding inside the address are not forgery.
        ("Pete(A wonderful \\) chap) <pete(his account)@silly.test(his host)>", [Mailbox("Pete", "pete@silly.test")]),
        ("John Doe <jdoe@machine(comment).  example>", [Mailbox("John Doe", "jdoe@machine.example")]),
        ('"john doe"@example.com, "a\\"b" <x@y.example>',
         [Mailbox("", '"john doe"@example.com'), Mailbox('a"b', "x@y.example")]),
        # An addr-spec the parser would assemble from decoded words is no address.
        ("=?utf-8?q?Sales_=3Csales=40acme=2Eexample=3E?=@=?utf-8?q?S?=<", []),
        ("=?utf-8?q?a=2C_b=40c=2Eexample?=\\", []),
    ],
)
def test_addresses_must_be_written_not_decoded(raw: str, expected: list[Mailbox]) -> None:
    assert mailboxes(raw) == expected

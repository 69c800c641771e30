"""Hostile HTML and MIME are bounded before any parser works on them (issue 16, bounded work per input).

The depth is measured on what nh3 gives back: it serialises its own tree, so the nesting of its
output is the depth html5ever built, whatever tricks the input played on the bounding pass.
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.email.parse import MAX_MIME_DEPTH, mime_depth, to_inbound
from channels.email.sanitize import sanitize
from converters.html_text import MAX_CHARS, MAX_DEPTH, SanitizedHtml, bound_html, html_to_text, sanitize_html
from umsg.errors import PermanentError

_VOID = {"br", "img", "hr", "input", "meta", "link", "area", "base", "col", "embed", "param", "source", "track",
         "wbr"}


class _Depth(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.depth = self.deepest = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _VOID:
            self.depth += 1
            self.deepest = max(self.deepest, self.depth)

    def handle_endtag(self, tag: str) -> None:
        self.depth -= 1


def depth_of(markup: str) -> int:
    parser = _Depth()
    parser.feed(markup)
    parser.close()
    return parser.deepest


def nested(n: int, inner: str = "deep") -> str:
    return "<div>" * n + inner + "</div>" * n


# Each tries to make html5ever nest deeper than the bounding pass counted.
TRICKS = {
    "plain": nested(20_000),
    "unclosed": "<div>" * 20_000 + "deep",
    "quote in an attribute name": "<div a'b>" + nested(5_000) + "'>deep",
    "end tags in comments": "<div><!-- </div> -->" * 5_000 + "deep",
    "end tags in attributes": '<div title="</div>">' * 5_000 + "deep",
    "self-closing syntax": "<div/>" * 5_000 + "deep",
    "stray end tags": "<div></span></p>" * 5_000 + "deep",
    "mixed elements": "<div><span><b><i><table><tr><td>" * 2_000 + "deep",
    "bogus comments": "<div></ x>" * 5_000 + "deep",
    "formatting": "<b><i><u><a href='https://x.example'>" * 3_000 + "deep",
    "uppercase": "<DIV>" * 5_000 + "deep" + "</DiV>" * 5_000,
}


@pytest.mark.parametrize("markup", list(TRICKS.values()), ids=list(TRICKS))
def test_what_the_sanitiser_builds_is_never_deeper_than_the_bound(markup: str) -> None:
    done = sanitize_html(markup)
    # html5ever adds implied elements (a tbody in each table) to what it was given: at most one per
    # element written, so its depth stays within twice the bound, and its work linear in the input.
    assert depth_of(done.html) <= 2 * MAX_DEPTH
    assert "deep" in done.html


def test_nested_divs_are_flattened_and_their_text_kept() -> None:
    bounded = bound_html("<p>Order 4711</p>" + nested(40_000))
    assert bounded.flattened == 40_000 - MAX_DEPTH
    assert depth_of(bounded.html) == MAX_DEPTH
    assert "Order 4711" in bounded.html and "deep" in bounded.html
    assert html_to_text(nested(40_000)) == "deep"


def test_markup_beyond_the_size_bound_is_not_read() -> None:
    markup = "<p>" + "a" * (MAX_CHARS + 10) + "</p>"
    bounded = bound_html(markup)
    assert bounded.truncated == len(markup) - MAX_CHARS
    assert len(bounded.html) <= MAX_CHARS + 10


def test_the_email_body_is_sanitised_once_and_marked_so() -> None:
    raw = (b"From: Eve <eve@example.com>\r\nTo: help@support.example\r\nSubject: divs\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>Order 4711</p>" + nested(10_000).encode())
    inbound = to_inbound(raw, channel="email")
    assert isinstance(inbound.html, SanitizedHtml)
    assert depth_of(inbound.html) <= MAX_DEPTH
    assert inbound.meta["html_bounded"]["flattened_tags"] == 10_000 - MAX_DEPTH
    assert inbound.raw == raw  # the original stays whole in the stored raw message


HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "<scr<script>ipt>alert(1)</script>",
    '<a href="javascript:alert(1)">x</a>',
    "<div a='<script>alert(1)</script>'>x</div>",
    "<svg><script>alert(1)</script></svg>",
    '<p title="x" onclick="alert(1)" style="background:url(javascript:alert(1))">x</p>',
    "<!--><script>alert(1)</script>-->",
    "<iframe srcdoc='<script>alert(1)</script>'></iframe>",
    '<math><mi xlink:href="javascript:alert(1)">x</mi></math>',
    "<<script>script>alert(1)<</script>/script>",
]


@pytest.mark.parametrize("markup", HOSTILE)
def test_the_bounding_pass_opens_no_way_around_the_sanitiser(markup: str) -> None:
    out = sanitize(markup).html.lower()
    assert "<script" not in out and "onerror" not in out and "onclick" not in out and "javascript:" not in out
    assert "<iframe" not in out and "srcdoc" not in out


def _nested_mime(levels: int) -> bytes:
    body = b"Content-Type: text/plain\r\n\r\nhello\r\n"
    for i in range(levels):
        b = b"b%d" % i
        body = (b'Content-Type: multipart/mixed; boundary="' + b + b'"\r\n\r\n--' + b + b"\r\n" + body
                + b"\r\n--" + b + b"--\r\n")
    return b"From: a@example.com\r\nTo: s@support.example\r\nSubject: deep\r\nMIME-Version: 1.0\r\n" + body


def _sibling_mime(parts: int) -> bytes:
    inner = b"".join(b'--outer\r\nContent-Type: multipart/alternative; boundary="in%d"\r\n\r\n--in%d\r\n'
                     b"Content-Type: text/plain\r\n\r\npart %d\r\n--in%d--\r\n" % (i, i, i, i) for i in range(parts))
    return (b"From: a@example.com\r\nTo: s@support.example\r\nSubject: wide\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n' + inner + b"--outer--\r\n")


def test_mime_depth_counts_nesting_not_parts() -> None:
    assert mime_depth(_nested_mime(10)) == 10
    assert mime_depth(_sibling_mime(300)) == 2
    assert mime_depth(b"From: a@example.com\r\n\r\nno parts") == 0
    inbound = to_inbound(_sibling_mime(300), channel="email")
    assert inbound.text is not None and "part 299" in inbound.text


def test_mime_nested_beyond_the_limit_is_refused_for_good() -> None:
    assert to_inbound(_nested_mime(MAX_MIME_DEPTH), channel="email").text == "hello\r\n"
    with pytest.raises(PermanentError, match="nested"):
        to_inbound(_nested_mime(1_000), channel="email")


# -- property: whatever the token soup, html5ever builds no deeper than the bound lets through ----------

_PIECES = ["<div>", "</div>", "<p>", "</p>", "<b>", "</b>", "<table>", "<tr>", "<td>", "</table>", "<span a='",
           "'>", '<i title="', '">', "<!--", "-->", "</", "<", ">", "<br/>", "<div/>", "<script>", "</script>",
           "<select>", "<option>", "<textarea>", "</textarea>", "<a href=x>", "</a>", "x", " ", "&lt;", "<svg>",
           "<math>", "<![CDATA[", "]]>", "<?x>", "<li>", "<ul>", "<frameset>", "<template>", "</template>"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=300))
def test_no_token_soup_gets_deeper_than_the_bound(pieces: list[str]) -> None:
    markup = "".join(pieces)
    bounded = bound_html(markup, max_depth=6)
    # Balanced as written. html5ever may nest deeper than that: implied elements (tbody) and formatting
    # elements it re-opens after closing them implicitly (at most one per element still open in the
    # markup) - a multiple of the bound, so its work stays linear in the input.
    assert depth_of(bounded.html) <= 6
    assert depth_of(sanitize_html(markup, max_depth=6).html) <= 3 * 6


def test_a_small_mail_of_many_parts_is_parsed_off_the_loop() -> None:
    from channels.email.settings import EmailSettings
    from channels.email.smtp_server import parses_inline

    settings = EmailSettings(domain="acme.test")

    def mail(parts: int) -> bytes:
        body = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\np%d\r\n" % i for i in range(parts))
        return (b"From: a@example.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
                + body + b"--b--\r\n")

    assert parses_inline(mail(10), settings)
    many = mail(1_500)
    assert len(many) < settings.parse_inline_bytes  # small, yet ~0.17 s of parsing: the worker's
    assert not parses_inline(many, settings)
    assert not parses_inline(b"From: a@example.com\r\n\r\n" + b"x" * (settings.parse_inline_bytes + 1), settings)

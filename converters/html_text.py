"""text/html → text/plain, and the bounds every HTML body passes before any parser sees it.

`html_to_text` is a readable plain-text rendering of an HTML body, used for
search, notifications, SMS answers and agents who prefer text. Scripts and
styles are dropped; block elements become line breaks; links keep their
target in brackets.

`bound_html` caps the size and nesting depth of markup in one linear pass.
HTML5 tree builders (html5ever under nh3, and so every sanitiser built on
it) check the stack of open elements on each tag, so deeply nested markup
costs them time quadratic in the depth: 40,000 nested `<div>` take ~10 s.
The pass re-serialises what it reads (attributes quoted anew, stray `<`
escaped, comments dropped), so the markup the sanitiser gets is balanced
and no deeper than the bound whatever the input's tricks; tags below the
bound are dropped and their text kept (flattened). `sanitize_html` is the
one sanitising pass: bound, then nh3, marked `SanitizedHtml` so the ingest
does not clean it a second time.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import ClassVar

import nh3

from converters.base import Converted, derived_filename
from umsg.errors import ConversionError

# Deeper than any real mail (nested layout tables reach a few dozen levels) and cheap for nh3:
# its cost per tag grows with the depth, so 2.6 MB of markup at this depth cleans in ~0.2 s.
MAX_DEPTH = 128
# Characters of markup read at all; the rest is cut (the stored raw message keeps it).
MAX_CHARS = 1024 * 1024

_BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre",
          "table", "ul", "ol", "hr", "section", "article", "header", "footer"}
_SKIP = {"script", "style", "head", "title", "template", "noscript"}
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "keygen", "link", "meta",
                   "param", "source", "track", "wbr"})
# Raw-text elements: nothing in them is shown by the sanitiser or the text rendering, so they go whole.
_RAW_END = {"script": re.compile(r"</script", re.I), "style": re.compile(r"</style", re.I)}
# One search per token: a comment opener, a bogus comment (doctype, `<?`, `</` not followed by a
# letter), a tag, or else a lone `<`. `<` is excluded outside quotes so a failed tag match stops at
# the next tag: no rescans, no quadratic worst case.
_TOKEN = re.compile(r"<(?:(!--)|([!?]|/(?![A-Za-z]))"
                    r"|(/?)([A-Za-z][^\t\n\f\r />\x00<]*)((?:[^>\"'<]|\"[^\"]*\"|'[^']*')*)>)?")
# A run of plain start tags (no attributes, whitespace between): below the depth bound a whole run is
# flattened at once, because one tag at a time is most of the cost of a hostile nest.
_START_RUN = re.compile(r"(?:<[A-Za-z][A-Za-z0-9]*>[\t\n\f\r ]*){2,}")
_START_NAME = re.compile(r"<([A-Za-z][A-Za-z0-9]*)>")
_ATTR = re.compile(r"""([^\t\n\f\r />"'=]+)(?:[\t\n\f\r ]*=[\t\n\f\r ]*(?:"([^"]*)"|'([^']*)'|([^\t\n\f\r >]+)))?""")
_ATTR_NAME = re.compile(r"[A-Za-z_:][-A-Za-z0-9_:.]*\Z")
# How far down the open elements an end tag looks for its start tag (the rest of it is dropped):
# a fixed window keeps mismatched markup linear.
_END_WINDOW = 32


class SanitizedHtml(str):
    """HTML already made safe by `sanitize_html` (bounded and allow-list cleaned): shown as it is.

    A type, not a flag in the message's facts, so a sender cannot claim it: only code does.
    """

    __slots__ = ()


@dataclass(frozen=True)
class BoundedHtml:
    """Markup within the bounds, and what was cut to get there."""

    html: str
    flattened: int  # tags below the depth bound dropped (their text kept)
    truncated: int  # characters beyond the size bound not read


def _tag(name: str, attrs: str) -> str:
    if not attrs.strip(" /"):
        return f"<{name}>"
    out = [name]
    for m in _ATTR.finditer(attrs):
        attr = m.group(1).lower()
        if not _ATTR_NAME.match(attr):
            continue  # no sanitiser keeps such a name; a stray quote or `<` must not shape the tag
        value = next((v for v in m.group(2, 3, 4) if v is not None), None)
        out.append(attr if value is None else f'{attr}="{value.replace(chr(34), "&quot;")}"')
    return "<" + " ".join(out) + ">"


def bound_html(markup: str, max_depth: int = MAX_DEPTH, max_chars: int = MAX_CHARS) -> BoundedHtml:
    """`markup` cut to `max_chars`, re-serialised balanced, with elements below `max_depth` flattened."""
    truncated = max(0, len(markup) - max_chars)
    src = markup
    if truncated:
        src = markup[:max_chars]
        cut = src.rfind("<")
        if cut > src.rfind(">"):
            src = src[:cut]  # a tag cut in half is dropped, as HTML5 drops a tag at the end of input
    out: list[str] = []
    # Open elements: name and whether it was written (False: flattened).
    stack: list[tuple[str, bool]] = []
    depth = flattened = pos = 0
    search = _TOKEN.search
    while (m := search(src, pos)) is not None:
        if m.start() > pos:
            out.append(src[pos : m.start()])
        comment, bogus, slash, name, attrs = m.groups()
        pos = m.end()
        if comment:
            close = src.find("-->", pos)
            pos = len(src) if close < 0 else close + 3  # an unclosed comment runs to the end, as in HTML5
            continue
        if bogus:
            close = src.find(">", pos)
            pos = len(src) if close < 0 else close + 1
            continue
        if name is None:
            out.append("&lt;")  # not a tag: text, and it must not become one downstream
            continue
        if depth >= max_depth and not slash and not attrs:
            run = _START_RUN.match(src, m.start())
            if run is not None:
                names = [n.lower() for n in _START_NAME.findall(src, m.start(), run.end())]
                if not any(n in _VOID or n in _RAW_END for n in names):
                    stack.extend((n, False) for n in names)
                    flattened += len(names)
                    if run.end() - m.start() > sum(len(n) + 2 for n in names):
                        out.append(" ")  # the whitespace between them, once
                    pos = run.end()
                    continue
        name = name.lower()
        if slash:
            for i in range(len(stack) - 1, max(0, len(stack) - _END_WINDOW) - 1, -1):
                if stack[i][0] == name:
                    for open_name, written in reversed(stack[i:]):
                        if written:
                            out.append(f"</{open_name}>")
                            depth -= 1
                    del stack[i:]
                    break
        elif name in _RAW_END:
            found = _RAW_END[name].search(src, pos)
            close = src.find(">", found.end()) if found else -1
            pos = len(src) if close < 0 else close + 1
        elif name in _VOID:
            out.append(_tag(name, attrs))
        elif depth < max_depth:
            out.append(_tag(name, attrs))
            stack.append((name, True))
            depth += 1
        else:
            stack.append((name, False))
            flattened += 1
    out.append(src[pos:])
    out.extend(f"</{name}>" for name, written in reversed(stack) if written)
    return BoundedHtml("".join(out), flattened, truncated)


AttributeFilter = Callable[[str, str, str], "str | None"]


@dataclass(frozen=True)
class Sanitized:
    """The one sanitising pass's result: safe HTML and what the bounds cut."""

    html: SanitizedHtml
    flattened: int
    truncated: int


def sanitize_html(markup: str, *, attribute_filter: AttributeFilter | None = None,
                  url_schemes: Iterable[str] | None = None, max_depth: int = MAX_DEPTH,
                  max_chars: int = MAX_CHARS) -> Sanitized:
    """Bound `markup`, then clean it with nh3's allow-list (`attribute_filter` sees each kept attribute)."""
    bounded = bound_html(markup, max_depth, max_chars)
    schemes = set(url_schemes) if url_schemes is not None else set(nh3.ALLOWED_URL_SCHEMES)
    cleaned = nh3.clean(bounded.html, attribute_filter=attribute_filter, url_schemes=schemes)
    return Sanitized(SanitizedHtml(cleaned), bounded.flattened, bounded.truncated)


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip += 1
        elif tag in _BLOCK:
            self.out.append("\n")
        if tag == "li":
            self.out.append("- ")
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP and self._skip:
            self._skip -= 1
        elif tag in _BLOCK:
            self.out.append("\n")
        if tag == "a" and self._href and self._href.startswith(("http:", "https:", "mailto:")):
            self.out.append(f" [{self._href}]")
            self._href = None

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.out.append(data)


def html_to_text(markup: str, max_depth: int = MAX_DEPTH, max_chars: int = MAX_CHARS) -> str:
    """A plain-text rendering of `markup`, read within the same bounds as the sanitiser's."""
    parser = _TextExtractor()
    parser.feed(bound_html(markup, max_depth, max_chars).html)
    parser.close()
    text = html.unescape("".join(parser.out)).replace("\xa0", " ")
    lines = [re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _decode(data: bytes) -> str:
    for enc in ("utf-8", "cp1252"):
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    raise ConversionError("HTML part is neither UTF-8 nor Windows-1252")


class HtmlToText:
    name: ClassVar[str] = "html-to-text"
    accepts: ClassVar[frozenset[str]] = frozenset({"text/html"})
    produces: ClassVar[str] = "text/plain"

    def convert(self, data: bytes, filename: str | None) -> Converted:
        text = html_to_text(_decode(data))
        return Converted(text.encode("utf-8"), "text/plain; charset=utf-8", derived_filename(filename, "txt"))

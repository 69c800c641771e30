"""text/html → text/plain: a readable plain-text rendering of an HTML body.

Used for search, notifications, SMS answers and agents who prefer text.
Scripts and styles are dropped; block elements become line breaks; links keep
their target in brackets.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from typing import ClassVar

from converters.base import Converted, derived_filename
from umsg.errors import ConversionError

_BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre",
          "table", "ul", "ol", "hr", "section", "article", "header", "footer"}
_SKIP = {"script", "style", "head", "title", "template", "noscript"}


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


def html_to_text(markup: str) -> str:
    parser = _TextExtractor()
    parser.feed(markup)
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

"""Converter registry and the HTML-to-text converter."""

from __future__ import annotations

import pytest

from converters.html_text import HtmlToText, html_to_text
from converters.registry import default_converters
from umsg.errors import ConfigError


def test_html_to_text_drops_scripts_and_keeps_structure() -> None:
    out = html_to_text("<html><head><style>p{}</style></head><body><p>One&nbsp;two</p>"
                       "<ul><li>a</li><li>b</li></ul><script>x()</script>"
                       "<a href='https://acme.test/x'>link</a></body></html>")
    assert out == "One two\n\n- a\n\n- b\n\nlink [https://acme.test/x]"


def test_converter_declares_types_and_converts_bytes() -> None:
    conv = HtmlToText()
    out = conv.convert("<p>Grüße</p>".encode(), "mail.html")
    assert out.data.decode() == "Grüße" and out.filename == "mail.txt"
    assert out.media_type.startswith("text/plain")


def test_registry_looks_up_by_media_type_and_refuses_unknown_names() -> None:
    reg = default_converters(["html-to-text"])
    assert [c.name for c in reg.for_media_type("text/html; charset=utf-8")] == ["html-to-text"]
    assert reg.for_media_type("image/png") == []
    with pytest.raises(ConfigError, match="did you mean 'html-to-text'"):
        default_converters(["html-to-txt"])

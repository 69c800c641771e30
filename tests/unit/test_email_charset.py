"""Charset handling of the email parser: the cases the stdlib gets wrong (HANDBOOK §5)."""

from __future__ import annotations

import base64

import pytest

from channels.email.charset import decode_text, normalise_label
from channels.email.headers import decode_value
from channels.email.parse import to_inbound


def _mail(body: bytes, charset: str, subject: str = "Hello", cte: str = "base64") -> bytes:
    if cte == "base64":
        payload = base64.encodebytes(body)
    else:
        payload = body
    head = (f"From: Customer <c@example.com>\r\nTo: support@acme.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <cs-{abs(hash((body, charset, subject)))}@example.com>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=\"{charset}\"\r\nContent-Transfer-Encoding: {cte}\r\n\r\n")
    return head.encode("ascii") + payload


def _word(text: str, charset: str, codec: str | None = None) -> str:
    return f"=?{charset}?B?{base64.b64encode(text.encode(codec or charset)).decode()}?="


@pytest.mark.parametrize(
    ("label", "text", "codec"),
    [
        # 镕 (U+9555) is in GBK but not in GB2312: senders label GBK text gb2312 anyway.
        ("gb2312", "朱镕基总理的来信", "gbk"),
        ("gbk", "您好，我的订单还没有到", "gbk"),
        # 嘅 is an HKSCS character outside plain Big5.
        ("big5", "你好嘅訂單", "big5hkscs"),
        ("big5", "繁體中文測試", "big5"),
        ("iso-2022-jp", "こんにちは、注文について", "iso-2022-jp"),
        ("shift_jis", "ご注文ありがとうございます①", "cp932"),
        ("ks_c_5601-1987", "안녕하세요 똠방각하", "cp949"),
        ("iso-8859-1", "Grüße – “quoted” €5", "cp1252"),
    ],
)
def test_labelled_text_comes_out_right(label: str, text: str, codec: str) -> None:
    raw = _mail(text.encode(codec), label, subject=_word(text, label, codec))
    inbound = to_inbound(raw, channel="email")
    assert inbound.text is not None and inbound.text.strip() == text
    assert inbound.subject == text
    assert "\ufffd" not in inbound.text
    assert "charset_guessed" not in inbound.meta
    assert inbound.raw == raw  # the original bytes are kept untouched


def test_the_stdlib_alone_would_lose_the_gbk_character() -> None:
    # The reason the alias table exists: decoding by the label loses 镕.
    assert "\ufffd" in "朱镕基".encode("gbk").decode("gb2312", errors="replace")
    assert decode_text("朱镕基".encode("gbk"), "gb2312").text == "朱镕基"


@pytest.mark.parametrize(
    ("label", "text", "codec"),
    [
        ("us-ascii", "Bonjour, ça va très bien, merci beaucoup", "utf-8"),  # UTF-8 labelled ASCII
        ("iso-8859-1", "Müller Straße — schöne Grüße", "utf-8"),  # UTF-8 labelled latin-1
        ("big5", "简体中文写的邮件内容，标签是错的", "utf-8"),
        ("gb2312", "Привет, как дела? Это тестовое сообщение о заказе.", "cp1251"),
        ("x-no-such-charset", "Привет, как дела? Это тестовое сообщение о заказе.", "cp1251"),
    ],
)
def test_a_wrong_label_is_detected_and_flagged(label: str, text: str, codec: str) -> None:
    inbound = to_inbound(_mail(text.encode(codec), label), channel="email")
    assert inbound.text is not None and inbound.text.strip() == text
    assert inbound.meta["charset_guessed"], "a guessed charset must be flagged for the agent"


def test_missing_label_utf8_is_not_flagged() -> None:
    decoded = decode_text("naïve café".encode(), None)
    assert decoded.text == "naïve café" and not decoded.guessed


def test_undecodable_bytes_never_raise() -> None:
    decoded = decode_text(bytes(range(128, 256)) * 3, "utf-8")
    assert decoded.guessed and decoded.text


def test_alias_table() -> None:
    assert normalise_label("GB2312") == "gb18030"
    assert normalise_label('"big5"') == "big5hkscs"
    assert normalise_label("ks_c_5601-1987") == "cp949"
    assert normalise_label("us-ascii") == "cp1252"
    assert normalise_label("unknown-8bit") is None


def test_raw_utf8_headers_rfc6532() -> None:
    raw = "From: Jörg Müller <jörg@example.de>\r\nSubject: Grüße aus Köln\r\n\r\nHallo\r\n".encode()
    inbound = to_inbound(raw, channel="email")
    assert inbound.subject == "Grüße aus Köln"
    assert inbound.sender.value == "jörg@example.de" and inbound.sender.name == "Jörg Müller"


def test_mixed_encoded_words() -> None:
    value = f"{_word('订单', 'gb2312', 'gbk')} and {_word('注文', 'iso-2022-jp')}"
    assert decode_value(value) == "订单 and 注文"

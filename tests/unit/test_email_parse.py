"""Parsing mail into Inbound: the corpus, bodies, HTML, attachments, TNEF and threading hints."""

from __future__ import annotations

import random
import struct
from email.message import EmailMessage
from pathlib import Path

import pytest

from channels.email.parse import Envelope, to_inbound
from channels.email.sanitize import cid_ref, sanitize
from channels.email.thread_hints import outbound_message_id
from channels.email.tnef import TnefError, read_tnef
from umsg.errors import PermanentError

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "email" / "imap_tools"
CORPUS_FILES = sorted(CORPUS.rglob("*.eml"))
DOMAIN = "acme.test"


def test_corpus_is_there() -> None:
    assert len(CORPUS_FILES) == 113


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: str(p.relative_to(CORPUS)))
def test_every_corpus_message_parses_or_is_refused_with_a_reason(path: Path) -> None:
    raw = path.read_bytes()
    try:
        inbound = to_inbound(raw, channel="email", own_domain=DOMAIN)
    except PermanentError as exc:
        assert str(exc), "a refusal must say why"
        return
    assert inbound.raw == raw
    assert inbound.sender.value and "@" in inbound.sender.value
    assert 0 < len(inbound.dedupe_key) <= 500
    assert inbound.text is not None or inbound.html is not None or inbound.parts or raw.strip()
    if inbound.html:
        assert "<script" not in inbound.html.lower()
        assert "onload=" not in inbound.html.lower() and "onclick=" not in inbound.html.lower()


def test_an_envelope_sender_rescues_a_message_without_from() -> None:
    raw = (CORPUS / "error_emails" / "bad_encoded_subject.eml").read_bytes()
    with pytest.raises(PermanentError, match="no sender"):
        to_inbound(raw, channel="email")
    envelope = Envelope("bounce@example.org", ("support@acme.test",))
    inbound = to_inbound(raw, channel="email", envelope=envelope)
    assert inbound.sender.value == "bounce@example.org"
    assert inbound.recipients == ("support@acme.test",)


def test_damaged_header_blocks_are_mended() -> None:
    raw = (CORPUS / "plain_emails" / "raw_email_incorrect_header.eml").read_bytes()
    inbound = to_inbound(raw, channel="email")
    assert inbound.sender.value == "xxx@xxx.xxx"
    assert inbound.subject and inbound.subject.startswith("Stop adware")


def _rich_mail() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Customer <c@example.com>"
    msg["To"] = "support@acme.test"
    msg["Subject"] = "Broken lamp"
    msg["Message-ID"] = "<rich-1@example.com>"
    msg.set_content("The lamp arrived broken.")
    msg.add_alternative(
        '<p onclick="steal()">The lamp <b>arrived broken</b>.<script>alert(1)</script>'
        '<img src="cid:photo1@example.com" alt="photo"><img src="https://tracker.example/p.gif">'
        '<a href="javascript:alert(1)">x</a></p>', subtype="html")
    html_part = msg.get_payload()[1]
    html_part.add_related(b"\x89PNG fake image", maintype="image", subtype="png", cid="<photo1@example.com>")
    msg.add_attachment(b"%PDF-1.4 receipt", maintype="application", subtype="pdf", filename="receipt.pdf")
    return msg.as_bytes()


def test_bodies_html_and_attachments() -> None:
    inbound = to_inbound(_rich_mail(), channel="email", own_domain=DOMAIN)
    assert inbound.text is not None and "arrived broken" in inbound.text
    assert inbound.html is not None
    html = inbound.html
    assert "<script" not in html and "onclick" not in html and "javascript:" not in html
    assert "tracker.example" not in html  # remote images blocked ...
    assert inbound.meta["remote_images"] == ["https://tracker.example/p.gif"]  # ... until asked
    assert f'src="{cid_ref("photo1@example.com")}"' in html
    by_name = {p.filename or p.content_id: p for p in inbound.parts}
    assert by_name["photo1@example.com"].role == "inline"
    assert by_name["photo1@example.com"].data == b"\x89PNG fake image"
    assert by_name["receipt.pdf"].role == "attachment"
    assert by_name["receipt.pdf"].media_type == "application/pdf"
    assert inbound.raw_media_type == "message/rfc822"


def test_sanitize_keeps_formatting() -> None:
    safe = sanitize('<p style="x">Hi <b>there</b><iframe src="https://x"></iframe><form><input></form></p>')
    assert safe.html.startswith("<p>Hi <b>there</b></p>")
    assert "iframe" not in safe.html and "input" not in safe.html and "style" not in safe.html


def test_a_cid_to_a_missing_part_shows_nothing() -> None:
    assert "src" not in sanitize('<img src="cid:nothere@x">').html


# -- TNEF --------------------------------------------------------------------------------------


def _attr(level: int, attr_id: int, attr_type: int, data: bytes) -> bytes:
    checksum = sum(data) & 0xFFFF
    head = struct.pack("<BII", level, (attr_type << 16) | attr_id, len(data))
    return head + data + struct.pack("<H", checksum)


def _mapi_string(prop_id: int, text: str) -> bytes:
    value = text.encode("utf-16-le") + b"\0\0"
    pad = b"\0" * (-len(value) % 4)
    return struct.pack("<HHII", 0x001F, prop_id, 1, len(value)) + value + pad


def make_tnef(files: list[tuple[str, bytes]], body: str = "") -> bytes:
    out = struct.pack("<IH", 0x223E9F78, 0x1234)
    if body:
        out += _attr(1, 0x800C, 0x0001, body.encode("cp1252") + b"\0")
    for name, data in files:
        out += _attr(2, 0x9002, 0x0006, b"\x01\x00\xff\xff\xff\xff\x00\x00\x00\x00\x00\x00\x00\x00")
        out += _attr(2, 0x8010, 0x0001, name[:8].encode("cp1252") + b"\0")
        out += _attr(2, 0x800F, 0x0006, data)
        props = struct.pack("<I", 2) + _mapi_string(0x3707, name) + _mapi_string(0x370E, "text/plain")
        out += _attr(2, 0x9005, 0x0006, props)
    return out


def test_tnef_reader() -> None:
    tnef = read_tnef(make_tnef([("Quarterly report.txt", b"numbers"), ("notes.txt", b"more")], body="Hi"))
    assert [(a.filename, a.data, a.media_type) for a in tnef.attachments] == [
        ("Quarterly report.txt", b"numbers", "text/plain"), ("notes.txt", b"more", "text/plain")]
    assert tnef.text == "Hi"
    with pytest.raises(TnefError):
        read_tnef(b"not tnef at all")
    cut = read_tnef(make_tnef([("a.txt", b"data")])[:-7])  # read as far as it goes, and said so
    assert [(a.filename, a.data) for a in cut.attachments] == [("a.txt", b"data")]
    assert cut.problems


def test_winmail_dat_is_unpacked_and_a_broken_one_kept() -> None:
    msg = EmailMessage()
    msg["From"] = "outlook@example.com"
    msg["Subject"] = "rich text"
    msg.set_content("see attached")
    msg.add_attachment(make_tnef([("Invoice 42.txt", b"total 42")]), maintype="application",
                       subtype="ms-tnef", filename="winmail.dat")
    msg.add_attachment(b"garbage", maintype="application", subtype="ms-tnef", filename="winmail.dat")
    inbound = to_inbound(msg.as_bytes(), channel="email")
    names = [(p.filename, p.data) for p in inbound.parts]
    assert ("Invoice 42.txt", b"total 42") in names
    assert ("winmail.dat", b"garbage") in names  # unreadable: kept as it came
    assert [n for n, _ in names].count("winmail.dat") == 2  # the readable one is kept too


# -- threading hints ------------------------------------------------------------------------------


def test_thread_hints_from_headers_address_and_subject() -> None:
    ours = outbound_message_id(17, "a1b2c3d4e5f6", DOMAIN)
    raw = (f"From: c@example.com\r\nTo: reply+ffeeddccbbaa@{DOMAIN}\r\nSubject: Re: lamp [#0123456789ab]\r\n"
           f"Message-ID: <answer@example.com>\r\nIn-Reply-To: {ours}\r\n"
           f"References: <first@example.com> {ours}\r\n\r\nthanks\r\n").encode()
    hints = to_inbound(raw, channel="email", own_domain=DOMAIN).thread
    assert hints.own == ("<answer@example.com>",)
    assert hints.refs == ("<first@example.com>", ours)  # nearest last
    assert hints.conversation_token == "a1b2c3d4e5f6"  # our Message-ID beats the address and the tag
    raw2 = raw.replace(f"In-Reply-To: {ours}\r\n".encode(), b"").replace(f" {ours}".encode(), b"")
    assert to_inbound(raw2, channel="email", own_domain=DOMAIN).thread.conversation_token == "ffeeddccbbaa"
    raw3 = raw2.replace(b"reply+ffeeddccbbaa", b"support")
    assert to_inbound(raw3, channel="email", own_domain=DOMAIN).thread.conversation_token == "0123456789ab"


def test_dedupe_key_ignores_relay_headers_but_not_content() -> None:
    base = b"From: c@example.com\r\nSubject: s\r\nMessage-ID: <k@example.com>\r\n\r\nbody\r\n"
    relayed = b"Received: from mx by us; today\r\nReturn-Path: <c@example.com>\r\n" + base
    changed = base.replace(b"body", b"other body")
    key = to_inbound(base, channel="e").dedupe_key
    assert to_inbound(relayed, channel="e").dedupe_key == key
    assert to_inbound(base.replace(b"\r\n", b"\n"), channel="e").dedupe_key == key
    assert to_inbound(changed, channel="e").dedupe_key != key
    assert key.startswith("<k@example.com>#")


def test_empty_message_is_refused() -> None:
    with pytest.raises(PermanentError, match="empty"):
        to_inbound(b"\r\n", channel="email")


_SNIPPETS = [b"\r\n", b"=?gb2312?B?", b"?=", b"--", b":", b"\r\n\r\n", b"\x00", b"=?utf-8?q?", b";charset=\xff",
             b"Content-Type: multipart/mixed; boundary=x\r\n", b"Content-Transfer-Encoding: base64\r\n",
             b"Content-Type: application/ms-tnef\r\n", b"Content-Type: message/delivery-status\r\n",
             b'<img src="cid:\xff">', b"filename*=utf-8''%ff%fe"]


@pytest.mark.parametrize("seed", range(6))
def test_mangled_mail_never_crashes_the_parser(seed: int) -> None:
    # A parser crash would answer 451 forever (SMTP) or stall a mailbox (IMAP): only a stated refusal is allowed.
    rnd = random.Random(seed)
    for _ in range(150):
        m = bytearray(rnd.choice(CORPUS_FILES).read_bytes())
        for _ in range(rnd.randint(1, 20)):
            pos = rnd.randrange(len(m)) if m else 0
            op = rnd.random()
            if op < 0.4 and m:
                m[pos] = rnd.randrange(256)
            elif op < 0.7:
                m[pos:pos] = rnd.choice(_SNIPPETS)
            elif m:
                del m[pos : pos + rnd.randint(1, 50)]
        try:
            to_inbound(bytes(m), channel="email", own_domain=DOMAIN, envelope=Envelope("a@example.com"))
        except PermanentError:
            pass

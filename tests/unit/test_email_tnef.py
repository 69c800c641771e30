"""TNEF (winmail.dat) through tnefparse: the real samples tnefparse ships, damage, RTF and the sanitiser.

The corpus is the `tests/examples/*.tnef` files of tnefparse's source
distribution, fetched with pip into the repository's ignored `build/` folder
on first use and read from the archive in place; nothing fetched is committed.
What each sample should yield is asked of tnefparse itself, file by file.
"""

from __future__ import annotations

import random
import re
import struct
import subprocess
import sys
import tarfile
import time
from email.message import EmailMessage
from pathlib import Path, PurePosixPath

import pytest
from compressed_rtf import compress, decompress
from tnefparse import TNEF

from channels.email.parse import to_inbound
from channels.email.tnef import Tnef, TnefError, read_rtf, read_tnef
from umsg.model import Inbound

TNEFPARSE_SDIST = "1.4.0"
CACHE = Path(__file__).resolve().parents[2] / "build" / "test-data" / "tnefparse"
SAMPLE_COUNT = 19


def _sdist() -> Path:
    found = sorted(CACHE.glob(f"tnefparse-{TNEFPARSE_SDIST}.tar.gz"))
    if found:
        return found[0]
    CACHE.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "--no-cache-dir",
           "--disable-pip-version-check", f"tnefparse=={TNEFPARSE_SDIST}", "-d", str(CACHE)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"could not download tnefparse {TNEFPARSE_SDIST}'s source distribution (the TNEF corpus): {exc}")
    found = sorted(CACHE.glob(f"tnefparse-{TNEFPARSE_SDIST}.tar.gz"))
    if proc.returncode != 0 or not found:
        pytest.fail(f"could not download tnefparse {TNEFPARSE_SDIST}'s source distribution (the TNEF corpus) "
                    f"with `{' '.join(cmd)}` (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return found[0]


@pytest.fixture(scope="module")
def samples() -> dict[str, bytes]:
    """Sample name -> bytes, read straight from the cached archive."""
    out: dict[str, bytes] = {}
    with tarfile.open(_sdist()) as tar:
        for member in tar.getmembers():
            path = PurePosixPath(member.name)
            if member.isfile() and path.suffix == ".tnef" and path.parts[-3:-1] == ("tests", "examples"):
                extracted = tar.extractfile(member)
                assert extracted is not None
                out[path.name] = extracted.read()
    return dict(sorted(out.items()))


def _wrapped(data: bytes) -> bytes:
    """A mail whose only content is the winmail.dat, as Outlook sends when it has no MIME body."""
    msg = EmailMessage()
    msg["From"] = "outlook@example.com"
    msg["To"] = "support@acme.test"
    msg["Subject"] = "rich text"
    msg["Message-ID"] = "<tnef@example.com>"
    msg.add_attachment(data, maintype="application", subtype="ms-tnef", filename="winmail.dat")
    return msg.as_bytes()


def _container_kept(inbound: Inbound, data: bytes) -> bool:
    return any(p.filename == "winmail.dat" and p.data == data for p in inbound.parts)


# -- the real samples --------------------------------------------------------------------------


def test_the_corpus_is_there(samples: dict[str, bytes]) -> None:
    assert len(samples) == SAMPLE_COUNT, sorted(samples)


def test_bodies_are_found_wherever_the_library_has_one(samples: dict[str, bytes]) -> None:
    lib_totals = {"html": 0, "rtf": 0, "body": 0, "any": 0}
    our_totals = {"html": 0, "text": 0, "any": 0}
    missed: list[str] = []
    for name, data in samples.items():
        lib, ours = TNEF(data), read_tnef(data)
        has = {"html": bool(lib.htmlbody), "rtf": bool(lib.rtfbody), "body": bool(lib.body)}
        for kind, present in has.items():
            lib_totals[kind] += present
        lib_totals["any"] += any(has.values())
        our_totals["html"] += bool(ours.html)
        our_totals["text"] += bool(ours.text)
        our_totals["any"] += bool(ours.html or ours.text)
        if has["html"] and not ours.html:
            missed.append(f"{name}: the library has an HTML body, we have none")
        if has["body"] and not ours.text:
            missed.append(f"{name}: the library has a text body, we have none")
        if has["rtf"] and not (ours.html or ours.text):
            missed.append(f"{name}: the library has an RTF body, we have no body")
        if not any(has.values()) and (ours.html or ours.text):
            missed.append(f"{name}: the library has no body, we made one up")
    assert not missed, "\n".join(missed)
    assert lib_totals == {"html": 4, "rtf": 11, "body": 3, "any": 15}
    assert our_totals == {"html": 7, "text": 10, "any": 15}


def test_every_rtf_body_reads_back(samples: dict[str, bytes]) -> None:
    kinds: dict[str, int] = {"html": 0, "text": 0}
    for name, data in samples.items():
        rtf = TNEF(data).rtfbody
        if not rtf:
            continue
        body = read_rtf(rtf)
        assert body.html or body.text, name
        assert not re.search(r"\\(par|pard|plain|f\d+|fs\d+|cf\d+|rtf1)\b|[{}]\\", body.text or ""), name
        kinds["html" if body.html else "text"] += 1
    assert kinds == {"html": 3, "text": 8}  # three encapsulate HTML (\fromhtml1)


def test_attachments_match_the_library(samples: dict[str, bytes]) -> None:
    total = 0
    for name, data in samples.items():
        lib = [(a.long_filename() or None, a.data) for a in TNEF(data).attachments]
        ours = [(a.filename, a.data) for a in read_tnef(data).attachments]
        assert ours == lib, name
        total += len(ours)
    assert total == 29


@pytest.mark.parametrize("name", ["unicode-mapi-attr-name.tnef", "umlaut.tnef"])
def test_inline_images_referenced_by_the_html_are_inline(samples: dict[str, bytes], name: str) -> None:
    tnef = read_tnef(samples[name])
    assert tnef.html is not None
    cids = set(re.findall(r"cid:([^\"' >]+)", tnef.html))
    assert cids and cids <= {a.content_id for a in tnef.attachments}
    inbound = to_inbound(_wrapped(samples[name]), channel="email")
    assert {p.content_id for p in inbound.parts if p.role == "inline"} == cids


def test_each_sample_in_a_mail_parses_with_its_body_and_the_container_kept(samples: dict[str, bytes]) -> None:
    with_body = 0
    for name, data in samples.items():
        inbound = to_inbound(_wrapped(data), channel="email")
        assert _container_kept(inbound, data), name
        names = [p.filename for p in inbound.parts]
        for att in read_tnef(data).attachments:
            assert att.filename in names, f"{name}: {att.filename}"
        lib = TNEF(data)
        if lib.htmlbody or lib.rtfbody or lib.body:
            assert (inbound.text or "").strip() or (inbound.html or "").strip(), name
            with_body += 1
        else:
            assert inbound.text is None and inbound.html is None, name
    assert with_body == 15


# -- damage ------------------------------------------------------------------------------------


def _damaged(data: bytes, rnd: random.Random) -> list[bytes]:
    out = [data[:cut] for cut in (0, 3, 6, 7, 17, 40, len(data) // 3, len(data) // 2, len(data) - 1)]
    out.append(b"\x00" + data[1:])  # the signature broken
    for _ in range(12):
        flipped = bytearray(data)
        for _ in range(rnd.randint(1, 8)):
            # Mostly near the start, where the framing and the MAPI properties are.
            pos = rnd.randrange(6, min(len(data), 4096)) if rnd.random() < 0.7 else rnd.randrange(len(data))
            flipped[pos] ^= 1 << rnd.randrange(8)
        out.append(bytes(flipped))
    return out


def test_damaged_samples_raise_nothing_but_tnef_error_and_the_mail_is_stored(samples: dict[str, bytes]) -> None:
    rnd = random.Random(20240607)
    outcomes = {"read": 0, "refused": 0}
    for name, data in samples.items():
        for i, broken in enumerate(_damaged(data, rnd)):
            try:
                tnef = read_tnef(broken)
            except TnefError:
                outcomes["refused"] += 1
            else:
                assert isinstance(tnef, Tnef)
                outcomes["read"] += 1
            inbound = to_inbound(_wrapped(broken), channel="email")
            assert _container_kept(inbound, broken), f"{name} variant {i}"
    assert outcomes["refused"] >= 3 * SAMPLE_COUNT  # no signature: the empty, 3-byte and broken-signature ones
    assert outcomes["read"] > outcomes["refused"]


def test_a_cut_sample_is_read_as_far_as_it_goes(samples: dict[str, bytes]) -> None:
    data = samples["unicode-mapi-attr-name.tnef"]
    whole = read_tnef(data)
    cut = read_tnef(data[: len(data) - 2000])  # into the last attachment
    assert cut.html == whole.html
    assert [a.filename for a in cut.attachments] == [a.filename for a in whole.attachments]
    assert cut.problems and not whole.problems


# -- synthetic streams: HTML and RTF bodies -----------------------------------------------------


def _attr(level: int, attr_id: int, attr_type: int, data: bytes) -> bytes:
    return struct.pack("<BII", level, (attr_type << 16) | attr_id, len(data)) + data + struct.pack("<H", sum(data))


def _binary_prop(prop_id: int, value: bytes) -> bytes:
    return struct.pack("<HHII", 0x0102, prop_id, 1, len(value)) + value + b"\0" * (-len(value) % 4)


def _tnef(*props: bytes) -> bytes:
    mapi = struct.pack("<I", len(props)) + b"".join(props)
    return struct.pack("<IH", 0x223E9F78, 1) + _attr(1, 0x9003, 0x0006, mapi)


HOSTILE = b'<p onclick="steal()">Hello <b>there</b></p><script>alert(1)</script>'


def test_tnef_html_goes_through_the_sanitiser() -> None:
    inbound = to_inbound(_wrapped(_tnef(_binary_prop(0x1013, HOSTILE))), channel="email")
    assert inbound.html is not None and "Hello" in inbound.html
    assert "<script" not in inbound.html and "onclick" not in inbound.html


def test_html_encapsulated_in_rtf_goes_through_the_sanitiser() -> None:
    rtf = (b"{\\rtf1\\ansi\\ansicpg1252\\fromhtml1 {\\fonttbl{\\f0 Arial;}}"
           b"{\\*\\htmltag19 <html>}{\\*\\htmltag50 <body>}{\\*\\htmltag0 <script>alert(1)</script>}"
           b"\\htmlrtf {\\b \\htmlrtf0 Caf\\'e9 \\u8364?{\\*\\htmltag84 &amp;}\\htmlrtf &\\htmlrtf0 co"
           b"\\htmlrtf }\\htmlrtf0 "
           b"{\\*\\htmltag58 </body>}{\\*\\htmltag27 </html>}}")
    inbound = to_inbound(_wrapped(_tnef(_binary_prop(0x1009, compress(rtf)))), channel="email")
    assert inbound.html is not None
    assert "Caf\u00e9 \u20ac&amp;co" in inbound.html
    assert "<script" not in inbound.html and "alert" not in inbound.html


@pytest.mark.parametrize(("rtf", "text"), [
    (b"{\\rtf1\\ansi Hello\\par world}", "Hello\nworld"),
    (b"{\\rtf1\\ansi\\ansicpg1251 \\'cf\\'f0\\'e8\\'e2\\'e5\\'f2}", "\u041f\u0440\u0438\u0432\u0435\u0442"),
    (b"{\\rtf1\\ansi \\'e9t\\'e9}", "\u00e9t\u00e9"),  # no \ansicpg: cp1252
    (b"{\\rtf1\\ansi\\ansicpg932 \\'82\\'a0}", "\u3042"),  # a double-byte character from two escapes
    (b"{\\rtf1\\ansi\\uc1 \\u8364?\\u-10179?\\u-8704?}", "\u20ac\U0001f600"),  # \uN, its fallback and a pair
    (b"{\\rtf1{\\fonttbl{\\f0 Arial;}}{\\*\\generator x;}{\\info{\\title t}}\\tab a\\{b\\}c\\\\d}", "a{b}c\\d"),
    (b"{\\rtf1 a{\\field{\\*\\fldinst HYPERLINK \"x\"}{\\fldrslt link}}\\bin3 {}}b}\0\0", "alinkb"),
    (b"no rtf at all \\", "no rtf at all"),
    (b"", None),
])
def test_rtf_to_text(rtf: bytes, text: str | None) -> None:
    assert read_rtf(rtf).text == text
    assert read_rtf(rtf).html is None


def test_an_rtf_body_failing_its_crc_is_still_read() -> None:
    packed = bytearray(compress(b"{\\rtf1\\ansi Please call me back\\par}"))
    packed[12:16] = b"\xde\xad\xbe\xef"  # the CRC field
    with pytest.raises(Exception, match="CRC"):
        decompress(bytes(packed))
    tnef = read_tnef(_tnef(_binary_prop(0x1009, bytes(packed))))
    assert tnef.text == "Please call me back"
    assert any("CRC" in p for p in tnef.problems)


def test_a_damaged_attribute_costs_only_itself() -> None:
    stream = _tnef(_binary_prop(0x1013, b"<p>kept</p>"))
    stream += _attr(1, 0x9007, 0x0006, b"\xe4\x04")  # a code page two bytes short
    stream += _attr(1, 0x9003, 0x0006, b"\xff\xff\xff\xff\x02\x01")  # nonsense properties
    stream += _attr(2, 0x9002, 0x0006, b"\x01\x00" + b"\xff" * 12)
    stream += _attr(2, 0x800F, 0x0006, b"bytes")
    with pytest.raises(struct.error):
        TNEF(stream)  # the library alone loses the whole stream
    tnef = read_tnef(stream)
    assert tnef.html == "<p>kept</p>"
    assert [(a.filename, a.data) for a in tnef.attachments] == [(None, b"bytes")]
    assert [p for p in tnef.problems if "0x9007" in p]


def _props_block(count: int, *props: bytes) -> bytes:
    return struct.pack("<I", count) + b"".join(props)


@pytest.mark.parametrize("level", [1, 2])
def test_counts_in_the_data_cannot_keep_the_reader_busy(level: int) -> None:
    # tnefparse's decode_mapi loops as often as these counts say: hours, or all the memory, for one mail.
    many_shorts = struct.pack("<HHI", 0x1002, 0x6000, 0x7FFFFFFF) + b"\0" * 8
    html = _binary_prop(0x1013, b"<p>still here</p>")
    head = struct.pack("<IH", 0x223E9F78, 1)
    if level == 2:
        head += _attr(2, 0x9002, 0x0006, b"\x01\x00" + b"\xff" * 12) + _attr(2, 0x800F, 0x0006, b"file")
    blocks = [_props_block(0xFFFFFFFF, html), _props_block(2, html, many_shorts), _props_block(2, many_shorts, html)]
    started = time.perf_counter()
    for block in blocks:
        tnef = read_tnef(head + _attr(level, 0x9003 if level == 1 else 0x9005, 0x0006, block))
        if level == 1:
            assert tnef.html in ("<p>still here</p>", None)
        else:
            assert [a.data for a in tnef.attachments] == [b"file"]
    assert time.perf_counter() - started < 5
    assert read_tnef(head + _attr(1, 0x9003, 0x0006, blocks[0])).html == "<p>still here</p>"

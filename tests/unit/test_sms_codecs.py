"""SMS text codecs and splitting, PDU round trips, UDH/SAR/payload segments, receipts, signatures."""

from __future__ import annotations

import struct

import pytest

from channels.sms import gsm
from channels.sms.adapter import SmsChannel
from channels.sms.concat import GAP, assemble, segment_of, with_udh
from channels.sms.pdu import TLV_MESSAGE_PAYLOAD, TLV_RECEIPTED_MESSAGE_ID, PduError, ShortMessage, frame_length
from channels.sms.receipts import id_forms, numeric_forms, parse_fields, parse_receipt
from channels.sms.settings import SmppSettings
from channels.sms.text import DC_DEFAULT, DC_UCS2, decode_text, encode_text
from channels.sms.twilio_media import media_items, provider_url
from channels.sms.twilio_sig import is_valid, signature


@pytest.mark.parametrize(("text", "septets"), [("abc", 3), ("€", 2), ("{}[]~^|\\", 16), ("@£$¥", 4)])
def test_gsm_round_trip_and_escape_cost(text: str, septets: int) -> None:
    data = gsm.encode(text)
    assert len(data) == septets and gsm.decode(data) == text


def test_gsm_rejects_what_it_cannot_carry() -> None:
    assert not gsm.fits("naïve")  # ï is not in GSM 03.38
    with pytest.raises(ValueError):
        gsm.encode("😀")


@pytest.mark.parametrize(("text", "dc", "parts"), [
    ("a" * 160, DC_DEFAULT, 1), ("a" * 161, DC_DEFAULT, 2), ("€" * 80, DC_DEFAULT, 1), ("€" * 81, DC_DEFAULT, 2),
    ("ж" * 70, DC_UCS2, 1), ("ж" * 71, DC_UCS2, 2), ("😀" * 35, DC_UCS2, 1), ("😀" * 36, DC_UCS2, 2),
])
def test_encoding_choice_and_part_count(text: str, dc: int, parts: int) -> None:
    enc = encode_text(text)
    assert enc.data_coding == dc and len(enc.parts) == parts
    assert decode_text(b"".join(enc.parts), dc) == text


def test_splitting_never_breaks_an_escape_or_a_surrogate_pair() -> None:
    enc = encode_text("x" * 152 + "€" + "y" * 10)
    assert enc.parts[0][-1] != gsm.ESCAPE and gsm.decode(enc.parts[1]).startswith("€")
    enc = encode_text("a" + "😀" * 70)
    for part in enc.parts:
        part.decode("utf-16-be")  # each part decodes on its own: no half pair
        assert len(part) <= 134


def test_latin1_and_general_coding_groups_decode() -> None:
    assert decode_text("déjà".encode("latin-1"), 3) == "déjà"
    assert decode_text("hi".encode("utf-16-be"), 0x18) == "hi"  # general group, UCS2 bits
    assert decode_text(gsm.encode("ok"), 0xF0) == "ok"


def test_short_message_round_trip_and_malformed_frames() -> None:
    sm = ShortMessage("447700900123", "447700900000", b"hi", data_coding=8, esm_class=0x40,
                      tlvs={TLV_MESSAGE_PAYLOAD: b"\x00x"})
    assert ShortMessage.decode(sm.encode()) == sm
    with pytest.raises(PduError):
        frame_length(b"\x00\x00\x00\x05")
    with pytest.raises(PduError):
        ShortMessage.decode(sm.encode()[:20])


@pytest.mark.parametrize("sixteen", [False, True])
def test_udh_segments_round_trip(sixteen: bool) -> None:
    bodies = with_udh((b"ab", b"cd"), 0x1234, sixteen_bit=sixteen)
    seg = segment_of(ShortMessage("1", "2", bodies[1], esm_class=0x40))
    assert (seg.ref, seg.total, seg.seq, seg.payload) == (0x1234 if sixteen else 0x34, 2, 2, b"cd")


def test_sar_and_payload_segments() -> None:
    tlvs = {0x020C: struct.pack(">H", 9), 0x020E: b"\x03", 0x020F: b"\x02"}
    seg = segment_of(ShortMessage("1", "2", b"mid", tlvs=tlvs))
    assert (seg.form, seg.ref, seg.total, seg.seq) == ("sar", 9, 3, 2)
    whole = segment_of(ShortMessage("1", "2", b"", tlvs={TLV_MESSAGE_PAYLOAD: b"long text"}))
    assert (whole.form, whole.is_part, whole.payload) == ("payload", False, b"long text")


def test_assembly_joins_bytes_before_decoding_and_marks_gaps() -> None:
    data = "a😀b".encode("utf-16-be")
    assert assemble({1: data[:3], 2: data[3:]}, 2, DC_UCS2) == ("a😀b", [])
    text, missing = assemble({1: b"one", 3: b"three"}, 3, DC_DEFAULT)
    assert text == "one" + GAP + "three" and missing == [2]


def test_receipt_text_and_tlv_parsing() -> None:
    text = b"id:0000001234 sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 stat:DELIVRD err:000 text:hi"
    assert parse_fields(text.decode())["done date"] == "2401011201"
    r = parse_receipt(ShortMessage("1", "2", text, esm_class=4))
    assert r is not None and (r.message_id, r.status, r.stat) == ("0000001234", "delivered", "DELIVRD")
    r = parse_receipt(ShortMessage("1", "2", b"", esm_class=4,
                                   tlvs={TLV_RECEIPTED_MESSAGE_ID: b"4d2\0", 0x0427: b"\x05"}))
    assert r is not None and (r.message_id, r.status, r.stat) == ("4d2", "failed", "UNDELIV")


def test_id_forms_meet_across_bases() -> None:
    assert "#1234" in numeric_forms("0000001234") and "#1234" in id_forms("4D2") and "#1234" in id_forms("4d2")
    assert numeric_forms("not-an-id") == []


def test_twilio_signature_matches_the_published_vectors() -> None:
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309", "Digits": "1234",
              "From": "+14158675309", "To": "+18005551212"}
    assert signature("12345", url, params.items()) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert is_valid("12345", url, params.items(), "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert not is_valid("12345", url + "&x=1", params.items(), "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert not is_valid("12345", url, params.items(), None)
    # parameter order on the wire does not matter: the signature sorts them
    assert signature("12345", url, reversed(list(params.items()))) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_smpp_url_parses_and_masks_the_password() -> None:
    settings = SmsChannel.settings_from_url("smpp://esme:s3cret@smsc.example:2776?connections=3&opt_out_keywords=STOP,退订")
    assert isinstance(settings, SmppSettings)
    assert (settings.system_id, settings.port, settings.connections) == ("esme", 2776, 3)
    assert settings.opt_out_keywords == ["STOP", "退订"]
    shown = repr(SmsChannel("sms", settings))
    assert "s3cret" not in shown and "***" in shown


@pytest.mark.parametrize(("params", "expected"), [
    ({"NumMedia": "0"}, []),
    ({"NumMedia": "2", "MediaUrl0": "u0", "MediaContentType0": "image/png", "MediaUrl1": "u1"},
     [(0, "u0", "image/png"), (1, "u1", "")]),
    ({"NumMedia": "1", "MediaUrl0": "u0", "MediaUrl1": "beyond NumMedia"}, [(0, "u0", "")]),
    ({"MediaUrl0": "u0"}, [(0, "u0", "")]),  # no NumMedia: whatever URLs are there, at most 10
    ({"NumMedia": "999", **{f"MediaUrl{i}": f"u{i}" for i in range(12)}}, [(i, f"u{i}", "") for i in range(10)]),
])
def test_media_items_follow_num_media(params: dict[str, str], expected: list[tuple[int, str, str]]) -> None:
    assert media_items(params) == expected


def test_media_is_fetched_from_the_configured_provider_only() -> None:
    url = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1?x=1"
    assert provider_url(url, "http://127.0.0.1:8080/") == "http://127.0.0.1:8080/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1?x=1"
    assert provider_url("https://evil.example/steal", "https://api.twilio.com").startswith("https://api.twilio.com/")

"""The SIP/RTP stack's pure parts: parsing (incl. malformed input), SDP negotiation, the jitter
buffer, G.711, RFC 4733 DTMF and the retransmission schedule."""

from __future__ import annotations

import array
import math

import pytest

from channels.telephony import g711, sdp, sipmsg
from channels.telephony.dtmf import DtmfReceiver, build_event
from channels.telephony.rtp import AudioTimeline, JitterBuffer, RtpPacket, parse_packet
from channels.telephony.transactions import Timers, retransmit_intervals

INVITE = (b"INVITE sip:100@127.0.0.1:5060 SIP/2.0\r\n"
          b"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK1;rport\r\n"
          b"f: \"Alice\" <sip:+4930123456@127.0.0.1>;tag=abc\r\n"
          b"t: <sip:100@127.0.0.1>\r\ni: call-1\r\nCSeq: 1 INVITE\r\n"
          b"Subject: folded\r\n  line\r\nContent-Length: 4\r\n\r\nv=0\n")


def test_invite_parses_with_compact_and_folded_headers() -> None:
    msg = sipmsg.parse(INVITE)
    assert (msg.method, msg.call_id, msg.cseq, msg.branch) == ("INVITE", "call-1", (1, "INVITE"), "z9hG4bK1")
    frm = sipmsg.parse_name_addr(msg.get("from") or "")
    assert (frm.display, frm.user, frm.tag) == ("Alice", "+4930123456", "abc")
    assert msg.get("subject") == "folded line" and msg.body == b"v=0\n"
    again = sipmsg.parse(msg.to_bytes())
    assert again.headers == msg.headers and again.body == msg.body


@pytest.mark.parametrize("data", [
    INVITE[:60],  # truncated head
    INVITE.replace(b"Content-Length: 4", b"Content-Length: 400"),  # truncated body
    INVITE.replace(b"Content-Length: 4", b"Content-Length: x"),
    INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: zero"),
    INVITE.replace(b"i: call-1\r\n", b""),  # no Call-ID
    INVITE.replace(b"t: <sip", b"bad header line <sip"),
    b"INVITE sip:x SIP/2.0\r\n" + b"X-A: b\r\n" * 200 + b"\r\n",  # too many headers
    INVITE + b"x" * 70000,  # huge
    b"\x00\xff\xfe garbage",
    b"SIP/2.0 999 Nope\r\n\r\n",
])
def test_malformed_input_raises_parse_error(data: bytes) -> None:
    with pytest.raises(sipmsg.SipParseError):
        sipmsg.parse(data)


def test_response_copies_transaction_headers_and_adds_tag() -> None:
    resp = sipmsg.response_to(sipmsg.parse(INVITE), 180, to_tag="xyz")
    out = sipmsg.parse(resp.to_bytes())
    assert out.status == 180 and out.call_id == "call-1" and (out.get("to") or "").endswith(";tag=xyz")


OFFER = (b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
         b"m=audio 4000 RTP/AVP 9 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
         b"a=ptime:30\r\n")


def test_sdp_answer_picks_first_g711_and_keeps_events_and_ptime() -> None:
    choice = sdp.choose_audio(sdp.parse(OFFER))
    assert (choice.payload_type, choice.event_pt, choice.ptime) == (8, 101, 30)
    assert (choice.remote_address, choice.remote_port) == ("10.0.0.1", 4000)
    answer = sdp.parse(sdp.audio_description("127.0.0.1", 5000, choice, 7).to_bytes())
    m = answer.first("audio")
    assert m is not None and m.formats == ["8", "101"] and m.ptime == 30 and m.port == 5000


def test_sdp_refuses_offers_without_g711_and_handles_t38() -> None:
    with pytest.raises(sdp.SdpError):
        sdp.choose_audio(sdp.parse(OFFER.replace(b"9 8 0 101", b"9 18")))
    t38 = sdp.image_description("127.0.0.1", 6000, 1)
    parsed = sdp.parse(t38.to_bytes())
    media = sdp.t38_offered(parsed)
    assert media is not None and media.port == 6000 and "T38FaxVersion:0" in media.attributes
    assert sdp.t38_offered(sdp.parse(OFFER)) is None


def packet(seq: int, ts: int, pt: int = 0, payload: bytes = b"\xff" * 160) -> RtpPacket:
    return RtpPacket(pt, seq & 0xFFFF, ts, 1, payload)


def test_jitter_buffer_orders_counts_loss_and_drops_late() -> None:
    jb = JitterBuffer(depth=3)
    order = [65534, 0, 65535, 2, 3, 4, 5, 6]  # reordered across the wrap, 1 lost
    out = [p.sequence for s in order for p in jb.push(packet(s, 0))] + [p.sequence for p in jb.flush()]
    assert out == [65534, 65535, 0, 2, 3, 4, 5, 6]
    assert jb.stats.lost == 1
    assert jb.push(packet(1, 0)) == [] and jb.stats.late == 1


def test_timeline_follows_timestamps_and_reports_digits() -> None:
    audio: list[bytes] = []
    digits: list[str] = []
    tl = AudioTimeline(audio.append, digits.append, event_pt=101)
    tl.feed(packet(1, 1000))
    tl.feed(packet(2, 1320))  # one 20 ms packet lost: 160 samples of silence first
    for _ in range(3):
        tl.feed(RtpPacket(101, 3, 1480, 1, build_event("1", end=True, duration=800)))
    assert sum(len(a) for a in audio) == 3 * 160 * 2 and audio[1] == b"\x00\x00" * 160
    assert digits == ["1"]


def test_rtp_packet_round_trip_and_rejects_rtcp() -> None:
    p = RtpPacket(8, 7, 123456, 99, b"abc", marker=True)
    assert parse_packet(p.to_bytes()) == p
    assert parse_packet(b"\x80\xc8" + b"\x00" * 30) is None and parse_packet(b"junk") is None


@pytest.mark.parametrize("codec", [0, 8])
def test_g711_round_trip_is_close(codec: int) -> None:
    pcm = array.array("h", (int(12000 * math.sin(i / 5)) for i in range(800))).tobytes()
    back = array.array("h")
    back.frombytes(g711.decode(codec, g711.encode(codec, pcm)))
    orig = array.array("h")
    orig.frombytes(pcm)
    assert max(abs(a - b) for a, b in zip(orig, back, strict=True)) <= 12000 // 16 + 16
    assert g711.decode(codec, g711.silence(codec, 4)) in (b"\x00\x00" * 4, b"\x08\x00" * 4, b"\xf8\xff" * 4)


def test_dtmf_each_press_once() -> None:
    rx = DtmfReceiver()
    got = [rx.feed(ts, build_event(d, end=e, duration=160)) for ts, d, e in
           [(100, "5", False), (100, "5", True), (100, "5", True), (900, "#", False)]]
    assert [g for g in got if g] == ["5", "#"]


def test_retransmit_schedule_doubles_to_t2_within_64_t1() -> None:
    waits = retransmit_intervals(Timers())
    assert waits[:5] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert sum(waits) < 32.0 and sum(waits) + 4.0 >= 32.0

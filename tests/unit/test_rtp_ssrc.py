"""The jitter buffer follows a new RTP source instead of counting its packets late or lost."""

from __future__ import annotations

from channels.telephony.rtp import JitterBuffer, RtpPacket


def pkt(ssrc: int, seq: int) -> RtpPacket:
    return RtpPacket(payload_type=0, sequence=seq, timestamp=seq * 160, ssrc=ssrc, payload=bytes([seq & 0xFF]))


def test_a_new_ssrc_restarts_the_sequence() -> None:
    jb = JitterBuffer(depth=3)
    out = []
    for seq in (100, 101, 103, 102):
        out += jb.push(pkt(1, seq))
    # Another source starts far below the first one's numbering (as sipp's DTMF stream does).
    for seq in (7, 8, 9):
        out += jb.push(pkt(2, seq))
    out += jb.flush()
    assert [(p.ssrc, p.sequence) for p in out] == [(1, 100), (1, 101), (1, 102), (1, 103), (2, 7), (2, 8), (2, 9)]
    assert (jb.stats.lost, jb.stats.late, jb.stats.duplicates) == (0, 0, 0)


def test_loss_is_still_counted_within_one_source() -> None:
    jb = JitterBuffer(depth=2)
    out = []
    for seq in (1, 2, 5, 6, 7, 8):
        out += jb.push(pkt(9, seq))
    out += jb.flush()
    assert [p.sequence for p in out] == [1, 2, 5, 6, 7, 8]
    assert jb.stats.lost == 2

"""UDPTL (T.38 Annex A): framing, redundancy recovery, sequence handling, garbage."""

from __future__ import annotations

import random

import pytest

from channels.telephony.udptl import (
    UdptlDecoder,
    UdptlEncoder,
    UdptlError,
    UdptlPacket,
    decode_packet,
    encode_packet,
)


def test_packet_layout_matches_annex_a() -> None:
    # seq 0x0102, primary of 3 bytes, secondary-ifp-packets choice (0), two secondaries.
    data = encode_packet(UdptlPacket(0x0102, b"\x06\x00\x01", (b"\xaa", b"\xbb\xcc")))
    assert data == bytes.fromhex("0102 03 060001 00 02 01aa 02bbcc")
    assert decode_packet(data) == UdptlPacket(0x0102, b"\x06\x00\x01", (b"\xaa", b"\xbb\xcc"))


def test_long_fields_use_two_byte_lengths() -> None:
    big = bytes(range(256)) * 2
    data = encode_packet(UdptlPacket(7, big, (big,)))
    assert data[2:4] == bytes((0x82, 0x00))
    assert decode_packet(data).secondaries == (big,)


def test_encoder_sends_three_previous_packets_newest_first() -> None:
    enc = UdptlEncoder(redundancy=3, first_seq=65534)
    packets = [decode_packet(enc.encode(bytes([i + 1]))) for i in range(5)]
    assert [p.seq for p in packets] == [65534, 65535, 0, 1, 2]  # wraps at 16 bits
    assert packets[0].secondaries == ()
    assert packets[4].secondaries == (b"\x04", b"\x03", b"\x02")


def test_lost_packets_are_recovered_from_secondaries_in_order() -> None:
    enc, dec = UdptlEncoder(), UdptlDecoder()
    wire = [enc.encode(bytes([i + 1])) for i in range(6)]
    got = dec.feed(wire[0]) + dec.feed(wire[3]) + dec.feed(wire[4])  # 1 and 2 lost
    assert got == [(0, b"\x01"), (1, b"\x02"), (2, b"\x03"), (3, b"\x04"), (4, b"\x05")]
    assert dec.stats.recovered == 2 and dec.stats.lost == 0


def test_more_losses_than_redundancy_are_counted_as_lost() -> None:
    enc, dec = UdptlEncoder(redundancy=3), UdptlDecoder()
    wire = [enc.encode(bytes([i + 1])) for i in range(6)]
    got = dec.feed(wire[0]) + dec.feed(wire[5])
    assert [s for s, _ in got] == [0, 2, 3, 4, 5]
    assert dec.stats.lost == 1


def test_duplicates_and_late_packets_are_dropped() -> None:
    enc, dec = UdptlEncoder(), UdptlDecoder()
    wire = [enc.encode(bytes([i + 1])) for i in range(4)]
    assert dec.feed(wire[0]) == [(0, b"\x01")]
    assert dec.feed(wire[0]) == []
    assert len(dec.feed(wire[2])) == 2  # recovers 1 and delivers 2
    assert dec.feed(wire[1]) == []  # late: already recovered
    assert dec.feed(wire[3]) == [(3, b"\x04")]
    assert dec.stats.duplicates == 2


def test_random_loss_with_redundancy_delivers_each_packet_once() -> None:
    rng = random.Random(7)
    enc, dec = UdptlEncoder(), UdptlDecoder()
    sent = [rng.randbytes(rng.randint(1, 300)) for _ in range(2000)]
    delivered: list[tuple[int, bytes]] = []
    for ifp in sent:
        datagram = enc.encode(ifp)
        if rng.random() >= 0.10:
            delivered += dec.feed(datagram)
    seqs = [s for s, _ in delivered]
    assert seqs == sorted(set(seqs))
    assert all(sent[s] == ifp for s, ifp in delivered)
    assert len(delivered) >= len(sent) - 5  # only a 4-in-a-row loss (or the tail) is lost


@pytest.mark.parametrize("garbage", [
    b"", b"\x00", b"\x00\x01\x05ab", b"\x00\x01\x00\x00", b"\x00\x01\x02ab\x00\x05\x01a",
    b"\x00\x01\x02ab\x00\x01\x09abc", b"\x00\x01\xffabcdef", b"\x00\x01\x02ab", b"\x00\x01\x01a\x00\x00junk",
])
def test_garbage_raises_udptl_error_and_leaves_state_alone(garbage: bytes) -> None:
    enc, dec = UdptlEncoder(), UdptlDecoder()
    assert dec.feed(enc.encode(b"\x01")) == [(0, b"\x01")]
    with pytest.raises(UdptlError):
        dec.feed(garbage)
    assert dec.feed(enc.encode(b"\x02")) == [(1, b"\x02")]
    assert dec.stats.malformed == 1


def test_random_bytes_never_raise_anything_but_udptl_error() -> None:
    rng = random.Random(3)
    dec = UdptlDecoder()
    errors = 0
    for _ in range(5000):
        try:
            dec.feed(rng.randbytes(rng.randint(0, 40)))
        except UdptlError:
            errors += 1
    assert errors > 0 and dec.stats.malformed == errors


def test_fec_packets_deliver_their_primary() -> None:
    # error-recovery CHOICE 1 (fec-info): fec-npackets and fec-data are not used.
    data = bytes.fromhex("0005 02 0a0b 80 01 03 01 02 ff")
    dec = UdptlDecoder()
    assert dec.feed(data) == [(5, b"\x0a\x0b")]

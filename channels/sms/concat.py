"""Concatenated SMS: the three forms (UDH, SAR TLVs, message_payload) in and out.

`segment_of` says which part of which long message a deliver_sm carries (or that it
is whole); `assemble` joins the payload bytes of the parts that arrived, in order,
before decoding, so an escape or a surrogate pair that a sender split across parts
still decodes. Outbound, `with_udh` prefixes each part with an 8- or 16-bit reference.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from channels.sms.pdu import (
    ESM_UDHI,
    TLV_MESSAGE_PAYLOAD,
    TLV_SAR_MSG_REF_NUM,
    TLV_SAR_SEGMENT_SEQNUM,
    TLV_SAR_TOTAL_SEGMENTS,
    PduError,
    ShortMessage,
)
from channels.sms.text import decode_text

IEI_CONCAT_8 = 0x00
IEI_CONCAT_16 = 0x08
# Where missing parts were, in the stored text of an incomplete message.
GAP = " […] "


@dataclass(frozen=True)
class Segment:
    """One deliver_sm's payload; `total` > 1 means it is part `seq` (1-based) of message `ref`."""

    payload: bytes
    data_coding: int
    ref: int = 0
    total: int = 1
    seq: int = 1
    form: str = "single"  # single | udh8 | udh16 | sar | payload

    @property
    def is_part(self) -> bool:
        return self.total > 1


def split_udh(data: bytes) -> tuple[dict[int, bytes], bytes]:
    """(information elements, the rest) of a short_message that starts with a UDH."""
    if not data:
        raise PduError("UDHI set on an empty message")
    udhl = data[0]
    if udhl + 1 > len(data):
        raise PduError("UDH longer than the message")
    header, rest = data[1:udhl + 1], data[udhl + 1:]
    elements: dict[int, bytes] = {}
    i = 0
    while i + 2 <= len(header):
        iei, size = header[i], header[i + 1]
        elements[iei] = bytes(header[i + 2:i + 2 + size])
        i += 2 + size
    return elements, rest


def segment_of(sm: ShortMessage) -> Segment:
    """What part of which message `sm` carries, whichever of the three forms it uses."""
    payload = sm.tlvs.get(TLV_MESSAGE_PAYLOAD)
    if payload is not None and not sm.short_message:
        body, form = payload, "payload"
    else:
        body, form = sm.short_message, "single"
    if sm.esm_class & ESM_UDHI:
        elements, body = split_udh(body)
        if IEI_CONCAT_8 in elements and len(elements[IEI_CONCAT_8]) == 3:
            ref, total, seq = elements[IEI_CONCAT_8]
            return _checked(Segment(body, sm.data_coding, ref, total, seq, "udh8"))
        if IEI_CONCAT_16 in elements and len(elements[IEI_CONCAT_16]) == 4:
            ref, total, seq = struct.unpack(">HBB", elements[IEI_CONCAT_16])
            return _checked(Segment(body, sm.data_coding, ref, total, seq, "udh16"))
    total_sar = sm.tlv_int(TLV_SAR_TOTAL_SEGMENTS)
    if total_sar and total_sar > 1:
        return _checked(Segment(body, sm.data_coding, sm.tlv_int(TLV_SAR_MSG_REF_NUM) or 0, total_sar,
                                sm.tlv_int(TLV_SAR_SEGMENT_SEQNUM) or 0, "sar"))
    return Segment(body, sm.data_coding, form=form)


def _checked(seg: Segment) -> Segment:
    if not 1 <= seg.seq <= seg.total:
        # A nonsense part number cannot be placed; keep the text as a message of its own.
        return Segment(seg.payload, seg.data_coding, form="single")
    return seg


def assemble(parts: dict[int, bytes], total: int, data_coding: int) -> tuple[str, list[int]]:
    """The text of a long message from the parts that arrived, and the part numbers missing.

    Contiguous runs are decoded together; a gap shows as `[…]` so a reader sees text is missing.
    """
    missing = [i for i in range(1, total + 1) if i not in parts]
    pieces: list[str] = []
    current = bytearray()
    for i in range(1, total + 1):
        if i in parts:
            current += parts[i]
            continue
        if current:
            pieces.append(decode_text(bytes(current), data_coding))
            current = bytearray()
        if not pieces or pieces[-1] != GAP:
            pieces.append(GAP)
    if current:
        pieces.append(decode_text(bytes(current), data_coding))
    return "".join(pieces), missing


def with_udh(parts: tuple[bytes, ...], ref: int, *, sixteen_bit: bool = False) -> list[bytes]:
    """Each part prefixed with a concatenation UDH (8- or 16-bit reference)."""
    total = len(parts)
    out = []
    for seq, body in enumerate(parts, start=1):
        if sixteen_bit:
            udh = bytes([6, IEI_CONCAT_16, 4]) + struct.pack(">HBB", ref & 0xFFFF, total, seq)
        else:
            udh = bytes([5, IEI_CONCAT_8, 3, ref & 0xFF, total, seq])
        out.append(udh + body)
    return out


def sar_tlvs(ref: int, total: int, seq: int) -> dict[int, bytes]:
    return {TLV_SAR_MSG_REF_NUM: struct.pack(">H", ref & 0xFFFF),
            TLV_SAR_TOTAL_SEGMENTS: bytes([total]), TLV_SAR_SEGMENT_SEQNUM: bytes([seq])}

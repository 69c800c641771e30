"""SMPP 3.4 wire format: PDU framing, the bodies we send and receive, and TLVs.

Our own codec rather than aiosmpplib: the adapter needs only a dozen PDUs, and
owning the byte layout lets the session close cleanly on a malformed PDU (a
library that raises from its read loop takes the connection's state with it)
and keeps the hot path free of per-PDU object machinery.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from umsg.errors import PermanentError

HEADER = struct.Struct(">IIII")
# A PDU longer than this is garbage (message_payload tops out at 64 KiB).
MAX_PDU_BYTES = 70 * 1024

GENERIC_NACK = 0x80000000
BIND_TRANSCEIVER = 0x00000009
BIND_TRANSCEIVER_RESP = 0x80000009
SUBMIT_SM = 0x00000004
SUBMIT_SM_RESP = 0x80000004
DELIVER_SM = 0x00000005
DELIVER_SM_RESP = 0x80000005
UNBIND = 0x00000006
UNBIND_RESP = 0x80000006
ENQUIRE_LINK = 0x00000015
ENQUIRE_LINK_RESP = 0x80000015

ESME_ROK = 0x00
ESME_RINVMSGLEN = 0x01
ESME_RINVCMDLEN = 0x02
ESME_RINVCMDID = 0x03
ESME_RSYSERR = 0x08
ESME_RBINDFAIL = 0x0D
ESME_RINVPASWD = 0x0E
ESME_RINVSYSID = 0x0F
ESME_RMSGQFUL = 0x14
ESME_RTHROTTLED = 0x58
ESME_RINVSRCADR = 0x0A
ESME_RX_T_APPN = 0x64  # "temporary application error": the SMSC retries later
ESME_RX_P_APPN = 0x65  # "permanent application error": the SMSC gives up on this message

# Statuses after which the same request may succeed later: back off and retry.
THROTTLING = frozenset({ESME_RTHROTTLED, ESME_RMSGQFUL})
TRANSIENT_STATUSES = THROTTLING | {ESME_RSYSERR, ESME_RX_T_APPN, 0x61, 0xFF}

TLV_RECEIPTED_MESSAGE_ID = 0x001E
TLV_SAR_MSG_REF_NUM = 0x020C
TLV_SAR_TOTAL_SEGMENTS = 0x020E
TLV_SAR_SEGMENT_SEQNUM = 0x020F
TLV_MESSAGE_PAYLOAD = 0x0424
TLV_MESSAGE_STATE = 0x0427
TLV_NETWORK_ERROR_CODE = 0x0423

ESM_UDHI = 0x40
ESM_RECEIPT = 0x04
ESM_INTERMEDIATE = 0x20


class PduError(PermanentError):
    """Bytes that are not a valid PDU: the session that received them cannot be trusted further."""


@dataclass(frozen=True)
class Pdu:
    command_id: int
    sequence: int
    status: int = ESME_ROK
    body: bytes = b""

    def encode(self) -> bytes:
        return HEADER.pack(HEADER.size + len(self.body), self.command_id, self.status, self.sequence) + self.body

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & 0x80000000)


def frame_length(header: bytes) -> int:
    """The full length announced by the first four bytes; raises PduError when it cannot be real."""
    (length,) = struct.unpack(">I", header[:4])
    if length < HEADER.size or length > MAX_PDU_BYTES:
        raise PduError(f"PDU length {length} is impossible")
    return int(length)


def decode(frame: bytes) -> Pdu:
    length, command_id, status, sequence = HEADER.unpack_from(frame)
    if length != len(frame):
        raise PduError(f"PDU says {length} bytes but {len(frame)} arrived")
    return Pdu(command_id, sequence, status, bytes(frame[HEADER.size:]))


def cstring(value: str, limit: int) -> bytes:
    raw = value.encode("latin-1")
    if len(raw) >= limit:
        raise PermanentError(f"{value!r} is longer than the {limit - 1} bytes SMPP allows here")
    return raw + b"\0"


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def cstring(self, limit: int = 256) -> str:
        end = self.data.find(b"\0", self.pos, self.pos + limit)
        if end < 0:
            raise PduError("unterminated C-octet string")
        value = self.data[self.pos:end].decode("latin-1")
        self.pos = end + 1
        return value

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise PduError("PDU body ends early")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise PduError("PDU body ends early")
        value = self.data[self.pos:self.pos + n]
        self.pos += n
        return value

    def tlvs(self) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        while self.pos < len(self.data):
            tag, size = struct.unpack(">HH", self.take(4))
            out[tag] = self.take(size)
        return out


def bind_body(system_id: str, password: str, system_type: str = "", *, ton: int = 0, npi: int = 0,
              address_range: str = "") -> bytes:
    return (cstring(system_id, 16) + cstring(password, 9) + cstring(system_type, 13)
            + bytes([0x34, ton, npi]) + cstring(address_range, 41))


def message_id_body(message_id: str) -> bytes:
    """The body of submit_sm_resp / deliver_sm_resp / bind_*_resp (one C-string)."""
    return cstring(message_id, 66)


def read_message_id(body: bytes) -> str:
    """The message_id (or system_id) of a *_resp body; empty when the body is empty."""
    return _Reader(body).cstring(66) if body else ""


@dataclass(frozen=True)
class ShortMessage:
    """The shared body of submit_sm and deliver_sm."""

    source: str
    destination: str
    short_message: bytes = b""
    data_coding: int = 0
    esm_class: int = 0
    registered_delivery: int = 0
    source_ton: int = 0
    source_npi: int = 0
    dest_ton: int = 0
    dest_npi: int = 0
    service_type: str = ""
    protocol_id: int = 0
    tlvs: dict[int, bytes] = field(default_factory=dict)

    def encode(self) -> bytes:
        if len(self.short_message) > 254:
            raise PermanentError("short_message is longer than 254 bytes; use message_payload")
        head = (cstring(self.service_type, 6) + bytes([self.source_ton, self.source_npi])
                + cstring(self.source, 21) + bytes([self.dest_ton, self.dest_npi]) + cstring(self.destination, 21)
                + bytes([self.esm_class, self.protocol_id, 0]) + b"\0\0"
                + bytes([self.registered_delivery, 0, self.data_coding, 0, len(self.short_message)]))
        tail = b"".join(struct.pack(">HH", t, len(v)) + v for t, v in self.tlvs.items())
        return head + self.short_message + tail

    @classmethod
    def decode(cls, body: bytes) -> ShortMessage:
        r = _Reader(body)
        service_type = r.cstring(6)
        source_ton, source_npi = r.byte(), r.byte()
        source = r.cstring(21)
        dest_ton, dest_npi = r.byte(), r.byte()
        destination = r.cstring(21)
        esm_class, protocol_id, _priority = r.byte(), r.byte(), r.byte()
        r.cstring(17)  # schedule_delivery_time
        r.cstring(17)  # validity_period
        registered, _replace, data_coding, _default_id, sm_length = (r.byte() for _ in range(5))
        short_message = r.take(sm_length)
        return cls(source=source, destination=destination, short_message=short_message,
                   data_coding=data_coding, esm_class=esm_class, registered_delivery=registered,
                   source_ton=source_ton, source_npi=source_npi, dest_ton=dest_ton, dest_npi=dest_npi,
                   service_type=service_type, protocol_id=protocol_id, tlvs=r.tlvs())

    def tlv_int(self, tag: int) -> int | None:
        raw = self.tlvs.get(tag)
        return int.from_bytes(raw, "big") if raw else None

    def tlv_str(self, tag: int) -> str | None:
        raw = self.tlvs.get(tag)
        return raw.split(b"\0", 1)[0].decode("latin-1") if raw is not None else None


def status_name(status: int) -> str:
    names = {ESME_ROK: "ESME_ROK", ESME_RINVMSGLEN: "ESME_RINVMSGLEN", ESME_RINVCMDLEN: "ESME_RINVCMDLEN",
             ESME_RINVCMDID: "ESME_RINVCMDID", ESME_RSYSERR: "ESME_RSYSERR", ESME_RBINDFAIL: "ESME_RBINDFAIL",
             ESME_RINVPASWD: "ESME_RINVPASWD", ESME_RINVSYSID: "ESME_RINVSYSID", ESME_RMSGQFUL: "ESME_RMSGQFUL",
             ESME_RTHROTTLED: "ESME_RTHROTTLED", ESME_RX_T_APPN: "ESME_RX_T_APPN"}
    return f"{names.get(status, 'status')} (0x{status:08X})"

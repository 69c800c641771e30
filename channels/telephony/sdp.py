"""SDP (RFC 4566) for the offer/answer model (RFC 3264): audio with G.711 and RFC 4733 events,
and `m=image <port> udptl t38` for fax.

`parse` is tolerant (unknown lines are kept and ignored); `answer_audio` picks the first of the
peer's formats we support (PCMU 0, PCMA 8), keeps its telephone-event payload type and ptime
(20 or 30 ms, default 20); `answer_image` accepts a T.38 offer. `SessionDescription.to_bytes`
produces what we send.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

PCMU, PCMA = 0, 8
CODEC_NAMES = {PCMU: "PCMU", PCMA: "PCMA"}
SUPPORTED_PTIME = (20, 30)


class SdpError(ValueError):
    """The SDP cannot be parsed or offers nothing we can use (answered with 488)."""


@dataclass
class Media:
    kind: str  # audio | image
    port: int
    proto: str  # RTP/AVP | udptl
    formats: list[str]
    rtpmap: dict[int, str] = field(default_factory=dict)  # pt -> "telephone-event/8000"
    fmtp: dict[int, str] = field(default_factory=dict)
    attributes: list[str] = field(default_factory=list)  # other a= lines, verbatim (T.38 params)
    ptime: int | None = None
    connection: str | None = None
    direction: str = "sendrecv"

    def payload_types(self) -> list[int]:
        return [int(f) for f in self.formats if f.isdigit()]

    def event_pt(self) -> int | None:
        return next((pt for pt, enc in self.rtpmap.items() if enc.lower().startswith("telephone-event/")), None)


@dataclass
class SessionDescription:
    origin_address: str
    connection: str | None
    media: list[Media]
    session_id: int = 0
    version: int = 0
    session_name: str = "umsg"

    def first(self, kind: str) -> Media | None:
        return next((m for m in self.media if m.kind == kind and m.port > 0), None)

    def address_for(self, media: Media) -> str:
        addr = media.connection or self.connection
        if not addr:
            raise SdpError("no connection address")
        return addr

    def to_bytes(self) -> bytes:
        lines = ["v=0", f"o=umsg {self.session_id} {self.version} IN IP4 {self.origin_address}",
                 f"s={self.session_name}"]
        if self.connection:
            lines.append(f"c=IN IP4 {self.connection}")
        lines.append("t=0 0")
        for m in self.media:
            lines.append(f"m={m.kind} {m.port} {m.proto} {' '.join(m.formats)}")
            if m.connection and m.connection != self.connection:
                lines.append(f"c=IN IP4 {m.connection}")
            for pt, enc in m.rtpmap.items():
                lines.append(f"a=rtpmap:{pt} {enc}")
            for pt, params in m.fmtp.items():
                lines.append(f"a=fmtp:{pt} {params}")
            if m.ptime:
                lines.append(f"a=ptime:{m.ptime}")
            lines.extend(f"a={a}" for a in m.attributes)
            if m.kind == "audio":
                lines.append(f"a={m.direction}")
        return ("\r\n".join(lines) + "\r\n").encode("ascii")


def parse(data: bytes) -> SessionDescription:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SdpError("SDP is not UTF-8") from exc
    origin, conn, media = "", None, []
    sid = ver = 0
    current: Media | None = None
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        key, value = line[0], line[2:]
        if key == "o":
            parts = value.split()
            if len(parts) >= 6:
                origin = parts[5]
                sid = int(parts[1]) if parts[1].isdigit() else 0
                ver = int(parts[2]) if parts[2].isdigit() else 0
        elif key == "c":
            parts = value.split()
            addr = parts[2].split("/", 1)[0] if len(parts) >= 3 else None
            if current is None:
                conn = addr
            else:
                current.connection = addr
        elif key == "m":
            parts = value.split()
            if len(parts) < 3 or not parts[1].split("/", 1)[0].isdigit():
                raise SdpError(f"bad m= line {value!r}")
            current = Media(parts[0].lower(), int(parts[1].split("/", 1)[0]), parts[2], parts[3:])
            media.append(current)
        elif key == "a" and current is not None:
            _attribute(current, value)
    if not media:
        raise SdpError("no media")
    return SessionDescription(origin, conn, media, sid, ver)


def _attribute(m: Media, value: str) -> None:
    name, _, rest = value.partition(":")
    if name == "rtpmap":
        pt, _, enc = rest.partition(" ")
        if pt.isdigit():
            m.rtpmap[int(pt)] = enc.strip()
    elif name == "fmtp":
        pt, _, params = rest.partition(" ")
        if pt.isdigit():
            m.fmtp[int(pt)] = params.strip()
    elif name == "ptime" and rest.strip().isdigit():
        m.ptime = int(rest.strip())
    elif name in ("sendrecv", "sendonly", "recvonly", "inactive"):
        m.direction = name
    else:
        m.attributes.append(value)


@dataclass(frozen=True)
class AudioChoice:
    """What an audio negotiation settled on."""

    payload_type: int
    event_pt: int | None
    ptime: int
    remote_address: str
    remote_port: int


def choose_audio(offer: SessionDescription) -> AudioChoice:
    m = offer.first("audio")
    if m is None or not m.proto.upper().startswith("RTP/AVP"):
        raise SdpError("no RTP audio stream offered")
    codec = next((pt for pt in m.payload_types() if pt in CODEC_NAMES
                  and m.rtpmap.get(pt, CODEC_NAMES[pt]).upper().startswith(CODEC_NAMES[pt])), None)
    if codec is None:
        raise SdpError("neither PCMU nor PCMA offered")
    ptime = m.ptime if m.ptime in SUPPORTED_PTIME else 20
    return AudioChoice(codec, m.event_pt(), ptime, offer.address_for(m), m.port)


def audio_description(local_ip: str, port: int, choice: AudioChoice, session_id: int, version: int = 0,
                      *, direction: str = "sendrecv") -> SessionDescription:
    """Our answer (or offer) for an audio stream with `choice`'s codec and events."""
    formats = [str(choice.payload_type)]
    rtpmap = {choice.payload_type: f"{CODEC_NAMES[choice.payload_type]}/8000"}
    fmtp: dict[int, str] = {}
    if choice.event_pt is not None:
        formats.append(str(choice.event_pt))
        rtpmap[choice.event_pt] = "telephone-event/8000"
        fmtp[choice.event_pt] = "0-16"
    media = Media("audio", port, "RTP/AVP", formats, rtpmap, fmtp, ptime=choice.ptime, direction=direction)
    return SessionDescription(local_ip, local_ip, [media], session_id, version)


def audio_offer(local_ip: str, port: int, session_id: int, version: int = 0) -> SessionDescription:
    """An offer for outgoing calls: PCMU, PCMA and telephone-event 101, ptime 20."""
    media = Media("audio", port, "RTP/AVP", ["0", "8", "101"],
                  {0: "PCMU/8000", 8: "PCMA/8000", 101: "telephone-event/8000"}, {101: "0-16"}, ptime=20)
    return SessionDescription(local_ip, local_ip, [media], session_id, version)


T38_DEFAULT_ATTRIBUTES = ("T38FaxVersion:0", "T38MaxBitRate:14400", "T38FaxRateManagement:transferredTCF",
                          "T38FaxMaxBuffer:2000", "T38FaxMaxDatagram:400", "T38FaxUdpEC:t38UDPRedundancy")


def image_description(local_ip: str, port: int, session_id: int, version: int = 0,
                      attributes: tuple[str, ...] = T38_DEFAULT_ATTRIBUTES) -> SessionDescription:
    """`m=image <port> udptl t38` with T.38 parameters (offer, or answer echoing the peer's)."""
    media = Media("image", port, "udptl", ["t38"], attributes=list(attributes))
    return SessionDescription(local_ip, local_ip, [media], session_id, version)


def t38_offered(desc: SessionDescription) -> Media | None:
    """The T.38 stream of a description, when it has one with a non-zero port."""
    m = desc.first("image")
    if m is not None and m.proto.lower() == "udptl" and "t38" in [f.lower() for f in m.formats]:
        return m
    return None


def new_session_id() -> int:
    return secrets.randbelow(2**31)

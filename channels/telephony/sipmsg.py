"""SIP messages (RFC 3261 §7): tolerant parsing, serialising and the header helpers the stack needs.

Parsing never trusts the peer: sizes are bounded (`MAX_MESSAGE_BYTES`, `MAX_HEADERS`), line
endings may be CRLF or bare LF, compact header names are expanded, folded lines are joined, and
anything that is not a SIP message raises `SipParseError` (the listener answers 400 when it can
find enough headers to address a response, otherwise drops the datagram).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

MAX_MESSAGE_BYTES = 64 * 1024
MAX_HEADERS = 128
MAX_BODY_BYTES = 32 * 1024

# RFC 3261 §7.3.3 compact forms.
_COMPACT = {"i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
            "c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to", "v": "via"}
# Canonical spelling used when we serialise headers we built ourselves.
_CANON = {"call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate",
          "content-length": "Content-Length", "content-type": "Content-Type", "max-forwards": "Max-Forwards"}
_METHOD = re.compile(r"^[A-Z][A-Z0-9._!%*+`'~-]*$")

REASONS = {100: "Trying", 180: "Ringing", 200: "OK", 400: "Bad Request", 401: "Unauthorized",
           404: "Not Found", 405: "Method Not Allowed", 407: "Proxy Authentication Required",
           408: "Request Timeout", 413: "Request Entity Too Large", 415: "Unsupported Media Type",
           481: "Call/Transaction Does Not Exist", 486: "Busy Here", 487: "Request Terminated",
           488: "Not Acceptable Here", 491: "Request Pending", 500: "Server Internal Error",
           503: "Service Unavailable"}


class SipParseError(ValueError):
    """The bytes are not a SIP message we accept."""


def canonical(name: str) -> str:
    low = name.lower()
    low = _COMPACT.get(low, low)
    return _CANON.get(low) or "-".join(p.capitalize() for p in low.split("-"))


@dataclass
class SipMessage:
    """A request (`method` set) or a response (`status` set); headers keep their order."""

    method: str | None = None
    uri: str = ""
    status: int = 0
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def get(self, name: str, default: str | None = None) -> str | None:
        want = canonical(name)
        return next((v for n, v in self.headers if n == want), default)

    def get_all(self, name: str) -> list[str]:
        want = canonical(name)
        return [v for n, v in self.headers if n == want]

    def set(self, name: str, value: str) -> None:
        want = canonical(name)
        self.headers = [(n, v) for n, v in self.headers if n != want] + [(want, value)]

    def add(self, name: str, value: str) -> None:
        self.headers.append((canonical(name), value))

    @property
    def call_id(self) -> str:
        return self.get("call-id") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        num, _, method = (self.get("cseq") or "").strip().partition(" ")
        try:
            return int(num), method.strip().upper()
        except ValueError:
            return 0, method.strip().upper()

    @property
    def branch(self) -> str:
        via = self.get("via") or ""
        return header_param(via, "branch") or ""

    def to_bytes(self) -> bytes:
        first = (f"{self.method} {self.uri} SIP/2.0" if self.method is not None
                 else f"SIP/2.0 {self.status} {self.reason or REASONS.get(self.status, 'Unknown')}")
        lines = [first] + [f"{n}: {v}" for n, v in self.headers if n != "Content-Length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    for sep in (b"\r\n\r\n", b"\n\n"):
        head, found, rest = data.partition(sep)
        if found:
            return head, rest
    raise SipParseError("no blank line after the headers")


def parse(data: bytes, *, stream: bool = False) -> SipMessage:
    """Parse one message. With `stream` (TCP) the body length comes only from Content-Length."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError(f"message of {len(data)} bytes is over {MAX_MESSAGE_BYTES}")
    head, body = _split_head(data.lstrip(b"\r\n"))
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError("headers are not UTF-8") from exc
    raw_lines = text.replace("\r\n", "\n").split("\n")
    msg = _start_line(raw_lines[0])
    lines: list[str] = []
    for line in raw_lines[1:]:
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += " " + line.strip()  # folded header continuation
        else:
            lines.append(line)
    if len(lines) > MAX_HEADERS:
        raise SipParseError("too many headers")
    for line in lines:
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not name or " " in name:
            raise SipParseError(f"bad header line {line[:40]!r}")
        msg.headers.append((canonical(name), value.strip()))
    length_text = msg.get("content-length")
    if length_text is not None:
        try:
            length = int(length_text)
        except ValueError as exc:
            raise SipParseError("bad Content-Length") from exc
        if length < 0 or length > MAX_BODY_BYTES:
            raise SipParseError(f"Content-Length {length} out of range")
        if len(body) < length:
            raise SipParseError("body shorter than Content-Length (truncated)")
        body = body[:length]
    elif stream:
        body = b""
    if len(body) > MAX_BODY_BYTES:
        raise SipParseError("body too large")
    msg.body = body
    for required in ("via", "call-id", "cseq", "from", "to"):
        if msg.get(required) is None:
            raise SipParseError(f"missing {canonical(required)} header")
    num, method = msg.cseq
    if num <= 0 or not method:
        raise SipParseError("bad CSeq")
    return msg


def _start_line(line: str) -> SipMessage:
    parts = line.strip().split(" ", 2)
    if len(parts) < 2:
        raise SipParseError("bad start line")
    if parts[0] == "SIP/2.0":
        if not parts[1].isdigit() or not 100 <= int(parts[1]) <= 699:
            raise SipParseError("bad status code")
        return SipMessage(status=int(parts[1]), reason=parts[2] if len(parts) > 2 else "")
    if len(parts) != 3 or parts[2] != "SIP/2.0" or not _METHOD.match(parts[0]):
        raise SipParseError("bad request line")
    if ":" not in parts[1]:
        raise SipParseError("bad request URI")
    return SipMessage(method=parts[0], uri=parts[1])


def header_param(value: str, name: str) -> str | None:
    """A `;name=value` parameter of a header (outside any <...> URI)."""
    tail = value.rsplit(">", 1)[1] if ">" in value else value
    for part in tail.split(";")[1:]:
        key, _, val = part.partition("=")
        if key.strip().lower() == name:
            return val.strip().strip('"')
    return None


@dataclass(frozen=True)
class NameAddr:
    """A From/To/Contact value: display name, URI and the tag parameter."""

    display: str | None
    uri: str
    tag: str | None

    @property
    def user(self) -> str:
        return uri_user(self.uri)


def parse_name_addr(value: str) -> NameAddr:
    value = value.strip()
    if "<" in value and ">" in value:
        display, _, rest = value.partition("<")
        uri = rest.split(">", 1)[0].strip()
        name = display.strip().strip('"').strip() or None
    else:
        uri, name = value.split(";", 1)[0].strip(), None
    return NameAddr(name, uri, header_param(value, "tag"))


def uri_user(uri: str) -> str:
    """The user part of `sip:user@host;params` (empty when there is none)."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    user, at, _host = rest.partition("@")
    return user.split(";", 1)[0] if at else ""


def uri_hostport(uri: str) -> tuple[str, int | None]:
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    rest = rest.split("@", 1)[1] if "@" in rest else rest
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    host, _, port = rest.partition(":")
    return host, int(port) if port.isdigit() else None


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


def response_to(req: SipMessage, status: int, reason: str = "", *, to_tag: str | None = None) -> SipMessage:
    """A response copying Via, From, To (plus our tag), Call-ID and CSeq from the request (§8.2.6)."""
    resp = SipMessage(status=status, reason=reason or REASONS.get(status, ""))
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for v in req.get_all(name):
            if name == "To" and to_tag and status > 100 and header_param(v, "tag") is None:
                v = f"{v};tag={to_tag}"
            resp.add(name, v)
    return resp

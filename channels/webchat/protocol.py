"""The customer websocket's frames: JSON objects with a `type`, validated before anything runs.

Client → server: `hello`, `prechat`, `message`, `typing`, `leave_message`, `rate`, `end`,
`ping`. Server → client: `welcome`, `ack`, `message`, `typing`, `agent`, `closed`,
`status`, `ok`, `pong`, `error`. README.md ("Web chat protocol") describes each one; a
frame that does not validate is answered with an `error` frame and the socket stays open.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from umsg.errors import UmsgError

ClientId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Email = Annotated[str, Field(min_length=3, max_length=320, pattern=r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")]
Name = Annotated[str, Field(min_length=1, max_length=200)]
# Generous bound for a whole frame; `max_text_chars` of the settings bounds the text itself.
MAX_FRAME_BYTES = 256 * 1024
# Frames are flat objects; anything nested deeper is refused before validation walks it.
MAX_DEPTH = 8


class ProtocolError(UmsgError):
    """A frame the server cannot act on; answered with an `error` frame."""

    def __init__(self, code: str, message: str, client_id: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.client_id = client_id
        self.retry_after = retry_after

    def frame(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "error", "code": self.code, "message": self.message}
        if self.client_id is not None:
            out["client_id"] = self.client_id
        if self.retry_after is not None:
            out["retry_after"] = max(1, round(self.retry_after + 0.5))
        return out


def _too_deep(value: object, limit: int) -> bool:
    """Is `value` nested deeper than `limit`? Iterative: a hostile frame cannot recurse us."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Hello(_Frame):
    type: Literal["hello"]
    token: str | None = Field(default=None, max_length=200)
    page: str | None = Field(default=None, max_length=2000)


class Prechat(_Frame):
    type: Literal["prechat"]
    name: Name | None = None
    email: Email | None = None


class Say(_Frame):
    type: Literal["message"]
    client_id: ClientId
    text: str = Field(min_length=1)


class Typing(_Frame):
    type: Literal["typing"]
    on: bool = True


class LeaveMessage(_Frame):
    type: Literal["leave_message"]
    client_id: ClientId
    email: Email
    name: Name | None = None
    text: str = Field(min_length=1)


class Rate(_Frame):
    type: Literal["rate"]
    score: int = Field(ge=1, le=5)
    comment: str | None = Field(default=None, max_length=2000)


class End(_Frame):
    type: Literal["end"]
    transcript: bool = False


class Ping(_Frame):
    type: Literal["ping"]


ClientFrame = Annotated[Hello | Prechat | Say | Typing | LeaveMessage | Rate | End | Ping,
                        Field(discriminator="type")]
_FRAMES: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)
TYPES = ("hello", "prechat", "message", "typing", "leave_message", "rate", "end", "ping")


def parse_frame(raw: str | bytes, max_text_chars: int) -> ClientFrame:
    """Validate one client frame; ProtocolError says what is wrong (and echoes a client id if any)."""
    if len(raw) > MAX_FRAME_BYTES:
        raise ProtocolError("too_large", f"frames are limited to {MAX_FRAME_BYTES} bytes")
    try:
        data = json.loads(raw)
    except RecursionError:
        # The C decoder gives up at the interpreter's recursion limit: a hostile nesting.
        raise ProtocolError("too_deep", f"frames may nest at most {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("bad_json", 'frames must be JSON objects like {"type": "ping"}') from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_frame", 'frames must be JSON objects like {"type": "ping"}')
    if _too_deep(data, MAX_DEPTH):
        raise ProtocolError("too_deep", f"frames may nest at most {MAX_DEPTH} levels")
    cid = data.get("client_id")
    client_id = cid if isinstance(cid, str) and len(cid) <= 64 else None
    if data.get("type") not in TYPES:
        raise ProtocolError("unknown_type", f"unknown frame type; expected one of {', '.join(TYPES)}", client_id)
    try:
        frame = _FRAMES.validate_python(data)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'frame'}: {e['msg']}"
                           for e in exc.errors())
        raise ProtocolError("invalid", detail, client_id) from None
    text = getattr(frame, "text", None)
    if isinstance(text, str) and len(text) > max_text_chars:
        raise ProtocolError("too_long", f"messages are limited to {max_text_chars} characters", client_id)
    return frame

"""Turning request bytes and query strings into validated pydantic models.

Each step fails with a message that says where: the line and column of a JSON
syntax error, the dotted path of a field that failed validation. Values the
store cannot hold (NUL characters, which PostgreSQL rejects; absurd nesting)
are refused here so they never reach the database as a 500.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from umsg.errors import NotFound
from umsg.web.errors import bad_request, invalid

M = TypeVar("M", bound=BaseModel)

MAX_DEPTH = 32
# Ids are BIGINT on PostgreSQL; a larger number would be a driver error, not a 404.
MAX_ID = 2**63 - 1


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode_json(raw: bytes) -> Any:
    """Parse `raw` as JSON (an empty body is an empty object) or raise a 400 saying where it broke."""
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(f"request body is not UTF-8 (invalid byte at offset {exc.start})") from exc
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise bad_request(
            f"malformed JSON at line {exc.lineno} column {exc.colno} (character {exc.pos}): {exc.msg}"
        ) from exc
    except ValueError as exc:  # NaN / Infinity, refused by _reject_constant
        raise bad_request(f"malformed JSON: {exc}") from exc
    except RecursionError as exc:
        raise bad_request("malformed JSON: nested too deeply") from exc


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def check_values(data: Any, prefix: str = "body", loc: tuple[int | str, ...] = ()) -> None:
    """Refuse NUL characters and nesting deeper than MAX_DEPTH anywhere in decoded JSON."""
    if len(loc) > MAX_DEPTH:
        raise invalid([{"field": _field(prefix, loc), "message": f"nested deeper than {MAX_DEPTH} levels"}])
    if isinstance(data, str):
        if "\x00" in data:
            raise invalid(
                [{"field": _field(prefix, loc), "message": "must not contain NUL (\\u0000) characters"}]
            )
    elif isinstance(data, dict):
        for k, v in data.items():
            if "\x00" in k:
                raise invalid(
                    [{"field": _field(prefix, loc), "message": "keys must not contain NUL characters"}]
                )
            check_values(v, prefix, (*loc, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            check_values(v, prefix, (*loc, i))


def _field(prefix: str, loc: tuple[int | str, ...]) -> str:
    path = _where(loc) if loc else ""
    if not path:
        return prefix
    return f"{prefix}{path}" if path.startswith("[") else f"{prefix}.{path}"


def validate(model: type[M], data: Any, prefix: str = "body") -> M:
    """Validate decoded data against `model`, raising a 422 that names every bad field."""
    check_values(data, prefix)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = [
            {"field": _field(prefix, tuple(e["loc"])), "message": e["msg"]}
            for e in exc.errors(include_url=False)
        ]
        raise invalid(fields) from exc


def validate_query(model: type[M], query: Mapping[str, str]) -> M:
    """Validate query parameters; a repeated parameter keeps its last value."""
    data = {k: v for k, v in query.items() if k != "access_token"}
    return validate(model, data, prefix="query")


def parse_id(raw: str, kind: str) -> int:
    """An id from a URL: anything that is not a plausible id is simply not found."""
    if raw.isascii() and raw.isdigit():
        value = int(raw)
        if 1 <= value <= MAX_ID:
            return value
    raise NotFound(f"{kind} {raw!r} not found")

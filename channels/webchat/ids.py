"""Visitor identity: ids the server makes up, tokens it signs, and keys derived from them.

A visitor id is random (`v_` + 22 url-safe characters) and means nothing by itself; the
token the browser keeps in localStorage is `<visitor id>.<signature>`, the signature an
HMAC-SHA256 of the channel instance and the id under the channel's secret. Only the server
can make a token, so nobody can read another visitor's history by guessing or copying an id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import unicodedata

VISITOR_RE = re.compile(r"^v_[A-Za-z0-9_-]{22}$")
# The client's own message ids: printable, short, no separators we use in keys.
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_FILENAME = 200


def new_visitor_id() -> str:
    return "v_" + secrets.token_urlsafe(16)[:22]


def _signature(secret: str, scope: str, visitor_id: str) -> str:
    mac = hmac.new(secret.encode(), f"{scope}\n{visitor_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def sign_visitor(secret: str, scope: str, visitor_id: str) -> str:
    """The token for `visitor_id`; `scope` (the channel instance) keeps tokens of two chats apart."""
    if not VISITOR_RE.match(visitor_id):
        raise ValueError(f"not a visitor id: {visitor_id!r}")
    return f"{visitor_id}.{_signature(secret, scope, visitor_id)}"


def verify_visitor(secret: str, scope: str, token: object) -> str | None:
    """The visitor id a token proves, or None for anything forged, truncated or malformed."""
    if not isinstance(token, str) or len(token) > 200:
        return None
    visitor_id, sep, sig = token.partition(".")
    if not sep or not VISITOR_RE.match(visitor_id) or not sig.isascii():
        return None
    return visitor_id if hmac.compare_digest(_signature(secret, scope, visitor_id), sig) else None


def dedupe_key(visitor_id: str, client_id: str) -> str:
    """The ingest dedupe key of a visitor's message: a resend with the same client id is a duplicate."""
    if not CLIENT_ID_RE.match(client_id):
        raise ValueError(f"not a client id: {client_id!r}")
    return f"webchat:{visitor_id}:{client_id}"


def thread_key(scope: str, visitor_id: str) -> str:
    """The thread key every message of a visitor carries, so they continue one conversation."""
    return f"webchat:{scope}:{visitor_id}"


def safe_filename(name: str | None, default: str = "file") -> str:
    """A file name fit to store and show: no path, no control characters, bounded length."""
    text = unicodedata.normalize("NFC", name or "")
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C").strip().lstrip(".")
    return text[:_MAX_FILENAME] or default

"""HMAC-SHA256 signatures of webhook bodies, in the `sha256=<hex>` form GitHub made common."""

from __future__ import annotations

import hashlib
import hmac

from umsg.errors import PermanentError

HEADER = "X-Umsg-Signature"
_PREFIX = "sha256="


def sign(secret: str, body: bytes) -> str:
    """The signature header value for `body`."""
    return _PREFIX + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> None:
    """Raise PermanentError unless `header` is the signature of `body` (constant-time compare)."""
    if not header or not header.startswith(_PREFIX):
        raise PermanentError(f"missing or malformed {HEADER} header")
    if not hmac.compare_digest(sign(secret, body), header.strip()):
        raise PermanentError(f"{HEADER} does not match the body")

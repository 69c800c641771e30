"""HTTP digest authentication for SIP requests we send (RFC 3261 §22, RFC 2617, RFC 8760).

A 401 carries `WWW-Authenticate`, a 407 `Proxy-Authenticate`; the retried request answers with
`Authorization` or `Proxy-Authorization`. MD5 and SHA-256, with `qop=auth` when offered (or
without qop, RFC 2069 style, when the challenge names none). `auth-int` is not supported: no
peer we met asks for it, and a challenge offering only it is refused.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field

_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]+)\s*,?')
_HASHES = {"md5": hashlib.md5, "sha-256": hashlib.sha256}


class DigestError(ValueError):
    """A challenge we cannot answer (not Digest, unknown algorithm, only auth-int)."""


@dataclass(frozen=True)
class Credentials:
    """A SIP account's user name and password; the password never appears in a repr."""

    username: str
    password: str = field(repr=False)
    realm: str | None = None  # when set, only challenges for this realm are answered

    def __str__(self) -> str:
        return f"{self.username}:***" + (f"@{self.realm}" if self.realm else "")


def parse_challenge(value: str) -> dict[str, str]:
    """The parameters of a `Digest ...` challenge (keys lower-case, quotes removed)."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"not a digest challenge: {scheme!r}")
    params = {}
    for match in _PARAM.finditer(rest):
        raw = match.group(2)
        params[match.group(1).lower()] = raw[1:-1].replace('\\"', '"') if raw.startswith('"') else raw
    if "realm" not in params or "nonce" not in params:
        raise DigestError("challenge without realm or nonce")
    return params


def _hash(algorithm: str, text: str) -> str:
    return _HASHES[algorithm](text.encode("utf-8")).hexdigest()


def authorization(challenge: dict[str, str], method: str, uri: str, creds: Credentials, *,
                  nc: int = 1, cnonce: str | None = None) -> str:
    """The `Authorization` value answering `challenge` for `method uri`."""
    if creds.realm is not None and creds.realm != challenge["realm"]:
        raise DigestError(f"no credentials for realm {challenge['realm']!r}")
    algorithm = challenge.get("algorithm", "MD5").lower()
    if algorithm not in _HASHES:
        raise DigestError(f"unsupported digest algorithm {algorithm!r}")
    qops = [q.strip() for q in challenge.get("qop", "").split(",") if q.strip()]
    if qops and "auth" not in qops:
        raise DigestError(f"unsupported qop {challenge['qop']!r}")
    realm, nonce = challenge["realm"], challenge["nonce"]
    ha1 = _hash(algorithm, f"{creds.username}:{realm}:{creds.password}")
    ha2 = _hash(algorithm, f"{method}:{uri}")
    parts = [f'username="{creds.username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
    if qops:
        cnonce = cnonce or secrets.token_hex(8)
        count = f"{nc:08x}"
        response = _hash(algorithm, f"{ha1}:{nonce}:{count}:{cnonce}:auth:{ha2}")
        parts += [f'response="{response}"', "qop=auth", f"nc={count}", f'cnonce="{cnonce}"']
    else:
        parts.append(f'response="{_hash(algorithm, f"{ha1}:{nonce}:{ha2}")}"')
    parts.append(f"algorithm={challenge.get('algorithm', 'MD5')}")
    if "opaque" in challenge:
        parts.append(f'opaque="{challenge["opaque"]}"')
    return "Digest " + ", ".join(parts)

"""Agent passwords: scrypt hashes (stdlib), checked in a thread so the event loop never stalls.

The stored form names its parameters (`scrypt$n$r$p$salt$hash`, base64 parts), so a hash
made with older, cheaper parameters still verifies and `needs_rehash` tells the sign-in to
store a fresh one (transparent re-hash). The parameters are OWASP's current scrypt guidance
(N=2^17, r=8, p=1): about 128 MiB and a few hundred milliseconds per hash, so hashing runs in
a thread and at most `PasswordHasher.concurrency` hashes run at once (a burst of sign-ins
must not allocate gigabytes).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from aiohttp import web

N, R, P = 2**17, 8, 1
_LEN = 32
# scrypt needs 128·N·r bytes; the stdlib's default ceiling (32 MiB) refuses N=2^17.
_MAXMEM = 2 * 128 * N * R
# Hashes of other parameters are still checked up to this cost (and re-hashed on sign-in);
# a stored hash asking for more is refused rather than allowed to exhaust memory.
_MAX_N = 2**20


@dataclass(frozen=True)
class ScryptParams:
    n: int = N
    r: int = R
    p: int = P


CURRENT = ScryptParams()
# Checked when the login is unknown, so a wrong login costs as long as a wrong password.
_DUMMY_SALT = b"\0" * 16


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _derive(password: str, salt: bytes, params: ScryptParams) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=params.n, r=params.r, p=params.p,
                          dklen=_LEN, maxmem=max(_MAXMEM, 2 * 128 * params.n * params.r * params.p))


def hash_password_sync(password: str, params: ScryptParams = CURRENT) -> str:
    """A fresh salted scrypt hash of `password` (blocking: call it in a thread)."""
    salt = secrets.token_bytes(16)
    digest = _derive(password, salt, params)
    return f"scrypt${params.n}${params.r}${params.p}${_b64(salt)}${_b64(digest)}"


def _parse(stored: str) -> tuple[ScryptParams, bytes, bytes]:
    scheme, n, r, p, salt, digest = stored.split("$")
    params = ScryptParams(int(n), int(r), int(p))
    if scheme != "scrypt" or not 2 <= params.n <= _MAX_N or not 1 <= params.r <= 32 or not 1 <= params.p <= 16:
        raise ValueError("not a scrypt hash this gateway checks")
    return params, base64.b64decode(salt), base64.b64decode(digest)


def verify_password_sync(password: str, stored: str | None) -> bool:
    """True when `password` matches `stored` (blocking: call it in a thread)."""
    if stored is None:
        _derive(password, _DUMMY_SALT, CURRENT)
        return False
    try:
        params, salt, digest = _parse(stored)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(_derive(password, salt, params), digest)


def needs_rehash(stored: str | None) -> bool:
    """True when `stored` was made with weaker parameters than the current ones (a stronger hash,
    from a later version or set by hand, is kept)."""
    if stored is None:
        return False
    try:
        params, _salt, _digest = _parse(stored)
    except (ValueError, TypeError):
        return True
    return params.n < CURRENT.n or params.r < CURRENT.r or params.p < CURRENT.p


class PasswordHasher:
    """Hashes and checks passwords in threads, at most `concurrency` at a time.

    One per web app (no module-level state): the bound keeps a burst of sign-in attempts
    from holding 128 MiB per thread across the whole thread pool.
    """

    def __init__(self, concurrency: int = 2) -> None:
        self._slots = asyncio.Semaphore(concurrency)

    async def hash(self, password: str) -> str:
        """A fresh salted scrypt hash of `password` at the current parameters."""
        async with self._slots:
            return await asyncio.to_thread(hash_password_sync, password)

    async def verify(self, password: str, stored: str | None) -> bool:
        """True when `password` matches `stored`; a missing hash never matches but costs the same."""
        async with self._slots:
            return await asyncio.to_thread(verify_password_sync, password, stored)


# The web app's hasher (umsg.web.app creates it from accounts.hash_concurrency).
HASHER: web.AppKey[PasswordHasher] = web.AppKey("umsg_password_hasher", PasswordHasher)


async def hash_password(password: str) -> str:
    """A fresh salted scrypt hash of `password` (in a thread, unbounded: for the CLI and tests)."""
    return await asyncio.to_thread(hash_password_sync, password)


async def verify_password(password: str, stored: str | None) -> bool:
    """True when `password` matches `stored` (in a thread, unbounded: for the CLI and tests)."""
    return await asyncio.to_thread(verify_password_sync, password, stored)

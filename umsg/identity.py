"""Normalising the addresses a message comes from into identity values.

Email addresses compare case-insensitively; phone and fax numbers become E.164
(`phonenumbers`) so the same customer is recognised across SMS, voicemail and fax.
"""

from __future__ import annotations

import functools

import phonenumbers

from umsg.errors import PermanentError
from umsg.model import IdentityKind


# A pure function of its arguments, called for every text sent and received (twice for a received
# one: by the channel, then by the ingest), and customers write from and to the same numbers again
# and again; parsing one costs 50-90 µs. Failures are not cached (they raise).
@functools.lru_cache(maxsize=16384)
def normalise_phone(value: str, default_region: str | None = None) -> str:
    """E.164 form of a phone number; alphanumeric sender ids are kept as `alnum:<id>`."""
    raw = value.strip()
    if raw.startswith("00"):
        raw = "+" + raw[2:]
    digits = "".join(ch for ch in raw if ch.isdigit())
    if not digits:
        # SMS senders such as "MyBank" are not numbers, but are still an identity.
        if raw and raw.replace(" ", "").isalnum():
            return f"alnum:{raw.replace(' ', '').lower()}"
        raise PermanentError(f"not a phone number: {value!r}")
    if not raw.startswith("+") and default_region is None:
        # Without a region a national number is ambiguous; treat the digits as international.
        raw = "+" + digits
    try:
        num = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as exc:
        raise PermanentError(f"not a phone number: {value!r} ({exc})") from exc
    return str(phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164))


def normalise_email(value: str) -> str:
    addr = value.strip().strip("<>").strip()
    if addr.count("@") != 1 or not all(addr.split("@")):
        raise PermanentError(f"not an email address: {value!r}")
    return addr.lower()


def normalise(kind: IdentityKind, value: str, default_region: str | None = None) -> str:
    """The stored form of an identity value of `kind`."""
    if not value or not value.strip():
        raise PermanentError(f"empty {kind.value} address")
    if kind is IdentityKind.EMAIL:
        return normalise_email(value)
    if kind in (IdentityKind.PHONE, IdentityKind.FAX):
        return normalise_phone(value, default_region)
    v = value.strip()
    if len(v) > 320:
        raise PermanentError("chat visitor id longer than 320 characters")
    return v

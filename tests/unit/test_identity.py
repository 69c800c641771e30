"""Normalising sender addresses into identity values."""

from __future__ import annotations

import pytest

from umsg.errors import PermanentError
from umsg.identity import normalise
from umsg.model import IdentityKind as K

CASES = [
    (K.EMAIL, " <Alice@Example.COM> ", None, "alice@example.com"),
    (K.PHONE, "+44 20 7946 0958", None, "+442079460958"),
    (K.PHONE, "0044 20 7946 0958", None, "+442079460958"),
    (K.PHONE, "020 7946 0958", "GB", "+442079460958"),
    (K.FAX, "4930123456", None, "+4930123456"),
    (K.PHONE, "MyBank", None, "alnum:mybank"),
    (K.CHAT, "visitor-42", None, "visitor-42"),
]


@pytest.mark.parametrize("kind, raw, region, expected", CASES)
def test_normalise(kind: K, raw: str, region: str | None, expected: str) -> None:
    assert normalise(kind, raw, region) == expected


@pytest.mark.parametrize("kind, raw", [(K.EMAIL, "nobody"), (K.EMAIL, "a@"), (K.PHONE, "+-+"), (K.CHAT, "")])
def test_bad_addresses_are_refused(kind: K, raw: str) -> None:
    with pytest.raises(PermanentError):
        normalise(kind, raw)

"""X-Twilio-Signature: HMAC-SHA1 over the full URL and the sorted POST parameters, base64.

The signed string is the URL exactly as the provider called it, followed by each
parameter name and value, sorted by name (repeated names: by value). Comparison is
constant-time; a missing or wrong signature is simply "not valid".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable


def signature(token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """The signature a provider holding `token` puts on a POST of `params` to `url`."""
    data = url + "".join(k + v for k, v in sorted(params))
    digest = hmac.new(token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def is_valid(token: str, url: str, params: Iterable[tuple[str, str]], given: str | None) -> bool:
    if not given or not token:
        return False
    expected = signature(token, url, params)
    return hmac.compare_digest(expected.encode("ascii"), given.strip().encode("utf-8", "replace"))

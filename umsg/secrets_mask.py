"""The one place that decides what a secret looks like and hides it before anything is shown.

Every path that prints or logs settings, or free text that may carry credentials, goes
through `mask_secrets`: the start log and every log line (umsg.app.serve), `Settings.masked()`
(umsg.config), a channel adapter's `describe()`/`repr` (channels.base). Hidden are:

- the value of any key whose name looks secret (`password`, `secret`, `token`, `auth`, ...),
  and everything beneath such a key (`auth_users = {agent = "..."}` keeps the user names and
  hides each password);
- pydantic `SecretStr`/`SecretBytes` values, whatever their key;
- in any string, the password of a URL's userinfo (`smpp://user:***@host`) and the value of
  a secret-looking query parameter (`https://h/in?secret=***`), also inside longer text;
- bearer tokens: `Bearer ***` and this gateway's `umsg_...` tokens inside text.

It depends on nothing of the gateway, so channels, the core and the CLI may all use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from pydantic import SecretBytes, SecretStr

MASK = "***"

# Setting names (and query parameter names) that hold credentials.
SECRET_WORDS = (
    "password",
    "passwd",
    "secret",
    "token",
    "auth",
    "api_key",
    "apikey",
    "private_key",
    "credential",
)
# Query parameters that are credentials although their name holds none of the words above.
_SECRET_PARAMS = frozenset({"key", "sig", "signature", "pass", "pwd", "code"})

_URL = re.compile(r"\b[a-zA-Z][\w+.-]*://[^\s\"'<>]+")
_BEARER = re.compile(r"(\bBearer\s+)[^\s\"',;]+", re.IGNORECASE)
_OUR_TOKEN = re.compile(r"\bumsg_[A-Za-z0-9_-]{16,}")


def is_secret_key(key: str) -> bool:
    """True when a setting or parameter named `key` holds a credential."""
    low = key.lower()
    return any(word in low for word in SECRET_WORDS)


def mask_secrets(value: Any, key: str = "") -> Any:
    """A copy of `value` (settings as dicts/lists/scalars, or free text) with secrets as `***`.

    `key` is the name `value` is stored under; a secret-looking key hides the whole value
    (every leaf beneath it, for a mapping or a list). Empty values stay empty, so "not set"
    remains visible.
    """
    if isinstance(value, SecretStr | SecretBytes):
        return MASK if value.get_secret_value() else value.get_secret_value()
    if isinstance(value, Mapping):
        if key and is_secret_key(key):
            return {k: _hide(v) for k, v in value.items()}
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_secrets(v, key) for v in value]
    if value is None or value == "":
        return value
    if key and is_secret_key(key):
        return MASK
    if isinstance(value, str):
        return _mask_text(value)
    return value


def _hide(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _hide(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_hide(v) for v in value]
    return value if value is None or value == "" else MASK


def _mask_text(text: str) -> str:
    if "://" in text:
        text = _URL.sub(lambda m: _mask_url(m.group(0)), text)
    if "earer" in text or "EARER" in text:
        text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
    if "umsg_" in text:
        text = _OUR_TOKEN.sub("umsg_" + MASK, text)
    return text


def _mask_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        creds, host = netloc.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_secret_param(k) for k, _v in pairs):
            # Rebuilt by hand: urlencode would percent-encode the mask.
            query = "&".join(f"{quote(k, safe='')}={MASK if _secret_param(k) and v else quote(v, safe='')}"
                             for k, v in pairs)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _secret_param(name: str) -> bool:
    return is_secret_key(name) or name.lower() in _SECRET_PARAMS

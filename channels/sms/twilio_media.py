"""Twilio inbound media (MMS): `MediaUrl0..N` fetched into attachment parts of the message.

Each URL is fetched with the account's credentials (HTTP basic auth) from the configured
provider: its path and query on `base_url`'s origin, so the credentials only ever go to
the provider we are configured for (a local fake in tests), whatever host the webhook
named. The provider redirects to its CDN; aiohttp drops the Authorization header when a
redirect changes host. A fetch that fails (HTTP error, timeout, more than
`media_max_bytes`) does not lose the text: the message is stored without that part and
the reason goes into its flags under `media_errors`.
"""

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from channels.sms.settings import TwilioSettings
from umsg.model import InboundPart

# Twilio sends at most 10 media per message; more is a malformed or hostile request.
MAX_MEDIA = 10
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Media:
    parts: tuple[InboundPart, ...]
    errors: tuple[str, ...]


class MediaError(Exception):
    """One media item could not be fetched; the message says why (kept in the flags)."""


def media_items(params: Mapping[str, str]) -> list[tuple[int, str, str]]:
    """(index, url, declared content type) for each `MediaUrlN` of a webhook, in order."""
    try:
        count = min(int(params.get("NumMedia") or MAX_MEDIA), MAX_MEDIA)
    except ValueError:
        count = MAX_MEDIA
    return [(i, params[f"MediaUrl{i}"], params.get(f"MediaContentType{i}", ""))
            for i in range(count) if params.get(f"MediaUrl{i}")]

def provider_url(url: str, base_url: str) -> str:
    """`url`'s path and query on the configured provider's origin."""
    media, base = urlsplit(url), urlsplit(base_url)
    return urlunsplit((base.scheme, base.netloc, media.path, media.query, ""))


async def fetch_media(http: aiohttp.ClientSession, params: Mapping[str, str], settings: TwilioSettings,
                      headers: Mapping[str, str]) -> Media:
    """Every media item of a webhook, fetched concurrently; failures as reasons, not exceptions."""
    items = media_items(params)
    results = await asyncio.gather(*(_fetch(http, i, url, declared, settings, headers)
                                     for i, url, declared in items), return_exceptions=True)
    parts: list[InboundPart] = []
    errors: list[str] = []
    for (i, _, _), result in zip(items, results, strict=True):
        if isinstance(result, InboundPart):
            parts.append(result)
        elif isinstance(result, MediaError):
            errors.append(f"MediaUrl{i}: {result}")
        elif isinstance(result, Exception):
            errors.append(f"MediaUrl{i}: {type(result).__name__}: {result}")
        else:  # cancellation and the like are not ours to swallow
            raise result
    return Media(tuple(parts), tuple(errors))


async def _fetch(http: aiohttp.ClientSession, index: int, url: str, declared: str, settings: TwilioSettings,
                 headers: Mapping[str, str]) -> InboundPart:
    timeout = aiohttp.ClientTimeout(total=settings.timeout_seconds)
    try:
        async with http.get(provider_url(url, settings.base_url), headers=dict(headers), timeout=timeout) as resp:
            if resp.status != 200:
                raise MediaError(f"HTTP {resp.status} from the provider")
            data = bytearray()
            async for chunk in resp.content.iter_chunked(_CHUNK):
                data += chunk
                if len(data) > settings.media_max_bytes:
                    raise MediaError(f"larger than {settings.media_max_bytes} bytes")
            media_type = resp.content_type or declared or "application/octet-stream"
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise MediaError(f"fetch failed: {type(exc).__name__}: {exc}") from exc
    if media_type == "application/octet-stream" and declared:
        media_type = declared
    ext = mimetypes.guess_extension(media_type) or ".bin"
    return InboundPart(media_type, bytes(data), f"media{index}{ext}")

"""HTML bodies made safe to show an agent.

Scripts, event handlers, styles and forms go (nh3/ammonia's allow-list).
Remote images are a privacy leak (tracking pixels tell the sender when and
where the mail was read), so their `src` is removed and the URLs are
returned for the inbox to load only when the agent asks. `cid:` references
to inline parts are rewritten to `cid-part/<content-id>`, a relative
reference the inbox resolves to the stored part with that content id.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

import nh3

CID_PREFIX = "cid-part/"
_URL_SCHEMES = set(nh3.ALLOWED_URL_SCHEMES) | {"cid"}


@dataclass(frozen=True)
class SafeHtml:
    html: str
    remote_images: tuple[str, ...]
    inline_refs: tuple[str, ...]  # content ids the HTML shows


def cid_ref(content_id: str) -> str:
    """The relative reference an inline part with `content_id` is shown under."""
    return CID_PREFIX + quote(content_id.strip("<>"), safe="@.-_")


def sanitize(html: str, known_cids: frozenset[str] = frozenset()) -> SafeHtml:
    """Clean `html`; `known_cids` are content ids of the message's parts (without angle brackets)."""
    remote: list[str] = []
    inline: list[str] = []

    def on_attribute(element: str, attribute: str, value: str) -> str | None:
        if attribute not in ("src", "background", "srcset"):
            return value
        low = value.strip().lower()
        if low.startswith("cid:"):
            cid = unquote(value.strip()[4:]).strip("<>")
            if cid in known_cids:
                inline.append(cid)
                return cid_ref(cid)
            return None  # a reference to a part that is not there shows nothing
        if low.startswith("data:image/") and element == "img":
            return None  # inline data images can be huge and carry SVG script; drop them
        if value.strip():
            remote.append(value.strip())
        return None

    cleaned = nh3.clean(html, attribute_filter=on_attribute, url_schemes=_URL_SCHEMES)
    return SafeHtml(cleaned, tuple(dict.fromkeys(remote)), tuple(dict.fromkeys(inline)))

"""HTML bodies made safe to show an agent.

One pass, here in the parse: the markup is first bounded in size and
nesting depth (`converters.html_text.bound_html`: deeper tags are flattened,
their text kept; the stored raw message keeps the original), then cleaned by
nh3/ammonia's allow-list: scripts, event handlers, styles and forms go. The
result is a `SanitizedHtml`, which the ingest stores as it is instead of
cleaning it again.

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

from converters.html_text import MAX_CHARS, MAX_DEPTH, SanitizedHtml, sanitize_html

CID_PREFIX = "cid-part/"
_URL_SCHEMES = set(nh3.ALLOWED_URL_SCHEMES) | {"cid"}


@dataclass(frozen=True)
class SafeHtml:
    html: SanitizedHtml
    remote_images: tuple[str, ...]
    inline_refs: tuple[str, ...]  # content ids the HTML shows
    flattened: int = 0  # tags below the depth bound dropped
    truncated: int = 0  # characters beyond the size bound not read


def cid_ref(content_id: str) -> str:
    """The relative reference an inline part with `content_id` is shown under."""
    return CID_PREFIX + quote(content_id.strip("<>"), safe="@.-_")


def sanitize(html: str, known_cids: frozenset[str] = frozenset(), *, max_depth: int = MAX_DEPTH,
             max_chars: int = MAX_CHARS) -> SafeHtml:
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

    done = sanitize_html(html, attribute_filter=on_attribute, url_schemes=_URL_SCHEMES, max_depth=max_depth,
                         max_chars=max_chars)
    return SafeHtml(done.html, tuple(dict.fromkeys(remote)), tuple(dict.fromkeys(inline)), done.flattened,
                    done.truncated)

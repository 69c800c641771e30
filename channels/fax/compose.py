"""An outgoing message as fax pages: what is rendered, in which order, with which cover page.

Attachments (PDF, images, fax TIFFs, plain text) become pages in their order. The message
text goes on the cover page when there is one (configured with `send.cover_page`, or asked
per message by `fax_cover` in the outbound's meta or the message's flags); without a cover
it becomes pages of its own before the attachments, so nothing an agent wrote is dropped.
Rendering is `converters.fax_render` (ghostscript; run in a worker thread).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from channels.fax.settings import FaxSendSettings
from converters.fax_render import CoverPage, Document, render_fax
from converters.tiff_pdf import read_fax_tiff
from umsg.model import Outbound


@dataclass(frozen=True)
class Rendered:
    tiff: bytes
    pages: int


def wants_cover(send: FaxSendSettings, outbound: Outbound, flags: dict[str, Any]) -> bool:
    asked = outbound.meta.get("fax_cover", flags.get("fax_cover"))
    return send.cover_page if asked is None else bool(asked)


def documents(outbound: Outbound, *, cover: bool) -> list[Document]:
    docs = [Document(p.data, p.media_type, p.filename) for p in outbound.parts]
    if outbound.text.strip() and not cover:
        docs.insert(0, Document(outbound.text.encode(), "text/plain", "message.txt"))
    return docs


def cover_page(send: FaxSendSettings, outbound: Outbound) -> CoverPage:
    return CoverPage(to=outbound.recipient, sender=send.caller or send.ident or outbound.sender,
                     subject=outbound.subject or "", note=outbound.text)


def _render(send: FaxSendSettings, outbound: Outbound, cover: bool) -> Rendered:
    tiff = render_fax(documents(outbound, cover=cover), fine=send.resolution == "fine", paper=send.paper,
                      cover=cover_page(send, outbound) if cover else None)
    return Rendered(tiff, len(read_fax_tiff(tiff)))


async def render_outbound(send: FaxSendSettings, outbound: Outbound, flags: dict[str, Any]) -> Rendered:
    """The outbound as one TIFF-F; ConversionError when a part cannot become a fax page."""
    return await asyncio.to_thread(_render, send, outbound, wants_cover(send, outbound, flags))

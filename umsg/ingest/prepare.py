"""The part of ingest that runs before the transaction: checks, blobs and conversions.

Blobs are content-addressed and written durably before the row that names
them is committed, so a crash can leave at most an unreferenced blob, never a
row without its bytes. Conversions are CPU work and run in a worker thread,
outside the database transaction, so a slow converter never holds a lock.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import nh3

from converters.html_text import html_to_text
from converters.registry import ConverterRegistry
from storage.blobs import BlobStore
from umsg.config import IngestSettings
from umsg.errors import PermanentError
from umsg.ingest.identity import normalise
from umsg.model import Inbound

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredBlob:
    sha256: str
    media_type: str
    size: int
    role: str
    filename: str | None = None
    content_id: str | None = None
    # Index into Prepared.blobs of the part this one was derived from.
    derived_from: int | None = None
    converter: str | None = None
    meta: dict[str, object] = field(default_factory=dict)


@dataclass
class Prepared:
    """An inbound message with its sender normalised and its bytes safely on disk."""

    inbound: Inbound
    sender_value: str
    html: str | None
    text: str | None
    blobs: list[StoredBlob]
    conversion_errors: list[str]


def validate(inbound: Inbound, settings: IngestSettings) -> str:
    """Refuse what can never be stored; return the normalised sender identity."""
    if not inbound.dedupe_key or len(inbound.dedupe_key) > 500:
        raise PermanentError("dedupe_key must be 1 to 500 characters")
    if not inbound.channel:
        raise PermanentError("channel is required")
    size = len(inbound.raw) + sum(len(p.data) for p in inbound.parts)
    if size > settings.max_message_bytes:
        raise PermanentError(f"message is {size} bytes; the limit is {settings.max_message_bytes}")
    return normalise(inbound.sender.kind, inbound.sender.value, settings.default_region)


def _write_and_convert(inbound: Inbound, blobs: BlobStore, converters: ConverterRegistry) -> Prepared:
    stored: list[StoredBlob] = []
    errors: list[str] = []
    raw_sha = blobs.put_sync(inbound.raw)
    stored.append(StoredBlob(raw_sha, inbound.raw_media_type, len(inbound.raw), "raw"))
    text = inbound.text
    for part in inbound.parts:
        sha = blobs.put_sync(part.data)
        source_index = len(stored)
        stored.append(StoredBlob(sha, part.media_type, len(part.data), part.role, part.filename, part.content_id))
        for conv in converters.for_media_type(part.media_type):
            try:
                out = conv.convert(part.data, part.filename)
            except Exception as exc:  # a converter failure must never lose the message
                errors.append(f"{conv.name} on part {source_index} ({part.filename or part.media_type}): {exc}")
                log.warning("conversion failed: converter=%s part=%s error=%s", conv.name, source_index, exc)
                continue
            dsha = blobs.put_sync(out.data)
            stored.append(StoredBlob(dsha, out.media_type, len(out.data), "derived", out.filename,
                                     derived_from=source_index, converter=conv.name, meta=dict(out.meta)))
            if text is None and part.role == "body" and out.media_type.startswith("text/plain"):
                text = out.data.decode("utf-8", "replace")
    html = nh3.clean(inbound.html) if inbound.html else None
    if text is None and inbound.html:
        text = html_to_text(inbound.html)
    return Prepared(inbound, "", html, text, stored, errors)


async def prepare(inbound: Inbound, settings: IngestSettings, blobs: BlobStore,
                  converters: ConverterRegistry) -> Prepared:
    """Validate, write every blob and run the converters; no database access."""
    sender = validate(inbound, settings)
    prepared = await asyncio.to_thread(_write_and_convert, inbound, blobs, converters)
    prepared.sender_value = sender
    return prepared

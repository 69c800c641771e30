"""Reading the small blobs the ingest keeps in the database (`storage.models.Blob`).

`BlobStore` falls back to `read_blob_row` for a digest that has no file; the core wires the
two together, so that callers ask for a blob's bytes without knowing where it was kept.
"""

from __future__ import annotations

from sqlalchemy import select

from storage.db import SessionFactory
from storage.models import Blob


async def read_blob_row(readers: SessionFactory, sha256: str) -> bytes | None:
    """The bytes of blob `sha256` kept in the database, or None if it is not there."""
    async with readers() as s:
        data: bytes | None = await s.scalar(select(Blob.data).where(Blob.sha256 == sha256))
    return data

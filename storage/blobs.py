"""Content-addressed blob store under the data folder.

A blob is written to a temporary file in the same folder, fsynced, renamed to
its sha256 name and the folder fsynced, so a crash never leaves a half blob
under a name a committed row points to. Writing the same bytes twice is free.

Small blobs the ingest writes are kept in the database instead (`storage.models.Blob`, in
the transaction of the rows that name them): on the machines we measured, a durable new
file costs 0.5 to 1 ms of kernel CPU, several times the rest of a small message's ingest.
Given a reader for those rows (`inline`), `get` and `local_path` find a blob either way.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

# The bytes of a blob kept in the database, or None (see storage.blob_rows).
InlineReader = Callable[[str], Awaitable[bytes | None]]


class BlobStore:
    """Stores bytes by their sha256 under `root/ab/cd/abcd...`."""

    def __init__(self, root: Path, fsync: bool = True, inline: InlineReader | None = None) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self._inline = inline
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put_sync(self, data: bytes) -> str:
        """Write `data` durably and return its sha256 (blocking; use `put` from async code)."""
        return self.put_many_sync([data])[0]

    async def put(self, data: bytes) -> str:
        return await asyncio.to_thread(self.put_sync, data)

    def put_many_sync(self, blobs: list[bytes]) -> list[str]:
        """Write every blob durably; return their sha256 digests in order.

        All files are fsynced and renamed first, then each folder touched is
        fsynced once: one message's blobs cost one thread hop and no repeated
        folder fsync. A folder created here is made durable in its parent too,
        or a crash could lose the folder entry and with it a committed blob.
        """
        digests = [hashlib.sha256(b).hexdigest() for b in blobs]
        dirty: dict[Path, None] = {}  # folders to fsync, each once
        written: set[str] = set()
        for digest, data in zip(digests, blobs, strict=True):
            final = self.path_for(digest)
            if digest not in written and not final.exists():
                self._make_parents(final.parent, dirty)
                self._write_file(final, data)
                written.add(digest)
            # Also when the blob exists: a concurrent writer may have renamed it
            # but not yet fsynced the folder, and our row must not outrun that.
            dirty[final.parent] = None
        if self.fsync:
            for folder in dirty:
                _fsync_dir(folder)
        return digests

    async def put_many(self, blobs: list[bytes]) -> list[str]:
        return await asyncio.to_thread(self.put_many_sync, blobs)

    def _make_parents(self, folder: Path, dirty: dict[Path, None]) -> None:
        if folder.is_dir():
            return
        for d in (folder.parent, folder):  # root/ab, then root/ab/cd
            if not d.is_dir():
                # The new entry lives in the parent folder: fsync that even if another
                # writer wins the race to create it, as it may not have fsynced yet.
                d.mkdir(exist_ok=True)
                dirty[d.parent] = None

    def _write_file(self, final: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                if self.fsync:
                    os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def get_sync(self, sha256: str) -> bytes:
        return self.path_for(sha256).read_bytes()

    async def get(self, sha256: str) -> bytes:
        """The blob's bytes, from its file or the database; FileNotFoundError when neither has it."""
        try:
            return await asyncio.to_thread(self.get_sync, sha256)
        except FileNotFoundError:
            data = await self._row(sha256)
            if data is None:
                raise
            return data

    async def local_path(self, sha256: str) -> Path:
        """A file holding the blob, for tools that need a path (file responses, TIFF and PDF readers).

        A blob kept in the database is copied into the file store first (and stays there).
        FileNotFoundError when neither has it.
        """
        path = self.path_for(sha256)
        if await asyncio.to_thread(path.is_file):
            return path
        data = await self._row(sha256)
        if data is None:
            raise FileNotFoundError(str(path))
        await self.put_many([data])
        return path

    async def _row(self, sha256: str) -> bytes | None:
        """The blob's bytes kept in the database, if this store was given a reader for them."""
        return await self._inline(sha256) if self._inline is not None else None

    def exists(self, sha256: str) -> bool:
        """Whether the blob has a file (a blob kept in the database has none until `local_path`)."""
        return self.path_for(sha256).exists()


def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

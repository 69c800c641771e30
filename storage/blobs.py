"""Content-addressed blob store under the data folder.

A blob is written to a temporary file in the same folder, fsynced, renamed to
its sha256 name and the folder fsynced, so a crash never leaves a half blob
under a name a committed row points to. Writing the same bytes twice is free.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from pathlib import Path


class BlobStore:
    """Stores bytes by their sha256 under `root/ab/cd/abcd...`."""

    def __init__(self, root: Path, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put_sync(self, data: bytes) -> str:
        """Write `data` durably and return its sha256 (blocking; use `put` from async code)."""
        digest = hashlib.sha256(data).hexdigest()
        final = self.path_for(digest)
        if final.exists():
            return digest
        final.parent.mkdir(parents=True, exist_ok=True)
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
        if self.fsync:
            dir_fd = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return digest

    async def put(self, data: bytes) -> str:
        return await asyncio.to_thread(self.put_sync, data)

    def put_many_sync(self, blobs: list[bytes]) -> list[str]:
        return [self.put_sync(b) for b in blobs]

    async def put_many(self, blobs: list[bytes]) -> list[str]:
        return await asyncio.to_thread(self.put_many_sync, blobs)

    def get_sync(self, sha256: str) -> bytes:
        return self.path_for(sha256).read_bytes()

    async def get(self, sha256: str) -> bytes:
        return await asyncio.to_thread(self.get_sync, sha256)

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).exists()

"""The content-addressed blob store."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from storage.blobs import BlobStore


def test_put_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    sha = store.put_sync(b"hello")
    assert sha == hashlib.sha256(b"hello").hexdigest()
    assert store.put_sync(b"hello") == sha
    assert store.get_sync(sha) == b"hello"
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files == [store.path_for(sha)]


def test_failed_write_leaves_no_blob_and_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = BlobStore(tmp_path)

    def boom(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        store.put_sync(b"data")
    assert not store.exists(hashlib.sha256(b"data").hexdigest())
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_rejects_paths_that_are_not_digests(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        BlobStore(tmp_path).path_for("../../etc/passwd")


async def test_async_put_and_get(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    shas = await store.put_many([b"a", b"b", b"a"])
    assert shas[0] == shas[2] and await store.get(shas[1]) == b"b"

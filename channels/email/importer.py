"""Importing stored mail (.eml files, mbox files, Maildir folders) through the ingest pipeline.

Each message goes through the same parser and sink as live mail, so an
import is deduplicated like a redelivery: importing the same files twice
ingests nothing new. Files are read in a worker thread (the event loop
never blocks on the disk) and handed to the sink a few at a time, which
lets the core's group commit batch them.
"""

from __future__ import annotations

import asyncio
import mailbox
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from channels.base import InboundSink
from channels.email.parse import to_inbound
from umsg.errors import PermanentError

EML_SUFFIXES = {".eml", ".msg822", ".mail"}
MBOX_SUFFIXES = {".mbox", ".mbx"}
_IN_FLIGHT = 16


@dataclass
class ImportSummary:
    total: int = 0
    ingested: int = 0
    duplicates: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"total": self.total, "ingested": self.ingested, "duplicates": self.duplicates,
                "rejected": self.rejected}


def _is_maildir(path: Path) -> bool:
    return all((path / sub).is_dir() for sub in ("cur", "new", "tmp"))


def _is_mbox(path: Path) -> bool:
    if path.suffix.lower() in MBOX_SUFFIXES:
        return True
    with path.open("rb") as f:
        # "From sender date": a postmark line, not a "From :" header with stray spaces.
        return re.match(rb"From [^\s:]+ ", f.readline(200)) is not None


def _from_maildir(path: Path) -> Iterator[tuple[str, bytes]]:
    box = mailbox.Maildir(path, factory=None, create=False)
    for key in sorted(box.keys()):
        yield f"{path}/{key}", box.get_bytes(key)


def _from_mbox(path: Path) -> Iterator[tuple[str, bytes]]:
    box = mailbox.mbox(path, factory=None, create=False)
    try:
        for i, key in enumerate(box.keys()):
            yield f"{path}#{i + 1}", box.get_bytes(key)
    finally:
        box.close()


def messages(paths: list[Path]) -> Iterator[tuple[str, bytes]]:
    """(label, raw bytes) of every message under `paths`; a label names the file (and mbox index)."""
    for path in paths:
        if path.is_dir():
            if _is_maildir(path):
                yield from _from_maildir(path)
                continue
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.suffix.lower() in EML_SUFFIXES | MBOX_SUFFIXES:
                    yield from messages([child])
                elif child.is_dir() and _is_maildir(child):
                    yield from _from_maildir(child)
        elif _is_mbox(path):
            yield from _from_mbox(path)
        else:
            yield str(path), path.read_bytes()


def count(paths: list[Path]) -> int:
    """How many messages `messages(paths)` will yield (for the progress bar)."""
    return sum(1 for _ in messages(paths))


async def import_paths(
    paths: list[Path],
    sink: InboundSink,
    *,
    channel: str = "email",
    project: str = "default",
    own_domain: str | None = None,
    progress: Callable[[ImportSummary], None] | None = None,
) -> ImportSummary:
    """Ingest every message under `paths`; a message that cannot be stored is listed with its reason."""
    summary = ImportSummary()
    source = messages(paths)
    slots = asyncio.Semaphore(_IN_FLIGHT)

    async def one(label: str, raw: bytes) -> None:
        try:
            inbound = to_inbound(raw, channel=channel, project=project, own_domain=own_domain)
            result = await sink(inbound)
        except PermanentError as exc:
            summary.rejected.append({"path": label, "reason": str(exc)})
        except Exception as exc:  # noqa: BLE001 - one bad message never stops an import
            summary.rejected.append({"path": label, "reason": f"{type(exc).__name__}: {exc}"})
        else:
            if result.duplicate:
                summary.duplicates += 1
            else:
                summary.ingested += 1
        finally:
            summary.total += 1
            slots.release()
            if progress is not None:
                progress(summary)

    tasks: list[asyncio.Task[None]] = []
    while True:
        item = await asyncio.to_thread(next, source, None)
        if item is None:
            break
        await slots.acquire()
        tasks.append(asyncio.create_task(one(*item)))
    await asyncio.gather(*tasks)
    summary.rejected.sort(key=lambda r: r["path"])
    return summary

"""The part of ingest that runs before the transaction: checks, conversions and blobs.

Blobs are content-addressed and durable no later than the row that names
them, so a crash can leave at most an unreferenced blob, never a row without
its bytes. A small message's blobs are only hashed here: the group writer
stores their bytes as `blob` rows in the transaction that names them
(`Prepared.inline`), so they cost no file, fsync or thread hop of their own.
A larger message's blobs are written as files here, before it is handed over.

Conversions and HTML sanitising are CPU work: large ones run in a process
pool, because in a thread they would hold the GIL and every database round
trip of the event loop would queue behind them. Small ones (the usual e-mail
body) run inline: pickling them to a worker and back costs more than the
work, and a millisecond on the loop is cheaper than the IPC round trip.

Each conversion is its own pool job under the pool's time and CPU limits
(`umsg.workers`): a job killed at its limit, like any failed conversion, is
recorded in the message's `conversion_errors` and the message is stored with
what could be had (its text, the other conversions), never lost and never
retried. HTML a channel already sanitised (`SanitizedHtml`, the email parse)
is not cleaned again; other HTML is bounded and sanitised here, once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TypeVar

from converters.base import Converted, Converter
from converters.html_text import MAX_CHARS, SanitizedHtml, html_to_text, sanitize_html
from converters.registry import ConverterRegistry
from storage.blobs import BlobStore
from umsg.config import IngestSettings
from umsg.errors import PermanentError
from umsg.identity import normalise
from umsg.model import Inbound
from umsg.workers import JobLimits, process_pool

log = logging.getLogger(__name__)

# Up to this many input bytes a message's conversions run inline. Measured on
# the 2-core box under load: nh3 plus html-to-text take ~1.5 ms for 3 KiB, ~8 ms
# for 10 KiB and ~40 ms for 64 KiB, while a pool round trip costs a few ms of
# latency and the parent's pickling and wake-ups. Most bodies are far below
# this; the cap bounds how long one message can stall the event loop.
INLINE_BYTES = 16 * 1024

# Up to this many blob bytes per message they are kept in the database, written
# with the message's rows; larger messages write files in their own thread hop
# here, so one big attachment neither bloats the database nor holds up the
# commit of the small messages batched with it.
INLINE_BLOB_BYTES = 128 * 1024

# Converters whose work is linear in their input within its bounds (html-to-text reads at most
# 1 MiB, flattened): only they may run inline. Any other converter on a small input still runs
# in the pool, under its limits: 16 KiB of TIFF or PDF can describe pages of any size.
INLINE_CONVERTERS = frozenset({"html-to-text"})

# What one conversion (or one message's HTML) may spend in a worker before it is killed and
# recorded; well above a real fax of many pages (~1 s) or a long voicemail's MP3.
CONVERT_LIMITS = JobLimits(wall_seconds=60.0, cpu_seconds=30.0)


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
    # Bytes of `blobs` (same order) that the writer stores as `blob` rows with the message.
    inline: list[bytes] = field(default_factory=list)


@dataclass(frozen=True)
class _Job:
    """One conversion for the worker process: which converter on which part."""

    part_index: int
    converter: Converter
    data: bytes
    filename: str | None


@dataclass(frozen=True)
class _Derived:
    html: str | None
    text_from_html: str | None
    outputs: list[tuple[int, str, Converted | None, str | None]]  # part, converter, output, error


T = TypeVar("T")
_TAG = re.compile(r"<[^<>]*>")


def _convert(job: _Job) -> Converted:
    return job.converter.convert(job.data, job.filename)


def _html(html: str, want_text: bool) -> tuple[str, str | None]:
    """Sanitised HTML (unless a channel did it already) and, when wanted, its plain-text rendering."""
    safe = html if isinstance(html, SanitizedHtml) else sanitize_html(html).html
    return str(safe), html_to_text(html) if want_text else None


def _stripped(html: str) -> str:
    """The last resort when rendering the HTML was killed: its text with the tags cut out (linear)."""
    return " ".join(_TAG.sub(" ", html[:MAX_CHARS]).split())


async def _run(pool: Executor | None, inline: bool, fn: Callable[..., T], *args: object) -> T:
    if inline:
        return fn(*args)
    return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def _derive(jobs: list[_Job], html: str | None, want_text: bool, pool: Executor | None,
                  inline: bool) -> tuple[_Derived, list[str]]:
    """Every conversion of one message plus its HTML, each a job of its own (in the pool when large).

    The plain-text rendering of the HTML is made only when the channel gave no text. Returns also a
    line for each failure that is not a converter's (the HTML's).
    """
    tasks = [_run(pool, inline, _convert, job) for job in jobs]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    outputs: list[tuple[int, str, Converted | None, str | None]] = []
    for job, res in zip(jobs, results, strict=True):
        if isinstance(res, BaseException) and not isinstance(res, Exception):
            raise res  # cancellation and the like are not a converter's failure
        # A converter failure (or a kill at its limit) must never lose the message.
        outputs.append((job.part_index, job.converter.name, None, _error(res)) if isinstance(res, Exception)
                       else (job.part_index, job.converter.name, res, None))
    if not html:
        return _Derived(None, None, outputs), []
    try:
        safe, text = await _run(pool, inline, _html, html, want_text)
    except Exception as exc:  # noqa: BLE001 - the message is stored without its HTML view
        log.warning("html sanitising failed: %s", _error(exc))
        text = await asyncio.to_thread(_stripped, html) if want_text else None
        return _Derived(None, text, outputs), [f"html: {_error(exc)}; stored as text only"]
    return _Derived(safe, text, outputs), []


def make_pool(workers: int, limits: JobLimits | None = None) -> Executor:
    # spawn, not fork: the parent runs threads (aiosqlite, blob writers) that fork would copy mid-lock.
    return process_pool(workers or None, limits or CONVERT_LIMITS)


def conversion_jobs(inbound: Inbound, converters: ConverterRegistry) -> list[_Job]:
    return [_Job(i, conv, part.data, part.filename)
            for i, part in enumerate(inbound.parts) for conv in converters.for_media_type(part.media_type)]


def runs_inline(inbound: Inbound, jobs: list[_Job]) -> bool:
    """Whether the conversion work of this message is small enough to skip the process pool."""
    if any(j.converter.name not in INLINE_CONVERTERS for j in jobs):
        return False
    return sum(len(j.data) for j in jobs) + len(inbound.html or "") <= INLINE_BYTES


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


def _outputs(inbound: Inbound, derived: _Derived) -> tuple[list[tuple[int, str, Converted]], list[str]]:
    """The conversions that produced something, and a line for each that failed."""
    errors: list[str] = []
    outputs: list[tuple[int, str, Converted]] = []
    for part_index, name, out, error in derived.outputs:
        if out is None:
            part = inbound.parts[part_index]
            errors.append(f"{name} on {part.filename or part.media_type}: {error}")
            log.warning("conversion failed: converter=%s part=%s error=%s", name, part_index, error)
        else:
            outputs.append((part_index, name, out))
    return outputs, errors


def _describe(inbound: Inbound, outputs: list[tuple[int, str, Converted]], digests: list[str]) -> list[StoredBlob]:
    """The blob list of a message: raw first, then its parts, then derived parts (`digests` in that order)."""
    it = iter(digests)
    stored = [StoredBlob(next(it), inbound.raw_media_type, len(inbound.raw), "raw")]
    index_of: dict[int, int] = {}
    for i, part in enumerate(inbound.parts):
        index_of[i] = len(stored)
        stored.append(StoredBlob(next(it), part.media_type, len(part.data), part.role, part.filename,
                                 part.content_id))
    for part_index, name, out in outputs:
        stored.append(StoredBlob(next(it), out.media_type, len(out.data), "derived", out.filename,
                                 derived_from=index_of[part_index], converter=name, meta=dict(out.meta)))
    return stored


async def prepare(inbound: Inbound, sender: str, blobs: BlobStore, jobs: list[_Job],
                  pool: Executor | None) -> Prepared:
    """Run the conversions `jobs` and hash (large messages: also write) every blob; no database access."""
    derived = _Derived(None, None, [])
    html_errors: list[str] = []
    want_text = inbound.text is None
    if jobs or inbound.html:
        derived, html_errors = await _derive(jobs, inbound.html, want_text, pool, runs_inline(inbound, jobs))
    outputs, errors = _outputs(inbound, derived)
    errors.extend(html_errors)
    data = [inbound.raw, *(p.data for p in inbound.parts), *(out.data for _, _, out in outputs)]
    inline: list[bytes] = []
    if sum(len(d) for d in data) <= INLINE_BLOB_BYTES:
        # Hashing a few KiB takes microseconds: cheaper on the loop than a thread hop.
        digests = [hashlib.sha256(d).hexdigest() for d in data]
        inline = data
    else:
        # One call for all of the message's blobs: each folder is fsynced once.
        digests = await blobs.put_many(data)
    stored = _describe(inbound, outputs, digests)
    text = inbound.text
    if text is None:
        text = derived.text_from_html
    if text is None:
        # A plain-text rendering of a body part (e.g. an HTML body given only as a part).
        for idx, _name, out, _err in derived.outputs:
            if out is not None and inbound.parts[idx].role == "body" and out.media_type.startswith("text/plain"):
                text = out.data.decode("utf-8", "replace")
                break
    return Prepared(inbound, sender, derived.html, text, stored, errors, inline)

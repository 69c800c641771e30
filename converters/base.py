"""The converter contract."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol


@dataclass(frozen=True)
class Converted:
    """A converter's output: the bytes, their media type, a file name and facts (page count...)."""

    data: bytes
    media_type: str
    filename: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class Converter(Protocol):
    """Turns one media type into another. `convert` is synchronous and CPU-bound: the ingest
    runs it in a worker process under a wall-clock and CPU limit (`umsg.workers`; killed past
    them, the failure recorded on the message), so a converter is importable by name, must not
    touch shared state, and may be stopped at any point."""

    name: ClassVar[str]
    accepts: ClassVar[frozenset[str]]
    produces: ClassVar[str]

    def convert(self, data: bytes, filename: str | None) -> Converted: ...


def derived_filename(filename: str | None, extension: str) -> str | None:
    """`scan.tif` → `scan.pdf`; None stays None."""
    if not filename:
        return None
    stem = filename.rsplit(".", 1)[0] if "." in filename else filename
    return f"{stem}.{extension}"

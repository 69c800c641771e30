"""Failpoints: faults placed exactly where a crash test needs them, off unless asked for.

A crash test must kill the service at one precise moment (after an ingest transaction
committed, before the channel acknowledged it to its peer), which no outside signal can hit
reliably. `UMSG_FAILPOINTS`, read only by `umsg serve`, names such a point:

    UMSG_FAILPOINTS="kill-after-commit:STOP"

SIGKILLs the process right after the commit of a batch holding a message whose subject or
text contains `STOP`, before any of the batch's callers hears of it. Unset, nothing here runs.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping, Sequence

from umsg.errors import ConfigError
from umsg.model import Inbound

ENV = "UMSG_FAILPOINTS"
AfterCommit = Callable[[Sequence[Inbound]], None]


def after_commit_from(environ: Mapping[str, str]) -> AfterCommit | None:
    """The hook the ingest writer calls after each commit, as `UMSG_FAILPOINTS` asks (None: no hook)."""
    spec = environ.get(ENV, "").strip()
    if not spec:
        return None
    point, _, needle = spec.partition(":")
    if point != "kill-after-commit" or not needle:
        raise ConfigError([(ENV, f"unknown failpoint {spec!r}; expected kill-after-commit:TEXT")])

    def kill_if_named(batch: Sequence[Inbound]) -> None:
        if any(needle in (i.subject or "") or needle in (i.text or "") for i in batch):
            os.kill(os.getpid(), signal.SIGKILL)

    return kill_if_named

"""Error hierarchy shared by the core, the channels and the converters.

Every failure the gateway reasons about is one of these. The split between
transient (try again later) and permanent (trying again cannot help) drives
retries in the queue, the outbox and the channel adapters.
"""

from __future__ import annotations


class UmsgError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(UmsgError):
    """The configuration is invalid; the message names the key and the reason."""

    def __init__(self, problems: list[tuple[str, str]] | str) -> None:
        if isinstance(problems, str):
            problems = [("", problems)]
        self.problems = problems
        super().__init__("; ".join(f"{k}: {r}" if k else r for k, r in problems))


class TransientError(UmsgError):
    """A failure that may succeed when tried again (peer down, throttled, lock timeout)."""


class PermanentError(UmsgError):
    """A failure that will not succeed when tried again (rejected address, bad input)."""


class ConversionError(PermanentError):
    """A converter could not turn its input into the output it declares."""


class NotFound(PermanentError):
    """A referenced object does not exist (or is not visible to the caller)."""


class Conflict(PermanentError):
    """The request conflicts with the current state (duplicate name, stale lease)."""

"""Refusing routes that can never match because an earlier route always wins.

Rule: an earlier route A shadows a later route B when, for every filter kind
A uses, B uses the same kind with a condition that is the same or narrower
(`Filter.covers`). A filter kind A does not use constrains nothing, so a
route without filters (a catch-all) shadows everything after it.

This is sound: it refuses a table only when B can provably never match. It
is not complete: coverage that would need reasoning across kinds (a time
window versus a calendar), across different time zones, or between regular
expressions and other patterns is not claimed, so such a B is accepted even
if in fact it is unreachable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from umsg.routes.table import Route


def shadows(earlier: Route, later: Route) -> bool:
    """True when every item `later` matches is certainly matched by `earlier`."""
    narrow = {f.key: f for f in later.filters}
    for wide in earlier.filters:
        other = narrow.get(wide.key)
        if other is None or not wide.covers(other):
            return False
    return True


def shadowed(routes: Sequence[Route]) -> list[tuple[int, int]]:
    """(earlier index, later index) for every later route that can never match (first culprit only)."""
    found: list[tuple[int, int]] = []
    for j, later in enumerate(routes):
        for i in range(j):
            if shadows(routes[i], later):
                found.append((i, j))
                break
    return found

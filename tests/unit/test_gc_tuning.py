"""The service's collector settings: start-up objects frozen, collections rarer."""

from __future__ import annotations

import gc

from umsg.app.gc_tuning import THRESHOLDS, settle_after_start


def test_settle_after_start_freezes_what_exists_and_raises_the_thresholds() -> None:
    before = gc.get_threshold()
    survivor = [object() for _ in range(10)]  # alive now, so frozen with the rest
    try:
        settle_after_start()
        assert gc.get_threshold() == THRESHOLDS and THRESHOLDS[0] > before[0]
        assert gc.get_freeze_count() > len(survivor)
    finally:
        # This process is pytest's, not a service's: leave its collector as it was.
        gc.unfreeze()
        gc.set_threshold(*before)

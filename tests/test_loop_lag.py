from __future__ import annotations

import asyncio
import statistics
import time

from app.observability.loop_lag import sample_every


def _samples(stall_at: float | None, run_for: float, interval: float = 0.02) -> list[float]:
    """What `sample_every` observes on a fresh loop run for `run_for` s, stalled 0.3 s (a
    blocking call, as a large batch or a throttled CPU is) at `stall_at` s if given."""
    observed: list[float] = []
    loop = asyncio.new_event_loop()
    try:
        sample_every(loop, observed.append, interval)
        if stall_at is not None:
            loop.call_later(stall_at, time.sleep, 0.3)
        loop.run_until_complete(asyncio.sleep(run_for))
    finally:
        loop.close()
    return observed


def test_a_stalled_loop_is_observed_once_as_late_as_it_stalled() -> None:
    observed = _samples(stall_at=0.05, run_for=0.6)
    late = [seconds for seconds in observed if seconds >= 0.25]
    assert len(late) == 1, observed  # the stall once, not once per interval it lasted
    assert len(observed) >= 10  # and sampled on after it


def test_an_idle_loop_is_on_time() -> None:
    observed = _samples(stall_at=None, run_for=0.4)
    assert len(observed) >= 10
    assert min(observed) >= 0.0
    assert statistics.median(observed) < 0.01, observed

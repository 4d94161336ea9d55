"""benchmarks.chaos: what its reports keep of an accounting client's tally."""

from __future__ import annotations

from benchmarks.chaos import Tally


def test_a_tally_reports_its_counts_without_each_request_timing() -> None:
    tally = Tally(answered={"200": 2}, lost=1, refused_connects=3)
    tally.timed.extend([(200, 0.001), (200, 0.002)])

    assert tally.counts() == {
        "answered": {"200": 2},
        "lost": 1,
        "lost_errors": {},
        "refused_connects": 3,
    }

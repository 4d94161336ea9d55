from __future__ import annotations

import pytest

from train.report import _both, _verdict

NOISE = "inside the noise: not shown reached"


@pytest.mark.parametrize(
    ("goal", "days", "months", "verdict"),
    [
        (0.665, (0.6678, 0.6660, 0.6766), (0.6678, 0.6655, 0.6700), "reached"),
        # reports/model.md's minimal gap: above 0 resampling days, not with months as units
        (0.0, (0.0022, 0.0012, 0.0036), (0.0022, -0.0008, 0.0053), NOISE),
        (0.0, (0.0022, -0.0001, 0.0036), (0.0022, 0.0010, 0.0053), NOISE),
        (0.0, (-0.0200, -0.0300, -0.0100), (-0.0200, -0.0350, -0.0050), "missed"),
        (0.0, (-0.0200, -0.0300, -0.0100), (-0.0200, -0.0350, 0.0050), NOISE),
    ],
)
def test_a_goal_is_reached_only_when_both_intervals_clear_it(
    goal: float,
    days: tuple[float, float, float],
    months: tuple[float, float, float],
    verdict: str,
) -> None:
    assert _verdict(days, months, goal) == verdict


def test_both_intervals_are_shown_with_what_each_resamples() -> None:
    assert _both((0.0022, 0.0012, 0.0036), (0.0022, -0.0008, 0.0053), sign="+") == (
        "+0.0022 [+0.0012, +0.0036] resampling days, [-0.0008, +0.0053] months as units"
    )

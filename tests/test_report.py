from __future__ import annotations

import pytest

from train.report import _both, _verdict

DAYS_ABOVE = (0.6678, 0.6660, 0.6766)


@pytest.mark.parametrize(
    ("days", "months", "verdict"),
    [
        (DAYS_ABOVE, (0.6678, 0.6655, 0.6700), "reached"),
        # the twenty-ninth session's minimal gap: above 0 resampling days, not with months as units
        (
            (0.0022, 0.0012, 0.0036),
            (0.0022, -0.0008, 0.0053),
            "inside the noise: not shown reached",
        ),
        (
            (0.0022, -0.0001, 0.0036),
            (0.0022, 0.0010, 0.0053),
            "inside the noise: not shown reached",
        ),
        ((-0.0200, -0.0300, -0.0100), (-0.0200, -0.0350, -0.0050), "missed"),
        (
            (-0.0200, -0.0300, -0.0100),
            (-0.0200, -0.0350, 0.0050),
            "inside the noise: not shown reached",
        ),
    ],
)
def test_a_goal_is_reached_only_when_both_intervals_clear_it(
    days: tuple[float, float, float], months: tuple[float, float, float], verdict: str
) -> None:
    goal = 0.665 if days is DAYS_ABOVE else 0.0
    assert _verdict(days, months, goal) == verdict


def test_both_intervals_are_shown_with_what_each_resamples() -> None:
    assert _both((0.0022, 0.0012, 0.0036), (0.0022, -0.0008, 0.0053), sign="+") == (
        "+0.0022 [+0.0012, +0.0036] resampling days, [-0.0008, +0.0053] months as units"
    )

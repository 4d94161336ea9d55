"""benchmarks.revisions: the order in which a round measures the revisions."""

from __future__ import annotations

import pytest

from benchmarks.revisions import round_order


def test_each_revision_takes_each_position_once_over_as_many_rounds() -> None:
    revisions = ["a", "b", "c"]
    orders = [round_order(revisions, number) for number in range(1, 4)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    for position in range(3):
        assert sorted(order[position] for order in orders) == revisions


@pytest.mark.parametrize("number", [1, 2, 7])
def test_every_round_measures_every_revision_once(number: int) -> None:
    assert sorted(round_order(["x", "y"], number)) == ["x", "y"]

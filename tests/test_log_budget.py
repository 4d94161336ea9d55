from __future__ import annotations

import asyncio
import logging

import pytest

from app.observability import log_budget
from app.observability.log_budget import LogBudget

LOGGER = logging.getLogger("test.log_budget")


@pytest.fixture(autouse=True)
def short_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_budget, "WINDOW", 0.05)


def asked(per_second: int, *windows: list[str]) -> list[bool]:
    """What one budget answers lines of these kinds, one window of them after another (the
    loop kept running a window past the last, so its summary comes out)."""

    async def scenario() -> list[bool]:
        loop = asyncio.get_running_loop()
        budget = LogBudget(LOGGER, per_second, "refusals")
        allowed = []
        for kinds in windows:
            allowed += [budget.allows(loop, kind) for kind in kinds]
            await asyncio.sleep(0.1)
        return allowed

    return asyncio.run(scenario())


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER.name]


def test_past_the_budget_lines_are_held_and_summed_up_by_kind_a_window_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        assert asked(3, ["400"] * 5 + ["431"] * 2) == [True] * 3 + [False] * 4
    assert lines(caplog) == [
        "4 more refusals within 0.05 s not logged one by one (400: 2, 431: 2); /metrics counts each"
    ]


def test_the_next_window_lets_lines_through_again(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert asked(1, ["400", "400"], ["408", "408", "408"]) == [True, False, True, False, False]
    assert lines(caplog) == [
        "1 more refusals within 0.05 s not logged one by one (400: 1); /metrics counts each",
        "2 more refusals within 0.05 s not logged one by one (408: 2); /metrics counts each",
    ]


def test_within_the_budget_nothing_is_summed_up(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert asked(2, ["408", "408"]) == [True, True]
    assert lines(caplog) == []

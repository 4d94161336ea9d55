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


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER.name]


def test_past_the_budget_lines_are_held_and_summed_up_by_kind_a_window_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> list[bool]:
        loop = asyncio.get_running_loop()
        budget = LogBudget(LOGGER, 3, "refusals")
        allowed = [budget.allows(loop, kind) for kind in ["400"] * 5 + ["431"] * 2]
        await asyncio.sleep(0.1)
        return allowed

    with caplog.at_level(logging.WARNING):
        allowed = asyncio.run(scenario())
    assert allowed == [True] * 3 + [False] * 4
    assert lines(caplog) == [
        "4 more refusals within 0.05 s not logged one by one (400: 2, 431: 2); /metrics counts each"
    ]


def test_the_next_window_lets_lines_through_again(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> list[bool]:
        loop = asyncio.get_running_loop()
        budget = LogBudget(LOGGER, 1, "refusals")
        first = [budget.allows(loop, "400") for _ in range(2)]
        await asyncio.sleep(0.1)  # the summary of the first window is logged meanwhile
        return first + [budget.allows(loop, "400") for _ in range(2)]

    with caplog.at_level(logging.WARNING):
        allowed = asyncio.run(scenario())
    assert allowed == [True, False, True, False]
    assert lines(caplog) == [
        "1 more refusals within 0.05 s not logged one by one (400: 1); /metrics counts each"
    ]


def test_within_the_budget_nothing_is_summed_up(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> list[bool]:
        loop = asyncio.get_running_loop()
        budget = LogBudget(LOGGER, 2, "refusals")
        allowed = [budget.allows(loop, "408") for _ in range(2)]
        await asyncio.sleep(0.1)
        return allowed

    with caplog.at_level(logging.WARNING):
        assert asyncio.run(scenario()) == [True, True]
    assert lines(caplog) == []

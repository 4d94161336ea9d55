"""make bench's summary, on a hand-made pytest-benchmark file: no timing here."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.latency_report import render, round_ratios, summary, verdict


def _stats(median_us: float) -> dict[str, float]:
    return {"min": median_us * 0.9e-6, "median": median_us * 1e-6, "iqr": 1e-6}


def _rounds(*full_us: float) -> list[dict[str, float]]:
    """Rounds with the no-op at 8 µs, the table at 7.6 µs and full-1 at each of `full_us`."""
    return [{"noop": 8e-6, "minimal-1": 7.6e-6, "full-1": us * 1e-6} for us in full_us]


def _data(*full_us: float) -> dict[str, Any]:
    return {
        "datetime": "2026-12-01T15:00:00",
        "commit_info": {"id": "0123456789abcdef", "dirty": False},
        "machine_info": {"cpu": {"brand_raw": "AMD EPYC"}, "python_version": "3.11.7"},
        "benchmarks": [
            {"name": "test_noop_ceiling", "stats": _stats(8.0), "extra_info": {}},
            {"name": "test_predict[full-1]", "stats": _stats(18.0), "extra_info": {}},
            {
                "name": "test_alternating",
                "stats": _stats(90_000.0),
                "extra_info": {"rounds": _rounds(*full_us)},
            },
        ],
    }


def test_each_round_is_compared_with_its_own_noop() -> None:
    data = _data(18.0, 24.0)
    data["benchmarks"][2]["extra_info"]["rounds"][1]["noop"] = 12e-6
    ratios = round_ratios(data)
    assert ratios["full-1"] == pytest.approx([2.25, 2.0])
    assert ratios["minimal-1"] == pytest.approx([0.95, 7.6 / 12])
    assert "noop" not in ratios


@pytest.mark.parametrize(
    ("ratios", "expected"),
    [
        ([2.0, 2.5, 2.4], "met"),
        ([2.6, 3.0, 2.51], "missed"),
        ([2.0, 2.6, 2.4], "within the noise"),
        ([], "not measured"),
    ],
)
def test_a_verdict_only_when_every_round_agrees(ratios: list[float], expected: str) -> None:
    assert verdict(ratios, 2.5) == expected


def test_the_summary_keeps_the_rounds_their_median_and_range() -> None:
    full = summary(_data(24.0, 16.0, 28.0))["full-1"]
    assert full["rounds"] == pytest.approx([3.0, 2.0, 3.5])
    assert (full["median"], full["min"], full["max"]) == pytest.approx((3.0, 2.0, 3.5))
    assert (full["goal"], full["verdict"]) == (2.5, "within the noise")
    assert summary(_data(24.0))["minimal-1"]["verdict"] is None


def test_the_report_judges_the_goal_on_the_rounds() -> None:
    text = render(_data(18.0, 19.6, 17.2))
    assert "code: 0123456" in text
    assert "| `test_predict[full-1]` | 16.2 | 18.0 | 1.0 | x2.25 |" in text
    assert "| `full-1` | x2.25 | x2.15 to x2.45 | 3 | ≤ x2.5 | met |" in text
    assert "| `minimal-1` | x0.95 | x0.95 to x0.95 | 3 | none | n/a |" in text
    assert "| 2 | 8.0 | 7.6 | x0.95 | 19.6 | x2.45 |" in text
    assert "test_alternating" not in text.split("## Alternating")[0]


def test_a_missed_goal_says_so() -> None:
    assert "| x3.00 | x2.75 to x3.25 | 3 | ≤ x2.5 | **missed** |" in render(_data(24.0, 22.0, 26.0))


def test_without_the_rounds_nothing_is_judged() -> None:
    data = _data(18.0)
    data["benchmarks"] = data["benchmarks"][:2]
    assert "| `full-1` | n/a | n/a | 0 | ≤ x2.5 | not measured |" in render(data)

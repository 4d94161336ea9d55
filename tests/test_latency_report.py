"""make bench's summary, on a hand-made pytest-benchmark file: no timing here."""

from __future__ import annotations

from typing import Any

from benchmarks.latency_report import render


def _stats(median_us: float) -> dict[str, float]:
    return {"min": median_us * 0.9e-6, "median": median_us * 1e-6, "iqr": 1e-6}


def _data(full_us: float) -> dict[str, Any]:
    return {
        "datetime": "2026-12-01T15:00:00",
        "commit_info": {"id": "0123456789abcdef", "dirty": False},
        "machine_info": {"cpu": {"brand_raw": "AMD EPYC"}, "python_version": "3.11.7"},
        "benchmarks": [
            {"name": "test_noop_ceiling", "stats": _stats(8.0)},
            {"name": "test_predict[full-1]", "stats": _stats(full_us)},
        ],
    }


def test_the_goal_is_the_median_ratio_to_the_noop_in_the_same_run() -> None:
    text = render(_data(18.0))
    assert "code: 0123456" in text
    assert "| `test_predict[full-1]` | 16.2 | 18.0 | 1.0 | x2.25 |" in text
    assert "| x2.25 | ≤ x2.5 | met |" in text


def test_a_missed_goal_says_so() -> None:
    assert "| x3.00 | ≤ x2.5 | **missed** |" in render(_data(24.0))


def test_without_the_noop_nothing_is_judged() -> None:
    data = _data(18.0)
    data["benchmarks"] = data["benchmarks"][1:]
    assert "not measured" in render(data)

"""benchmarks/lambda_local.py: the Lambda handler's cold start and invocations, timed in fresh
interpreters, summarised and rendered."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.lambda_local import BODIES, main, one_cold_start, render, summarise
from benchmarks.stress import StressError


def _run(import_s: float, scale: float) -> dict[str, Any]:
    return {
        "import_s": import_s,
        "cold_start_s": import_s / 10,
        "invocations_s": {
            mix: [scale * factor * n / 1000 for n in range(1, 101)]
            for mix, factor in (("minimal", 1.0), ("full", 2.0))
        },
        "statuses": {"200": 200},
    }


def test_the_summary_is_the_medians_over_the_cold_starts() -> None:
    summary = summarise([_run(1.0, 1.0), _run(3.0, 2.0), _run(2.0, 3.0)])
    assert summary["import_s"] == 2.0
    assert summary["cold_start_s"] == 0.2
    # each cold start's median is 50.5 x its scale ms (x 2 for full); the median of those
    assert summary["invocations"]["minimal"] == {
        "p50_ms": 101.0, "p50_range_ms": [50.5, 151.5], "p99_ms": 198.0,
    }  # fmt: skip
    assert summary["invocations"]["full"]["p50_ms"] == 202.0


def test_the_report_names_each_path_and_the_revision() -> None:
    result = {
        "date": "2026-12-07T00:00:00+00:00", "revision": "abc1234",
        "machine": {"uname": "Linux", "cpu": "CPU", "cores": 2}, "load_average_after": "0 0 0",
        "python": "3.11.7", "settings": {"cold_starts": 3, "invocations": 100},
        "summary": summarise([_run(1.0, 1.0), _run(3.0, 2.0), _run(2.0, 3.0)]),
    }  # fmt: skip
    report = render(result)
    assert report.startswith("# The Lambda handler, locally (`make lambda-local`)")
    assert "code: abc1234" in report
    assert "| 2.0 s | 0.2 s |" in report
    assert "| minimal flight (table) | 101.0 ms (50.5 to 151.5) | 198.0 ms |" in report
    assert "| full-schedule flight (onnxruntime full) | 202.0 ms" in report


def test_a_real_cold_start_answers_every_event_200() -> None:
    run = one_cold_start(invocations=5)
    assert run["statuses"] == {"200": 5 * len(BODIES)}
    assert set(run["invocations_s"]) == set(BODIES)
    assert all(len(times) == 5 for times in run["invocations_s"].values())
    assert 0 < run["import_s"] < 120
    assert 0 < run["cold_start_s"] < 120


def test_a_cold_start_that_fails_stops_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("benchmarks.lambda_local.MODELS", Path("/nonexistent/models"))
    with pytest.raises(StressError, match="cold start failed"):
        one_cold_start(invocations=1)


def test_main_writes_the_json_and_the_report(tmp_path: Path) -> None:
    assert main(["--cold-starts", "1", "--invocations", "3", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "lambda-local.json").read_text())
    assert result["python"] == ".".join(map(str, sys.version_info[:3]))
    assert set(result["summary"]["invocations"]) == set(BODIES)
    assert (tmp_path / "lambda-local.md").read_text() == render(result)

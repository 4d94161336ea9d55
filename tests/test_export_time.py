"""benchmarks/export_time.py: one export timed, its models compared with the committed ones."""

from __future__ import annotations

import json
import resource
import shutil
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from benchmarks.export_time import GOAL_S, compare, main, render, time_export, verdict
from benchmarks.stress import StressError
from tests.conftest import MODELS_DIR

BUSY = """
import sys, time
ballast = bytearray(int(sys.argv[1]) * 1024 * 1024)
ballast[::4096] = b"x" * len(ballast[::4096])
deadline = time.process_time() + 0.4
while time.process_time() < deadline:
    pass
"""
"""A stand-in export: 0.4 s of CPU and the megabytes of its argument resident."""


def test_the_timing_is_the_child_process_own() -> None:
    """The child holds more memory than this process ever has, so its peak cannot be read
    off this process."""
    ballast_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024 + 100
    timing = time_export([sys.executable, "-c", BUSY, str(ballast_mb)])
    assert 0.35 <= timing.cpu_s <= timing.wall_s + 0.1
    assert timing.peak_rss_mb >= ballast_mb
    assert timing.others_cpu_s >= 0


def test_a_failed_export_stops_the_run() -> None:
    with pytest.raises(StressError, match="exit status 3"):
        time_export([sys.executable, "-c", "raise SystemExit(3)"])


def test_the_comparison_names_what_differs(tmp_path: Path) -> None:
    shutil.copytree(MODELS_DIR, tmp_path, dirs_exist_ok=True)
    assert set(compare(tmp_path).values()) == {"identical"}

    card = orjson.loads((tmp_path / "delay-full.json").read_bytes())
    card["version"] = "rebuilt"
    (tmp_path / "delay-full.json").write_bytes(orjson.dumps(card))
    (tmp_path / "delay-full.onnx").write_bytes(b"other")
    (tmp_path / "delay-minimal.onnx").unlink()
    outcome = compare(tmp_path)
    assert outcome["models/delay-full.json"] == "differs in `version`"
    assert outcome["models/delay-full.onnx"] == "differs"
    assert outcome["models/delay-minimal.onnx"] == "missing"
    assert outcome["models/delay-minimal.json"] == "identical"

    card = orjson.loads((tmp_path / "delay-minimal.json").read_bytes())
    (tmp_path / "delay-minimal.json").write_text(json.dumps(card, indent=1), encoding="utf-8")
    assert compare(tmp_path)["models/delay-minimal.json"] == "differs in its layout only"


@pytest.mark.parametrize(
    ("wall_s", "others_cpu_s", "expected"),
    [
        (GOAL_S, 0.0, "met"),
        (GOAL_S + 1, 0.0, "**missed**"),
        (300.0, 60.0, "met, on cores not quiet (other processes: 20% of a core)"),
    ],
)
def test_the_verdict_is_the_wall_time_against_the_goal_and_says_how_quiet(
    wall_s: float, others_cpu_s: float, expected: str
) -> None:
    assert verdict({"wall_s": wall_s, "others_cpu_s": others_cpu_s}) == expected


def _result(models: dict[str, str]) -> dict[str, Any]:
    return {
        "date": "2026-12-07T00:00:00+00:00", "revision": "abc1234",
        "machine": {"uname": "Linux", "cpu": "CPU", "cores": 2},
        "data": {"name": "flights.csv.gz", "bytes": 1234567, "csv_sha256": "0" * 64},
        "search": "grid", "models": models,
        "timing": {"wall_s": 401.0, "cpu_s": 400.0, "peak_rss_mb": 812.5, "others_cpu_s": 4.0,
                   "load_before": "0.1 0.2 0.3", "load_after": "1.0 0.9 0.6"},
    }  # fmt: skip


def test_the_report_gives_the_run_its_data_and_its_models() -> None:
    report = render(_result({"models/delay-full.onnx": "identical"}))
    assert report.startswith("# The export's time (`make export-time`)")
    assert "code: abc1234" in report
    assert "`flights.csv.gz` (1,234,567 bytes, CSV sha256 `" in report
    assert "(1% of one core on average)" in report
    assert "| 401.0 s | 400.0 s | 812.5 MB | met |" in report
    assert "| `models/delay-full.onnx` | identical |" in report


def test_main_times_a_real_export_and_writes_the_report(
    synthetic_csv: Path, tmp_path: Path
) -> None:
    arguments = ["--data", str(synthetic_csv), "--search", "first", "--out", str(tmp_path)]
    assert main(arguments) == 0
    result = json.loads((tmp_path / "export-time.json").read_text())
    assert result["timing"]["cpu_s"] > 0
    # synthetic data cannot rebuild the committed models; every file was written
    assert set(result["models"]) == {f"models/{path.name}" for path in MODELS_DIR.glob("delay-*")}
    assert "missing" not in result["models"].values()
    assert result["models"]["models/delay-full.onnx"] == "differs"
    assert (tmp_path / "export-time.md").read_text() == render(result)


def test_main_refuses_a_missing_data_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data", str(tmp_path / "none.csv.gz")]) == 1
    assert "no data file at" in capsys.readouterr().err

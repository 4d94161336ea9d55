"""A short real `benchmarks.compare` run: two variants, one round, real gunicorn and wrk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.server, pytest.mark.real_data]


def test_a_one_round_compare_writes_the_report_with_ratios(
    wrk_bodies: Path, tmp_path: Path
) -> None:
    out = tmp_path / "reports"
    command = [
        sys.executable, "-m", "benchmarks.compare", "--rounds", "1", "--duration", "2",
        "--warmup", "1", "--variants", "noop,service", "--connections", "16",
        "--wrk-dir", str(wrk_bodies), "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    report = (out / "benchmarks.md").read_text(encoding="utf-8")
    assert "| **service** |" in report
    noop = next(line for line in report.splitlines() if line.startswith("| `noop` |"))
    assert noop.split(" | ")[3].startswith("x")  # the ratio to service
    assert "`service` answers" in report
    assert (out / "benchmarks.png").read_bytes()[:4] == b"\x89PNG"
    runs = json.loads((out / "benchmarks.json").read_text(encoding="utf-8"))["runs"]
    assert [r["variant"] for r in runs] == ["noop", "service"]
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in runs)
    assert all(r["server_cpu_s"] > 0 and len(r["rss_mb"]) >= 1 for r in runs)

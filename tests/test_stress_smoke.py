"""A 3-second real stress run: bodies from the real data, gunicorn as served, wrk, the report."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.stress import expected_workers

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.server, pytest.mark.real_data]


def test_a_short_stress_run_passes_and_writes_its_report(wrk_bodies: Path, tmp_path: Path) -> None:
    out = tmp_path / "stress"
    command = [
        sys.executable, "-m", "benchmarks.stress", "--duration", "3", "--connections", "8",
        "--threads", "1", "--bodies", str(wrk_bodies / "minimal.jsonl"),
        "--out", str(out), "--min-requests", "500", "--revision", "abc1234 (as given)",
    ]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    report = (out / "README.md").read_text(encoding="utf-8")
    assert "**PASS**" in report
    assert "- Code: abc1234 (as given)" in report  # make stress's label, taken before its runs
    assert re.search(
        r"\| server CPU \(master and workers\) \| [\d.]+ s, [\d.,]+ µs a request \|", report
    )
    assert (out / "latency.png").read_bytes()[:4] == b"\x89PNG"


def test_the_harness_waits_for_the_workers_gunicorn_starts_not_those_forked_so_far() -> None:
    assert expected_workers({"WORKERS": "3"}) == 3
    assert expected_workers({"WORKERS": "abc"}) is None  # refused: the server says why

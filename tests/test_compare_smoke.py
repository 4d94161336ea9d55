"""Short real `benchmarks.compare` runs: one round, real gunicorn and wrk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.server, pytest.mark.real_data]
CONNECTIONS = 16


def compare(variants: str, wrk_bodies: Path, out: Path) -> tuple[str, list[dict[str, Any]]]:
    """One round of 2 s (1 s of warm-up) of `variants`: benchmarks.md and the JSON's runs."""
    command = [
        sys.executable, "-m", "benchmarks.compare", "--rounds", "1", "--duration", "2",
        "--warmup", "1", "--variants", variants, "--connections", str(CONNECTIONS),
        "--wrk-dir", str(wrk_bodies), "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    runs = json.loads((out / "benchmarks.json").read_text(encoding="utf-8"))["runs"]
    return (out / "benchmarks.md").read_text(encoding="utf-8"), runs


def test_a_one_round_compare_writes_the_report_with_ratios(
    wrk_bodies: Path, tmp_path: Path
) -> None:
    out = tmp_path / "reports"
    report, runs = compare("noop,service", wrk_bodies, out)
    assert "| **service** |" in report
    noop = next(line for line in report.splitlines() if line.startswith("| `noop` |"))
    assert noop.split(" | ")[3].startswith("x")  # the ratio to service
    assert "`service` answers" in report
    assert (out / "benchmarks.png").read_bytes()[:4] == b"\x89PNG"
    assert [r["variant"] for r in runs] == ["noop", "service"]
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in runs)
    assert all(r["server_cpu_s"] > 0 and len(r["rss_mb"]) >= 1 for r in runs)


def test_a_micro_batched_variant_records_what_its_server_merged(
    wrk_bodies: Path, tmp_path: Path
) -> None:
    """The two scrapes around the measured run reach the workers' flushed tallies: merged calls
    of at most 16 requests (wrk's 16 connections), no more requests than the run answered."""
    report, (run,) = compare("service-full", wrk_bodies, tmp_path / "reports")
    merged = run["merged"]
    assert merged["calls"] > 0
    # wrk does not count the requests still in flight when it stops: at most one a connection
    assert merged["calls"] <= merged["requests"] <= run["requests"] + CONNECTIONS
    assert sum(merged["counts"]) == merged["calls"]
    assert merged["bounds"][4] == CONNECTIONS
    assert sum(merged["counts"][5:]) == 0  # none over 16 requests
    assert "## Requests merged into one onnxruntime call (app.inference.microbatch)" in report

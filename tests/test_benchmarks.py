"""The in-process benchmarks (`make bench`) run, each once, with pytest-benchmark's timing off.

They live outside tests/ and their timings never gate `make test`, but a benchmark that no
longer runs is a broken make target: `make bench` failed at `test_infer_json[1000]` from
af01a01 (OIP bodies decoded in the batch thread, which the in-process driver cannot wait for)
until 423454c, and no test noticed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTEST_OPTIONS = ("--benchmark-disable", "-p", "no:cacheprovider")
"""Each benchmark's function called once, untimed; no cache written into the checkout."""


def test_every_in_process_benchmark_runs() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks", "-q", *PYTEST_OPTIONS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout  # something ran: not an empty collection

"""The in-process benchmarks (`make bench`) run, each once, with pytest-benchmark's timing off.

They live outside tests/ and their timings never gate `make test`, but a benchmark that no
longer runs is a broken make target: `make bench` failed at `test_infer_json[1000]` from
af01a01 (OIP bodies decoded in the batch thread, which the in-process driver cannot wait for)
until 423454c, and no test noticed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.metrics_archive import FIRST_DEAD, _copy, dead_files

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


def test_the_metrics_archive_benchmark_tells_dead_workers_files_from_live_ones(
    tmp_path: Path,
) -> None:
    """`make metrics-archive` checked that the archiving left no dead worker's file by the glob
    `*_5*.db`, which a live worker's pid of 5… matches too."""
    for name in ("counter_5123.db", "gauge_livesum_5123.db", "counter_archive.db"):
        (tmp_path / name).touch()
    assert dead_files(tmp_path) == []
    (tmp_path / f"histogram_{FIRST_DEAD + 7}.db").touch()
    assert dead_files(tmp_path) == [f"histogram_{FIRST_DEAD + 7}.db"]


def test_a_dead_workers_copy_holds_no_live_gauge(tmp_path: Path) -> None:
    """As prometheus_client's mark_process_dead leaves it: no file of any `live…` gauge mode.
    The copy kept the `livemostrecent` file a worker has held since 7146bb4, which the master
    never archives, and `make metrics-archive` failed on it at every run."""
    template, dead = tmp_path / "template", tmp_path / "dead"
    template.mkdir()
    dead.mkdir()
    for kind in ("counter", "histogram", "gauge_livesum", "gauge_livemostrecent"):
        (template / f"{kind}_42.db").touch()
    _copy(template, "42", dead, FIRST_DEAD, live=False)
    assert sorted(path.name for path in dead.iterdir()) == [
        f"counter_{FIRST_DEAD}.db",
        f"histogram_{FIRST_DEAD}.db",
    ]

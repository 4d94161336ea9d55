"""What archiving dead workers' metric files buys a scrape and costs the master, in-process:
`python -m benchmarks.metrics_archive` (app.observability.metrics_archive).

One worker's files are written by the app's own metrics code (twelve route, method and status
answers, two models' predictions and calls), then copied as DEAD dead workers and two live
ones. Alternating over --rounds, each a median of --scrapes:

* A: a scrape as before, prometheus_client's MultiProcessCollector over every file;
* B: a scrape now, app.observability.metrics_archive.collect, once the master has archived the
  dead workers' files (the archives and the live workers' files);
* C: metrics_archive.collect over every file, as when the master could not archive them (its
  exact sums against A's `+=`);
* child_exit: mark_process_dead (all child_exit did with the metrics before) and the archiving
  of one more dead worker, the archives holding DEAD workers already.

Prints the medians of the rounds' medians, in ms, and with --out writes them, with the revision
and the machine, to OUT/metrics-archive.md (`make metrics-archive`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.stress import load_average, revision
from train.provenance import machine

DEAD = 500
FIRST_DEAD = 5_000_000
"""Over Linux's PID_MAX_LIMIT (2**22): no process has these pids."""
LIVE_GAUGES = "gauge_live"
"""The gauge files prometheus_client's mark_process_dead removes (every `live…` mode): a dead
worker leaves none. The worker's files hold a `livemostrecent` one since 7146bb4
(model_last_reload_successful), which a dead copy kept, never archived: the check below failed."""


def write_worker(directory: Path) -> None:
    """A busy worker's files, written by app.observability.metrics (run with
    PROMETHEUS_MULTIPROC_DIR set before prometheus_client is imported)."""
    from dataclasses import dataclass

    from app.observability import metrics

    @dataclass(frozen=True)
    class Model:
        name: str
        version: str

    @dataclass(frozen=True)
    class Prediction:
        labels: tuple[int, ...]
        delayed: int
        seconds: float

    answers = [
        ("/predict", "POST", 200),
        ("/predict", "POST", 400),
        ("/predict", "POST", 422),
        ("/predict", "GET", 405),
        ("/health", "GET", 200),
        ("/v2/health/live", "GET", 200),
        ("/v2/health/ready", "GET", 200),
        ("/v2/models/{name}/infer", "POST", 200),
        ("/v2/models/{name}/infer", "POST", 400),
        ("/v2/models/{name}/ready", "GET", 200),
        ("/metrics", "GET", 200),
        (metrics.UNMATCHED_ROUTE, "GET", 404),
    ]
    for i, (route, method, status) in enumerate(answers):
        metrics.observe_latency(route, method, status, 0.001 * (1 + i))
    for model in (Model("delay-minimal", "4e45033c956b"), Model("delay-full", "cd7ce795573b")):
        metrics.count_predictions(model, None, Prediction((0, 1), 1, 0.0002))  # type: ignore[arg-type]
        metrics.observe_merge(model, 3)  # type: ignore[arg-type]
    metrics.flush()


def _template(scratch: Path) -> tuple[Path, str]:
    """One worker's files, and that worker's pid as it appears in their names."""
    template = scratch / "template"
    template.mkdir()
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(template)}
    subprocess.run(
        [sys.executable, "-m", "benchmarks.metrics_archive", "--write-worker", str(template)],
        env=environment,
        check=True,
    )
    (counter,) = template.glob("counter_*.db")
    return template, counter.stem.removeprefix("counter_")


def _copy(template: Path, pid: str, into: Path, as_pid: int, live: bool) -> None:
    for path in template.glob(f"*_{pid}.db"):
        if live or not path.name.startswith(LIVE_GAUGES):  # mark_process_dead's part
            shutil.copy(path, into / path.name.replace(f"_{pid}.db", f"_{as_pid}.db"))


def dead_files(directory: Path) -> list[str]:
    """The metric files of the dead workers (pids from FIRST_DEAD) left in `directory`: none once
    the master has archived them. Not `*_5*.db`, which a live worker's pid of 5… matched too."""
    return sorted(
        path.name
        for path in directory.glob("*.db")
        if (pid := path.stem.rpartition("_")[2]).isdigit() and int(pid) >= FIRST_DEAD
    )


def _used(path: Path) -> int:
    """The bytes of an mmap file that hold entries (the rest is preallocated)."""
    with path.open("rb") as file:
        return int.from_bytes(file.read(4), sys.byteorder)


def _median_ms(action: Callable[[], object], times: int) -> float:
    spent = []
    for _ in range(times):
        start = time.perf_counter()
        action()
        spent.append(time.perf_counter() - start)
    return statistics.median(spent) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--scrapes", type=int, default=5)
    parser.add_argument("--dead", type=int, default=DEAD)
    parser.add_argument("--out", type=Path, help="directory to write metrics-archive.md into")
    parser.add_argument("--write-worker", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.write_worker:
        write_worker(arguments.write_worker)
        return

    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

    from app.observability.metrics import _Families
    from app.observability.metrics_archive import collect, compact

    load_before = load_average()
    scratch = Path(tempfile.mkdtemp(prefix="bench-metrics-archive-"))
    try:
        template, pid = _template(scratch)
        size = sum(_used(path) for path in template.glob("*.db"))
        before, after = scratch / "before", scratch / "after"
        for directory in (before, after):
            directory.mkdir()
            for live in (os.getpid(), os.getppid()):
                _copy(template, pid, directory, live, live=True)
            for dead in range(FIRST_DEAD, FIRST_DEAD + arguments.dead):
                _copy(template, pid, directory, dead, live=False)
        compact(after)
        assert dead_files(after) == []

        def old_scrape() -> bytes:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, str(before))  # type: ignore[no-untyped-call]
            return generate_latest(registry)

        def new_scrape() -> bytes:
            return generate_latest(_Families(collect(after)))

        def new_scrape_unarchived() -> bytes:
            return generate_latest(_Families(collect(before)))

        next_dead = FIRST_DEAD + arguments.dead

        def child_exit_ms() -> float:
            """One more worker's files (copied untimed), then what child_exit does with them."""
            nonlocal next_dead
            _copy(template, pid, after, next_dead, live=True)
            start = time.perf_counter()
            mark_process_dead(next_dead, str(after))  # type: ignore[no-untyped-call]
            compact(after)
            next_dead += 1
            return (time.perf_counter() - start) * 1000

        rows: dict[str, list[float]] = {"A": [], "B": [], "C": [], "child_exit": []}
        for _ in range(arguments.rounds):
            rows["A"].append(_median_ms(old_scrape, arguments.scrapes))
            rows["B"].append(_median_ms(new_scrape, arguments.scrapes))
            rows["C"].append(_median_ms(new_scrape_unarchived, arguments.scrapes))
            rows["child_exit"].append(
                statistics.median(child_exit_ms() for _ in range(arguments.scrapes))
            )
        _, cpu, cores = machine()
        lines = [
            "# Dead workers' metric files: a scrape and a worker exit (`make metrics-archive`)",
            "",
            f"- Code: {revision()}; {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC",
            f"- CPU: {cpu}, {cores} cores; load average before: {load_before}, after: "
            f"{load_average()}. In-process, one Python process; the machine is shared.",
            f"- One worker's files: {size / 1024:.0f} KB of entries (written by the app's metrics "
            f"code); {arguments.dead} dead workers and 2 live ones. Rows alternate in each of "
            f"{arguments.rounds} rounds, each a median of {arguments.scrapes}; the medians of the "
            "rounds' medians, in ms, with the rounds' range.",
            f"- Command: `python -m benchmarks.metrics_archive {' '.join(sys.argv[1:])}`",
            "",
            "| what | ms (median) | rounds |",
            "| --- | ---: | --- |",
            *(f"| {ROWS[row]} | {_median_row(values)} |" for row, values in rows.items()),
            "",
        ]
        report = "\n".join(lines)
        print(report)
        if arguments.out:
            (arguments.out / "metrics-archive.md").write_text(report)
    finally:
        shutil.rmtree(scratch)


ROWS = {
    "A": "A: a scrape before (MultiProcessCollector over every file, the dead workers' kept)",
    "B": "B: a scrape now (metrics_archive.collect, the dead workers' files archived)",
    "C": "C: metrics_archive.collect over every file (the master could not archive them)",
    "child_exit": "a worker exit in the master: mark_process_dead and archiving its files",
}


def _median_row(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} | {min(values):.1f}-{max(values):.1f}"


if __name__ == "__main__":
    main()

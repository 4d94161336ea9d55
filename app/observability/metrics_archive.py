"""Dead workers' metric files folded into one archive file per type, and the scrape that reads
the directory exactly across it.

prometheus_client's multiprocess mode writes one file per process and type. A dead worker's
counter, histogram (and summary) files must stay in the sums, so every reload or restart added
a set that every scrape then read (500 dead workers: a scrape ten times as slow). The master,
from gunicorn.conf.py's child_exit, adds every dead process's such files into
`<type>_archive.db` and removes them (`compact`). Gauges are left alone: this service's are all
of a `live` mode (the workers' `livesum`, the master's `livemostrecent`), whose files
prometheus_client's mark_process_dead removes; a scrape skips those of a process that is gone
anyway (one no master reaped).

Exact: `collect` sums each sample over the files with math.fsum (correctly rounded, so the
grouping of the terms does not matter), and an archive keeps each sum as two doubles, in the
value and in the timestamp slot the summed types leave at zero, whose exact sum is that of what
they replace. A scrape reads every value to the last bit alike before and after a compaction;
summed with `+=` in file order, a float sum (a histogram's `_sum`) moved by an ulp either way,
and one down is a counter reset to Prometheus.

Consistent: a scrape lists and reads the files under a shared flock on LOCK, a compaction
changes them under an exclusive one, so a scrape never reads an archive and the files it holds.
A compaction killed half-way (several renames and unlinks) is finished by the next one, and
until then read as if finished: JOURNAL lists the files it folds in, written before the first
archive is renamed into place; those of a type whose temporary archive is gone are in its
archive. A master starting afresh removes them with the `*.db` files (app.server.run_dirs).
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.utils import floatToGoString

from app import processes
from app.observability.metric_files import AllocatedMmapedDict

SUMMED = ("counter", "histogram", "summary")
"""The file types whose samples add up across processes, whatever they mean: these are archived."""
ARCHIVE = "archive"
"""In place of a pid in an archive's name: `counter_archive.db`."""
LOCK = "archive.lock"
JOURNAL = "archive.journal"
TEMPORARY = ".tmp"
"""Suffix of an archive or journal being written: not `.db`, so no collector reads it."""
LOCK_WAIT = 0.5
"""Seconds the master waits for the scrapes under way; then the next worker exit compacts."""


def collect(directory: Path) -> list[Metric]:
    """The families of every file in `directory`, as prometheus_client's MultiProcessCollector
    gives them, the summed types' samples summed exactly (math.fsum)."""
    gauges = []
    terms: dict[str, list[float]] = {}
    types: dict[str, str] = {}
    with _locked(directory, fcntl.LOCK_SH):
        absorbed = _absorbed(directory)
        for path in directory.glob("*.db"):
            kind, _, owner = path.name.partition("_")
            if _unsized(path):
                continue
            if kind not in SUMMED:
                if not _dead_live_gauge(owner):
                    gauges.append(str(path))
            elif path not in absorbed:
                _read_terms(path, owner == f"{ARCHIVE}.db", terms, types, kind)
    return [*MultiProcessCollector.merge(gauges), *_families(terms, types)]  # type: ignore[no-untyped-call]


def _unsized(path: Path) -> bool:
    """Whether `path` is a file a starting process has made but not sized yet: prometheus_client
    opens it empty, then sizes it, and a read between the two found no header (a struct.error,
    /metrics a 500 while a reload's new workers made theirs). Nothing is in it yet; a file only
    grows, so one sized now reads whole."""
    try:
        return path.stat().st_size == 0
    except FileNotFoundError:  # a gauge file its master removed as it reaped its process
        return True


def _dead_live_gauge(owner: str) -> bool:
    """Whether a gauge file (`<mode>_<pid>.db` after `gauge_`) is a `live*` gauge of a process
    that is gone: its master removes it when it reaps that process (gunicorn.conf.py's
    child_exit), but a master killed during a binary upgrade reaps nothing, and the workers it
    left then stayed in `model_workers` of the directory the new master shares."""
    mode, _, pid = owner.removesuffix(".db").rpartition("_")
    return mode.startswith("live") and pid.isdigit() and not processes.exists(int(pid))


def compact(directory: Path) -> int:
    """Folds the summed-type files of every process that no longer exists into the archives and
    removes them; returns how many it removed. Raises BlockingIOError when scrapes held the lock
    for LOCK_WAIT (nothing changed), or the OSError that stopped it (the next call finishes)."""
    with _locked(directory, fcntl.LOCK_EX | fcntl.LOCK_NB):
        _recover(directory)
        dead: dict[str, list[Path]] = {}
        for path in directory.glob("*.db"):
            kind, _, owner = path.name.partition("_")
            pid = owner.removesuffix(".db")
            if kind in SUMMED and pid.isdigit() and not processes.exists(int(pid)):
                dead.setdefault(kind, []).append(path)
        if not dead:
            return 0
        for kind, paths in dead.items():
            _write_archive(directory / f"{kind}_{ARCHIVE}.db", paths)
        folded = [path for paths in dead.values() for path in paths]
        journal = directory / JOURNAL
        _temporary(journal).write_text("".join(f"{path.name}\n" for path in folded))
        os.replace(_temporary(journal), journal)
        for kind in dead:
            archive = directory / f"{kind}_{ARCHIVE}.db"
            os.replace(_temporary(archive), archive)
        for path in folded:
            path.unlink()
        journal.unlink()
        return len(folded)


def leftovers(directory: Path) -> list[Path]:
    """What a compaction killed half-way leaves besides `*.db` files: a master starting afresh
    removes them with those, or its compactions would take a new worker's file for a folded one."""
    journal = directory / JOURNAL
    archives = directory.glob(f"*_{ARCHIVE}.db{TEMPORARY}")
    return [
        path
        for path in (journal, _temporary(journal), *archives)
        if path.is_file() and not path.is_symlink()
    ]


def _write_archive(archive: Path, paths: list[Path]) -> None:
    """The archive plus `paths`, each sum as two doubles whose exact sum is the exact sum, into
    the archive's temporary file; raises ArithmeticError if two doubles cannot hold one."""
    terms: dict[str, list[float]] = {}
    if archive.exists():
        _read_terms(archive, True, terms, {}, "")
    for path in paths:
        if not _unsized(path):  # a process killed as it made its file: nothing in it
            _read_terms(path, False, terms, {}, "")
    temporary = _temporary(archive)
    temporary.unlink(missing_ok=True)  # MmapedDict would add to a file left there
    written = AllocatedMmapedDict(str(temporary))  # a full disk: OSError, not the master's SIGBUS
    try:
        for key, values in terms.items():
            high = math.fsum(values)
            low = math.fsum([*values, -high])
            if not math.isfinite(low) or math.fsum([*values, -high, -low]) != 0.0:
                raise ArithmeticError(f"{archive.name}: {key} needs more than two doubles")
            written.write_value(key, high, low)  # type: ignore[no-untyped-call]
    finally:
        written.close()  # type: ignore[no-untyped-call]


def _read_terms(
    path: Path, archive: bool, terms: dict[str, list[float]], types: dict[str, str], kind: str
) -> None:
    """Adds the file's values to `terms` by key (an archive's two doubles each)."""
    for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(str(path)):  # type: ignore[no-untyped-call]
        found = terms.setdefault(key, [])
        found.append(value)
        if archive:
            found.append(timestamp)
        types[key] = kind


def _families(terms: dict[str, list[float]], types: dict[str, str]) -> list[Metric]:
    """Families from summed samples, as MultiProcessCollector builds them: a histogram's
    buckets made cumulative and its count their total, each series' samples together."""
    metrics: dict[str, Metric] = {}
    series: dict[tuple[str, str], tuple[dict[float, float], dict[str, float]]] = {}
    for key, values in terms.items():
        metric_name, name, labels, help_text = json.loads(key)
        if metric_name not in metrics:
            metrics[metric_name] = Metric(metric_name, help_text, types[key])
        le = labels.pop("le", None)
        buckets, others = series.setdefault(
            (metric_name, json.dumps(labels, sort_keys=True)), ({}, {})
        )
        if le is not None and types[key] == "histogram":
            buckets[float(le)] = math.fsum(values)
        else:
            others[name] = math.fsum(values)
    for (metric_name, labels_json), (buckets, others) in series.items():
        metric, labels = metrics[metric_name], json.loads(labels_json)
        if buckets:
            total = 0.0
            for bound, count in sorted(buckets.items()):
                total += count
                le = floatToGoString(bound)  # type: ignore[no-untyped-call]
                metric.add_sample(f"{metric_name}_bucket", {**labels, "le": le}, total)
            metric.add_sample(f"{metric_name}_count", labels, total)
        for name, value in others.items():
            metric.add_sample(name, labels, value)
    return list(metrics.values())


def _absorbed(directory: Path) -> set[Path]:
    """The files a compaction killed half-way had already added to their type's archive."""
    try:
        names = (directory / JOURNAL).read_text().split()
    except FileNotFoundError:
        return set()
    absorbed = set()
    for name in names:
        archive = directory / f"{name.partition('_')[0]}_{ARCHIVE}.db"
        if not _temporary(archive).exists():
            absorbed.add(directory / name)
    return absorbed


def _recover(directory: Path) -> None:
    """Finishes a compaction killed half-way: removes the files already in an archive and the
    archives never renamed into place (their files are still there)."""
    for path in _absorbed(directory):
        path.unlink(missing_ok=True)
    for path in leftovers(directory):
        path.unlink()


def _temporary(archive: Path) -> Path:
    return archive.with_name(archive.name + TEMPORARY)


@contextmanager
def _locked(directory: Path, operation: int) -> Iterator[None]:
    """flock on LOCK, held in the block; a non-blocking request is retried for LOCK_WAIT. The
    file is opened and closed here: no worker forked meanwhile can inherit the master's lock. On
    a read-only filesystem (TMPDIR turned read-only under the server) a scrape reads unlocked:
    nothing can compact there meanwhile (it was a 500 on EROFS)."""
    try:
        descriptor = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        if error.errno != errno.EROFS or operation & fcntl.LOCK_EX:
            raise
        yield
        return
    try:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(descriptor, operation)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.005)
        yield
    finally:
        os.close(descriptor)  # releases the lock

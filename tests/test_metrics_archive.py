from __future__ import annotations

import contextlib
import os
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, Protocol, TypeVar

import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from app import processes
from app.observability import metrics_archive
from app.observability.metrics_archive import collect, compact
from app.server.run_dirs import clean_metrics_dir

DEAD = 5_000_000
"""Dead workers' pids from here: over Linux's PID_MAX_LIMIT (2**22), so no process has one."""
ROUTES = ("/predict", "/health", "/v2/models/{name}/infer")
BOUNDS = ("0.001", "0.01", "0.1", "+Inf")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
P = ParamSpec("P")
R = TypeVar("R")


class MmapFile(Protocol):
    """A prometheus_client MmapedDict as the tests write one (its methods are unannotated)."""

    def write_value(self, key: str, value: float, timestamp: float) -> None: ...

    def close(self) -> None: ...


def mmap_file(path: Path) -> MmapFile:
    """The metrics file at `path`, opened (made if missing) as a process of the service does."""
    opened: MmapFile = MmapedDict(str(path))  # type: ignore[no-untyped-call]  # unannotated upstream
    return opened


def write_worker(directory: Path, pid: int, rng: random.Random) -> None:
    """A worker's counter and histogram files, as prometheus_client writes them: integral
    counts, and float sums of seconds over several magnitudes (their rounding is the hard part)."""
    counters = mmap_file(directory / f"counter_{pid}.db")
    histograms = mmap_file(directory / f"histogram_{pid}.db")
    for route in ROUTES:
        name = "http_requests"
        key = mmap_key(name, f"{name}_total", ["route"], [route], "answers")
        counters.write_value(key, float(rng.randint(0, 10_000)), 0.0)
        name = "http_request_duration_seconds"
        for bound in BOUNDS:
            key = mmap_key(name, f"{name}_bucket", ["route", "le"], [route, bound], "time")
            histograms.write_value(key, float(rng.randint(0, 1000)), 0.0)
        key = mmap_key(name, f"{name}_sum", ["route"], [route], "time")
        histograms.write_value(key, rng.random() * 10.0 ** rng.randint(-4, 4), 0.0)
    counters.close()
    histograms.close()


def scraped(directory: Path) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in collect(directory)
        for sample in family.samples
    }


def files(directory: Path) -> set[str]:
    return {path.name for path in directory.glob("*.db")}


def test_a_scrape_reads_the_same_values_to_the_last_bit_after_each_compaction(
    tmp_path: Path,
) -> None:
    """Dead workers' files, folded into the archives in rounds beside a live worker's: every
    sample as before, bit for bit. Added with `+=` into an archive that prometheus_client's
    collector reads, 32 of 400 sums differed in the last bit, 14 of them lower."""
    rng = random.Random(7)
    live = os.getpid()
    write_worker(tmp_path, live, rng)
    pids = iter(range(DEAD, DEAD + 60))
    for round_ in range(4):
        for _ in range(15):
            write_worker(tmp_path, next(pids), rng)
        before = scraped(tmp_path)
        assert compact(tmp_path) == 30
        assert scraped(tmp_path) == before, f"round {round_}"
        assert files(tmp_path) == {
            f"counter_{live}.db",
            f"histogram_{live}.db",
            "counter_archive.db",
            "histogram_archive.db",
        }
    assert compact(tmp_path) == 0


def test_the_scrape_builds_the_families_prometheus_clients_collector_builds(
    tmp_path: Path,
) -> None:
    """Names, types, labels and cumulative buckets as MultiProcessCollector gives them (its
    sums differ from the exact ones by an ulp at most); gauges are its own."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    rng = random.Random(3)
    for pid in range(DEAD, DEAD + 5):
        write_worker(tmp_path, pid, rng)
    gauges = mmap_file(tmp_path / f"gauge_livesum_{os.getpid()}.db")
    gauges.write_value(mmap_key("model_workers", "model_workers", [], [], "live"), 1.0, 0.0)
    gauges.close()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(tmp_path))  # type: ignore[no-untyped-call]  # unannotated upstream
    theirs = {
        (family.name, family.type, sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
    }
    ours = {
        (family.name, family.type, sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in collect(tmp_path)
        for sample in family.samples
    }
    assert ours.keys() == theirs.keys()
    assert all(ours[key] == pytest.approx(theirs[key], rel=1e-15) for key in ours)


def test_scrapes_during_compactions_see_every_count_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One thread scrapes in a loop while workers die one by one and each death is compacted,
    as gunicorn's master does, and a live worker's counter grows: every dead worker's count is
    in every scrape exactly once, and the live counter never goes back nor past its value."""
    rng = random.Random(11)
    pids = list(range(DEAD, DEAD + 40))
    for pid in pids:
        write_worker(tmp_path, pid, rng)
    expected = scraped(tmp_path)
    alive = set(pids)
    monkeypatch.setattr(processes, "exists", lambda pid: pid in alive or pid == os.getpid())
    ticks_key = mmap_key("ticks", "ticks_total", [], [], "live")
    ticks = mmap_file(tmp_path / f"counter_{os.getpid()}.db")
    ticks_now = 0.0
    ticks.write_value(ticks_key, ticks_now, 0.0)
    ticks_sample = ("ticks_total", ())
    problems: list[str] = []
    scrapes = 0
    done = threading.Event()

    def scrape_in_a_loop() -> None:
        nonlocal scrapes
        last = 0.0
        while not done.is_set():
            try:
                samples = scraped(tmp_path)
            except Exception as error:  # a file gone between the listing and the read
                problems.append(repr(error))
                continue
            scrapes += 1
            ticks_seen = samples.pop(ticks_sample)
            if not last <= ticks_seen <= ticks_now:
                problems.append(f"ticks {last} then {ticks_seen} (at most {ticks_now})")
            last = ticks_seen
            if samples != expected:
                wrong = [k for k in expected if samples.get(k) != expected[k]]
                problems.append(f"{len(wrong)} samples off, e.g. {wrong[0]}")

    scraper = threading.Thread(target=scrape_in_a_loop)
    scraper.start()
    try:
        for pid in pids:
            ticks_now += 1
            ticks.write_value(ticks_key, ticks_now, 0.0)
            alive.discard(pid)
            while True:
                try:
                    assert compact(tmp_path) == 2
                    break
                except BlockingIOError:  # scrapes held the lock: the master tries again later
                    continue
    finally:
        done.set()
        scraper.join()
        ticks.close()
    assert not problems, problems[:5]
    assert scrapes >= 40
    assert files(tmp_path) == {
        f"counter_{os.getpid()}.db",
        "counter_archive.db",
        "histogram_archive.db",
    }


class Killed(BaseException):
    """The master killed at this point: nothing after it runs, no handler either."""


def _compact_killed(directory: Path, killed_at: float) -> int:
    """Compacts, killed before its rename or unlink number `killed_at` (from 0); returns how
    many renames and unlinks it made."""
    calls = 0
    real_replace, real_unlink = os.replace, os.unlink

    def counted(real: Callable[P, R]) -> Callable[P, R]:
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            nonlocal calls
            if calls >= killed_at:
                raise Killed
            calls += 1
            return real(*args, **kwargs)

        return call

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "replace", counted(real_replace))
        patch.setattr(os, "unlink", counted(real_unlink))
        with contextlib.suppress(Killed):
            compact(directory)
    return calls


def _crash_setup(directory: Path) -> Samples:
    rng = random.Random(5)
    for pid in range(DEAD, DEAD + 3):  # already in the archives
        write_worker(directory, pid, rng)
    compact(directory)
    for pid in range(DEAD + 3, DEAD + 6):  # dead since
        write_worker(directory, pid, rng)
    write_worker(directory, os.getpid(), rng)
    return scraped(directory)


STEPS = 12
"""The renames and unlinks of one compaction of _crash_setup's files: the two temporary
archives cleared, the journal and the two archives renamed into place, six dead files and the
journal removed."""


def test_the_crash_tests_kill_the_compaction_at_each_of_its_steps(tmp_path: Path) -> None:
    _crash_setup(tmp_path)
    assert _compact_killed(tmp_path, killed_at=float("inf")) == STEPS


@pytest.mark.parametrize("killed_at", range(STEPS))
def test_a_compaction_killed_at_any_step_neither_loses_nor_doubles_a_count(
    tmp_path: Path, killed_at: int
) -> None:
    """Killed before each of its renames and unlinks: the scrapes until the next compaction
    and that compaction count every worker once. Without the journal, killed between an
    archive's rename and the dead files' removal, the scrapes counted those workers twice, and
    the next compaction folded them in again."""
    expected = _crash_setup(tmp_path)
    _compact_killed(tmp_path, killed_at)
    assert scraped(tmp_path) == expected
    compact(tmp_path)
    assert scraped(tmp_path) == expected
    assert files(tmp_path) == {
        f"counter_{os.getpid()}.db",
        f"histogram_{os.getpid()}.db",
        "counter_archive.db",
        "histogram_archive.db",
    }
    assert not metrics_archive.leftovers(tmp_path)


@pytest.mark.parametrize("killed_at", range(STEPS))
def test_a_master_starting_afresh_clears_what_a_killed_compaction_left(
    tmp_path: Path, killed_at: int
) -> None:
    """A directory given from outside, after a master killed mid-compaction: the next master
    starts it empty, the journal too (else its first compaction took a new worker whose pid a
    dead one had had for a folded one: pids come round, after 32768 of them here)."""
    _crash_setup(tmp_path)
    _compact_killed(tmp_path, killed_at)
    clean_metrics_dir(tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["archive.lock"]
    assert scraped(tmp_path) == {}


def test_a_live_process_files_are_never_archived(tmp_path: Path) -> None:
    """This process is alive: its files stay, whatever their age."""
    write_worker(tmp_path, os.getpid(), random.Random(1))
    before = scraped(tmp_path)
    assert compact(tmp_path) == 0
    assert files(tmp_path) == {f"counter_{os.getpid()}.db", f"histogram_{os.getpid()}.db"}
    assert scraped(tmp_path) == before


def test_a_compaction_on_a_full_disk_raises_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The master writes the archives: with their blocks sparse, a full disk was its SIGBUS
    (app.observability.metric_files). Now an OSError, which gunicorn.conf.py's child_exit logs;
    the dead workers' files stay, counted as they were, and the next compaction folds them."""
    import errno

    write_worker(tmp_path, DEAD, random.Random(3))
    before, scrape = files(tmp_path), scraped(tmp_path)

    def full(descriptor: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as refused:
        refused.setattr(os, "posix_fallocate", full)
        with pytest.raises(OSError, match="No space left"):
            compact(tmp_path)
    assert files(tmp_path) == before
    assert metrics_archive.leftovers(tmp_path) == []
    assert scraped(tmp_path) == scrape
    assert compact(tmp_path) == 2
    assert scraped(tmp_path) == scrape


def test_a_compaction_waits_for_the_scrapes_then_gives_up_changing_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scrape holding the lock past LOCK_WAIT (a worker stopped mid-scrape, say) must not
    hang gunicorn's master, which would then not kill that worker either."""
    import fcntl

    monkeypatch.setattr(metrics_archive, "LOCK_WAIT", 0.05)
    write_worker(tmp_path, DEAD, random.Random(2))
    before = files(tmp_path)
    with metrics_archive._locked(tmp_path, fcntl.LOCK_SH), pytest.raises(BlockingIOError):
        compact(tmp_path)
    assert files(tmp_path) == before
    assert compact(tmp_path) == 2


def test_a_scrape_leaves_out_the_live_gauges_of_a_process_that_is_gone(tmp_path: Path) -> None:
    """A worker whose master was killed (a binary upgrade's old one) is reaped by no master, so
    nothing removes its `livesum` file: in the directory the new master shares it was counted in
    model_workers for good. Another mode's gauge (not by process) is kept."""
    key = mmap_key("model_workers", "model_workers", ["version"], ["abc"], "live")
    for pid in (os.getpid(), DEAD):
        gauges = mmap_file(tmp_path / f"gauge_livesum_{pid}.db")
        gauges.write_value(key, 1.0, 0.0)
        gauges.close()
    kept = mmap_file(tmp_path / f"gauge_max_{DEAD}.db")
    kept.write_value(mmap_key("peak", "peak", [], [], "max"), 7.0, 0.0)
    kept.close()
    assert scraped(tmp_path)[("model_workers", (("version", "abc"),))] == 1.0
    assert scraped(tmp_path)[("peak", ())] == 7.0


@pytest.mark.parametrize("kind", ["counter", "histogram", "gauge_livesum", "gauge_all"])
def test_a_scrape_skips_a_file_a_starting_process_has_made_but_not_sized(
    tmp_path: Path, kind: str
) -> None:
    """prometheus_client makes a process's file empty, then sizes it: a scrape between the two
    (a reload's new workers making theirs) read no header, and /metrics answered 500 (once in a
    full test run, a gRPC reload test's scrape). Nothing is in such a file yet."""
    write_worker(tmp_path, DEAD, random.Random(3))
    before = scraped(tmp_path)
    (tmp_path / f"{kind}_{os.getpid()}.db").touch()
    assert scraped(tmp_path) == before


def test_a_compaction_folds_the_unsized_file_of_a_process_killed_as_it_made_it(
    tmp_path: Path,
) -> None:
    write_worker(tmp_path, DEAD, random.Random(5))
    before = scraped(tmp_path)
    (tmp_path / f"histogram_{DEAD + 1}.db").touch()
    assert compact(tmp_path) == 3
    assert files(tmp_path) == {"counter_archive.db", "histogram_archive.db"}
    assert scraped(tmp_path) == before

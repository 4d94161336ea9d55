"""app.server.forks: a fork the system refuses costs that fork, never the master; on gunicorn's
own Arbiter code paths, and on the real server at a real process limit (a pids cgroup)."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import resource
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx2 as httpx
import pytest
from gunicorn.arbiter import Arbiter
from gunicorn.config import Config

from app import descriptors
from app.server import forks
from app.server.crash_loop import LONGEST
from app.server.forks import guard_forks
from benchmarks.chaos import wait_for
from tests.test_grpc_server import serving_grpc
from tests.test_server import (
    SHUTDOWN_TIMEOUT,
    WORKERS,
    spawn,
    stop,
    wait_until_ready,
    workers_of,
)


class Log:
    """gunicorn's logger as the arbiter calls it: the lines, by level."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __getattr__(self, level: str) -> Any:
        def line(message: str, *args: object, **kwargs: object) -> None:
            self.lines.append((level, message % args if args else message))

        return line

    def said(self) -> list[tuple[str, str]]:
        """The lines above debug (gunicorn's own worker count is one at debug)."""
        return [(level, text) for level, text in self.lines if level != "debug"]


def arbiter(workers: int = 2) -> Any:
    """gunicorn's Arbiter with only the state its worker management reads (no sockets, no app):
    its own manage_workers, spawn_workers and handle_usr2 run."""
    made: Any = Arbiter.__new__(Arbiter)
    made.WORKERS = {}
    made.LISTENERS = []
    made._num_workers = workers  # behind gunicorn's num_workers property
    made.cfg = SimpleNamespace(enable_backlog_metric=False)
    made.log = Log()
    made._last_logged_active_worker_count = None
    return made


def refused(*args: object) -> Any:
    raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))


def fork_in_place(master: Any) -> None:
    """`master`'s spawn_worker registers a new worker (pids 1000, 1001, …) without forking."""
    pids = iter(range(1000, 2000))

    def spawn_worker() -> int:
        pid = next(pids)
        master.WORKERS[pid] = SimpleNamespace(age=pid)
        return pid

    master.spawn_worker = spawn_worker


def test_a_refused_fork_is_logged_once_and_tried_again_by_gunicorns_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(random, "random", lambda: 0.0)  # spawn_workers' pause between forks
    master = arbiter()
    allowed = 1  # forks the system lets through

    def spawn_worker() -> int:
        nonlocal allowed
        if not allowed:
            refused()
        allowed -= 1
        pid = 1000 + len(master.WORKERS)
        master.WORKERS[pid] = SimpleNamespace(age=pid)
        return pid

    master.spawn_worker = spawn_worker
    guard_forks(master)
    master.manage_workers()  # gunicorn's: raised out of its main loop, which stopped the master
    master.manage_workers()
    assert sorted(master.WORKERS) == [1000]
    assert master.log.said() == [
        (
            "error",
            "worker not started: [Errno 11] Resource temporarily unavailable; 1 of 2 workers "
            "serve, started again when the system lets it (a process limit: a container's "
            "pids.max, a unit's TasksMax?)",
        )
    ]
    allowed = 1
    master.manage_workers()
    assert sorted(master.WORKERS) == [1000, 1001]
    assert master.log.said()[1:] == [("warning", "worker started again, after 2 refused tries")]


def test_a_descriptor_limit_too_low_for_a_worker_forks_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each worker forked under it crashed at boot, and gunicorn forked the next at once."""
    monkeypatch.setattr(random, "random", lambda: 0.0)
    monkeypatch.setattr(descriptors, "limit", lambda: 24)
    master = arbiter()
    forked = []
    master.spawn_worker = lambda: forked.append(1)
    guard_forks(master)
    master.manage_workers()
    assert forked == []
    assert master.log.said() == [
        (
            "error",
            "worker not started: [Errno 24] a descriptor limit (ulimit -n, a container's "
            "nofile) of 24 leaves a worker too few: it needs 64; 0 of 2 workers serve, started "
            "again when the system lets it",
        )
    ]


def test_a_refused_sigusr2_upgrade_leaves_the_master_serving() -> None:
    master = arbiter()
    master.reexec = refused
    guard_forks(master)
    master.handle_usr2()  # gunicorn's
    assert master.log.said() == [
        (
            "error",
            "SIGUSR2 upgrade not started: [Errno 11] Resource temporarily unavailable; this "
            "master serves on",
        )
    ]


def reloading_arbiter(
    monkeypatch: pytest.MonkeyPatch, forks_allowed: int, graceful_timeout: int
) -> tuple[Any, list[int], list[int]]:
    """An arbiter of two old workers that gunicorn's own reload can run on (no app, no sockets,
    no signals sent); the forks the system lets through, the successors the hand-off is told,
    and the workers told to stop."""
    monkeypatch.setattr(random, "random", lambda: 0.0)
    monkeypatch.setattr("gunicorn.util._setproctitle", lambda title: None)
    master = arbiter()
    master.cfg = Config()
    master.cfg.set("workers", 2)
    master.cfg.set("graceful_timeout", graceful_timeout)
    master.app = SimpleNamespace(reload=lambda: None)
    master.setup = lambda app: None  # gunicorn's re-reads the configuration file
    master.log.reopen_files = lambda: None
    master.pidfile = None
    master.proc_name = "test"
    master._stats = {"reloads": 0}
    master.WORKERS = {pid: SimpleNamespace(age=pid) for pid in (1, 2)}
    master.worker_age = 2
    stopped: list[int] = []
    master.kill_worker = lambda pid, sig: stopped.append(pid)
    master.reap_workers = lambda: None  # the test process's own children are not its workers

    def spawn_worker() -> int:
        nonlocal forks_allowed
        if not forks_allowed:
            refused()
        forks_allowed -= 1
        pid: int = master.worker_age + 1
        master.worker_age = pid
        master.WORKERS[pid] = SimpleNamespace(age=pid)
        return pid

    master.spawn_worker = spawn_worker
    told: list[int] = []
    master.reloaded = []
    guard_forks(master, told.append, master.reloaded.append)
    return master, told, stopped


def test_a_sighup_whose_workers_are_all_refused_keeps_the_old_ones_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """gunicorn's reload waited graceful_timeout for old workers it had not told to stop,
    handling no signal: a SIGTERM sent then waited 20 s. And the old workers, once told to
    stop, waited their hand-off bound for successors that never came."""
    master, told, stopped = reloading_arbiter(monkeypatch, forks_allowed=0, graceful_timeout=20)
    started = time.monotonic()
    master.reload()  # gunicorn's
    assert time.monotonic() - started < 1.0
    assert sorted(master.WORKERS) == [1, 2]
    assert stopped == []
    assert told == [1, 0]  # before any old worker could be told to stop
    assert master.reloaded == [False]  # counted as refused
    assert master.cfg.graceful_timeout == 20  # for the shutdown, and the next reload
    assert master.log.said()[-1] == (
        "error",
        "SIGHUP: no new worker started; the 2 old workers serve on, with the models they loaded "
        "(SIGHUP again once the system lets workers start)",
    )


def test_a_sighup_with_some_workers_started_waits_for_the_old_ones_as_gunicorn_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One new worker of two: gunicorn stops one old worker and waits, so that its main loop does
    not tell that worker to stop a second time; the hand-off waits for the one started only."""
    master, told, stopped = reloading_arbiter(monkeypatch, forks_allowed=1, graceful_timeout=1)
    started = time.monotonic()
    master.reload()
    assert 1.0 <= time.monotonic() - started < 2.0
    assert stopped == [1]
    assert told == [1]
    assert master.reloaded == [True]
    assert not [line for line in master.log.said() if line[1].startswith("SIGHUP")]


def test_workers_that_die_as_they_start_are_forked_again_after_a_growing_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """gunicorn forked each in place of the last as soon as it had reaped it: at a process limit
    that admits the fork but not a worker's threads, 37 boots in 10 s took the cores from the
    worker serving. Forks of gunicorn's loop, run once a second as its signal wait does."""
    monkeypatch.setattr(random, "random", lambda: 0.0)
    now = 0.0
    monkeypatch.setattr(forks, "time", SimpleNamespace(monotonic=lambda: now))
    master = arbiter()
    forked_at: list[float] = []

    def spawn_worker() -> int:
        pid = 1000 + len(forked_at)
        forked_at.append(now)
        master.WORKERS[pid] = SimpleNamespace(age=pid)
        return pid

    master.spawn_worker = spawn_worker
    guard_forks(master)
    master.manage_workers()
    for second in range(1, 21):
        now = float(second)
        for pid in [pid for pid in master.WORKERS if pid != 1000]:
            del master.WORKERS[pid]  # died starting (gunicorn's reap_workers)
        master.manage_workers()
    assert forked_at == [0.0, 0.0, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert master.log.said()[-1] == (
        "error",
        "worker 1006 died 1.0 s after its fork, 6 in a row: workers fail to start; the next one "
        "is forked 16 s after the last (the others serve)",
    )
    assert len(master.log.said()) == 5  # one line a death that earned a pause


def test_workers_the_master_stops_earn_no_pause_and_a_sighup_forks_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Young workers a SIGHUP storm stops are no failures to start; and the operator's SIGHUP
    during a pause forks its workers at once, with the count started again."""
    now = 0.0
    monkeypatch.setattr(forks, "time", SimpleNamespace(monotonic=lambda: now))
    master, _, _ = reloading_arbiter(monkeypatch, forks_allowed=100, graceful_timeout=0)

    def dies(pid: int | None, told: bool) -> None:
        nonlocal now
        assert pid is not None, "the fork was held back"
        if told:
            master.kill_worker(pid, signal.SIGTERM)  # gunicorn's own calls go through it
        del master.WORKERS[pid]  # reaped
        now += 0.5

    for _ in range(3):
        dies(master.spawn_worker(), told=True)
    for _ in range(2):
        dies(master.spawn_worker(), told=False)
    assert master.spawn_worker() is None  # the second unbidden death in a row: a pause
    master.reload()  # gunicorn's
    assert master.reloaded == [True]
    newest = max(master.WORKERS)
    dies(newest, told=False)
    assert master.spawn_worker() is not None  # one death since the SIGHUP: no pause
    first, second = master.spawn_worker(), master.spawn_worker()
    del master.WORKERS[first], master.WORKERS[second]  # unbidden, seen by the SIGHUP's forks
    master.reload()
    assert master.reloaded == [True, True]  # its own forks are never held back


def test_workers_lost_unbidden_or_hung_are_told_and_those_the_master_stops_are_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker killed (SIGKILL, an OOM kill) or hung was replaced without a trace in /metrics:
    in a pod that stays ready, no alert could see a crash loop (found on a real Prometheus,
    reports/reliability.md section 22). Each is told once, as the fork that replaces it runs;
    the workers the master stops (a reload, a stop) are not."""
    now = 0.0
    monkeypatch.setattr(forks, "time", SimpleNamespace(monotonic=lambda: now))
    master = arbiter()
    sent: list[tuple[int, int]] = []
    master.kill_worker = lambda pid, sig: sent.append((pid, sig))

    fork_in_place(master)
    lost: list[str] = []
    guard_forks(master, lost=lost.append)
    master.manage_workers()
    first, second = sorted(master.WORKERS)
    now = 20.0  # past crash_loop.EARLY: no pause for what follows
    master.kill_worker(first, signal.SIGTERM)  # told to stop: a reload's old worker
    del master.WORKERS[first]
    master.manage_workers()
    assert lost == []
    del master.WORKERS[second]  # died unbidden (SIGKILL), reaped by gunicorn
    master.manage_workers()
    assert lost == ["crashed"]
    hung = max(master.WORKERS)
    master.kill_worker(hung, signal.SIGABRT)  # gunicorn's murder_workers, after `timeout` s
    assert lost == ["crashed", "timeout"]
    del master.WORKERS[hung]
    now = 40.0
    master.manage_workers()
    assert lost == ["crashed", "timeout"]  # its death is the timeout's, not counted again
    assert len(master.WORKERS) == 2


def test_workers_that_left_at_their_request_cap_are_neither_lost_nor_held_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """gunicorn's --max-requests: a worker leaves unasked at its cap, and every recycle counted as
    a crash (`LatamDelayWorkersLost`), one under crash_loop.EARLY as a failure to start (the
    next fork paused); its mark (app.server.recycle) says it was asked."""
    now = 0.0
    monkeypatch.setattr(forks, "time", SimpleNamespace(monotonic=lambda: now))
    master = arbiter()
    fork_in_place(master)
    lost: list[str] = []
    marked: list[int] = []
    guard_forks(master, lost=lost.append, recycled=lambda: [marked.pop()] if marked else [])
    master.manage_workers()
    for _ in range(4):  # each a second after its fork: a crash loop, were they crashes
        now += 1.0
        recycled = min(master.WORKERS)
        marked.append(recycled)
        del master.WORKERS[recycled]
        master.manage_workers()
        assert len(master.WORKERS) == 2  # forked at once, no pause
    assert lost == []


def test_errors_other_than_the_systems_are_raised_as_before() -> None:
    master = arbiter()

    def broken() -> int:
        raise RuntimeError("a bug in a hook")

    master.spawn_worker = broken
    guard_forks(master)
    with pytest.raises(RuntimeError, match="a bug in a hook"):
        master.manage_workers()


@contextlib.contextmanager
def pids_cgroup(tmp_path: Path) -> Iterator[Path]:
    """A pids cgroup of its own (v1's pids hierarchy, or v2 with pids delegated), removed after."""
    for root in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        group = root / f"latam-delay-test-{os.getpid()}-{tmp_path.name}"
        try:
            group.mkdir()
        except OSError:
            continue
        if (group / "pids.max").exists():
            break
        group.rmdir()
    else:
        pytest.skip("no pids cgroup can be made here (needs root and a pids controller)")
    try:
        yield group
    finally:
        (group / "pids.max").write_text("max")
        wait_for(lambda: not (group / "cgroup.procs").read_text().split(), timeout=30)
        group.rmdir()


@pytest.mark.server
def test_the_real_server_serves_through_a_process_limit(tmp_path: Path) -> None:
    """At the pids limit, a worker killed could not be replaced: gunicorn's master logged
    `Unhandled exception in main loop` and stopped the worker still serving: the whole server
    gone. Now it serves on with the other worker, refuses SIGUSR2 with one line, and starts the
    missing worker once the limit is lifted."""
    with pids_cgroup(tmp_path) as group:
        server = spawn(tmp_path / "run")
        try:
            wait_until_ready(server)
            (group / "cgroup.procs").write_text(str(server.process.pid))
            (group / "pids.max").write_text((group / "pids.current").read_text())
            os.kill(min(workers_of(server)), signal.SIGKILL)
            assert wait_for(lambda: "worker not started" in server.log(), timeout=10), server.log()
            with httpx.Client(base_url=server.url, timeout=10) as client:
                for _ in range(20):
                    assert client.get("/v2/health/ready").status_code == 200
            server.process.send_signal(signal.SIGUSR2)
            assert wait_for(lambda: "SIGUSR2 upgrade not started" in server.log(), timeout=10)
            time.sleep(1.5)  # gunicorn's loop tries the fork again meanwhile
            assert server.process.poll() is None, server.log()
            assert len(workers_of(server)) == WORKERS - 1
            (group / "pids.max").write_text("max")
            wait_until_ready(server, startups=WORKERS + 1)
            assert len(workers_of(server)) == WORKERS
            log = server.log()
        finally:
            stop(server)
    assert "Unhandled exception in main loop" not in log, log
    assert "worker started again, after" in log, log


@pytest.mark.server
def test_the_real_server_serves_through_a_descriptor_limit_too_low_for_a_worker(
    tmp_path: Path,
) -> None:
    """The master's descriptor limit lowered under a worker's needs (`prlimit --nofile=24:24`),
    then a worker killed: each worker forked in its place crashed at boot, on EMFILE out of
    uvloop (a traceback each) or in grpcio (SIGSEGV), and gunicorn forked the next at once: 40
    boots in 3 s. Now none is forked, one line says why, the other worker serves, and a SIGHUP
    leaves the old workers serving."""
    server = spawn(tmp_path / "run")
    try:
        wait_until_ready(server)
        resource.prlimit(server.process.pid, resource.RLIMIT_NOFILE, (24, 24))
        os.kill(min(workers_of(server)), signal.SIGKILL)
        assert wait_for(lambda: "worker not started" in server.log(), timeout=10), server.log()
        server.process.send_signal(signal.SIGHUP)
        time.sleep(2.0)  # a crash loop would show by now
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for _ in range(20):
                assert client.get("/v2/health/ready").status_code == 200
        assert server.process.poll() is None, server.log()
        assert len(workers_of(server)) == WORKERS - 1
        log = server.log()
    finally:
        stop(server)
    assert log.count("Booting worker") == WORKERS, log
    assert log.count("worker not started") == 1, log
    assert "leaves a worker too few: it needs 64" in log, log
    assert "Traceback" not in log, log


@pytest.mark.server
def test_the_real_server_stops_at_once_after_a_sighup_whose_workers_are_refused(
    tmp_path: Path,
) -> None:
    """gunicorn's reload held the master for graceful_timeout (20 s), handling no signal, and the
    old workers then waited their hand-off bound for successors never forked: a SIGTERM sent
    1 s after such a SIGHUP stopped the server 19.5 s later (28.7 s with gRPC). And /metrics
    counted the reload as applied, though no worker served its models."""
    server = spawn(tmp_path / "run")
    try:
        wait_until_ready(server)
        resource.prlimit(server.process.pid, resource.RLIMIT_NOFILE, (24, 24))
        server.process.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.get("/v2/health/ready").status_code == 200
            metrics = client.get("/metrics").text
        sent = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=SHUTDOWN_TIMEOUT)
        stopped_in = time.monotonic() - sent
        log = server.log()
    finally:
        stop(server)
    assert stopped_in < 8.0, log
    assert "SIGHUP: no new worker started; the 2 old workers serve on" in log, log
    assert server.process.returncode == 0, log
    # the new models loaded, but no worker serves them: the reload alert must see it
    assert "model_last_reload_successful 0.0" in metrics, metrics
    assert 'model_reloads_total{outcome="refused"} 1.0' in metrics, metrics


@pytest.mark.server
def test_the_real_server_counts_a_worker_killed_in_its_metrics(tmp_path: Path) -> None:
    """A SIGKILLed worker, replaced by the master, is one `workers_lost_total{cause="crashed"}`
    (shown from zero before it, so that `increase()` sees it); the workers a SIGHUP replaces
    are not lost."""
    server = spawn(tmp_path / "run")

    def booted(count: int) -> Callable[[], bool]:
        return lambda: server.log().count("Booting worker") == count

    try:
        wait_until_ready(server)
        with httpx.Client(base_url=server.url, timeout=10) as client:
            before = client.get("/metrics").text
            server.process.send_signal(signal.SIGHUP)
            assert wait_for(booted(2 * WORKERS), timeout=30), server.log()
            assert wait_for(lambda: len(workers_of(server)) == WORKERS, timeout=30)
            os.kill(min(workers_of(server)), signal.SIGKILL)
            assert wait_for(booted(2 * WORKERS + 1), timeout=30), server.log()
            assert wait_for(lambda: len(workers_of(server)) == WORKERS, timeout=30)
            after = client.get("/metrics").text
    finally:
        stop(server)
    assert 'workers_lost_total{cause="crashed"} 0.0' in before, before
    assert 'workers_lost_total{cause="timeout"} 0.0' in before, before
    assert 'workers_lost_total{cause="crashed"} 1.0' in after, after
    assert 'workers_lost_total{cause="timeout"} 0.0' in after, after


@pytest.mark.server
def test_the_real_server_counts_no_worker_recycled_at_its_request_cap_as_lost(
    tmp_path: Path,
) -> None:
    server = spawn(tmp_path / "run", WORKERS="1", GUNICORN_CMD_ARGS="--max-requests 3")
    try:
        wait_until_ready(server, startups=1)
        with httpx.Client(base_url=server.url, timeout=10) as client:

            def recycled_twice() -> bool:
                client.get("/health")  # each worker takes a few past its cap before it stops
                return server.log().count("Booting worker") >= 3

            assert wait_for(recycled_twice, timeout=30), server.log()
            assert wait_for(lambda: len(workers_of(server)) == 1, timeout=30)
            metrics = client.get("/metrics").text
    finally:
        stop(server)
    assert 'workers_lost_total{cause="crashed"} 0.0' in metrics, metrics
    assert "died" not in server.log()  # no crash-loop pause either


@pytest.mark.server
def test_the_real_server_forks_a_worker_that_dies_starting_after_a_growing_pause(
    tmp_path: Path,
) -> None:
    """At a process limit that admits a worker's fork but not its threads (grpcio's: SIGSEGV),
    each worker forked in place of one killed died starting, and gunicorn forked the next at
    once: 37 boots in 10 s, while the worker serving lost a third of its requests a second."""
    with pids_cgroup(tmp_path) as group, serving_grpc(tmp_path / "run") as running:
        server = running.http
        (group / "cgroup.procs").write_text(str(server.process.pid))  # its forks follow it
        (group / "pids.max").write_text(str(int((group / "pids.current").read_text()) + 2))
        os.kill(min(workers_of(server)), signal.SIGKILL)
        time.sleep(8.0)
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.get("/v2/health/ready").status_code == 200
        boots = server.log().count("Booting worker") - WORKERS
        assert 3 <= boots <= 6, server.log()  # forked at about 0, 0.4, 1.4, 3.4 and 7.4 s
        assert "workers fail to start" in server.log()
        (group / "pids.max").write_text("max")
        assert wait_for(lambda: server.log().count("gRPC serving on") > WORKERS, timeout=LONGEST), (
            server.log()
        )
        assert len(workers_of(server)) == WORKERS
        assert server.process.poll() is None

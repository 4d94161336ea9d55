"""app.server.run_dirs: a server run's temporary directories are named after their master, a
dead master's are removed by the next start and a live one's never, and a binary upgrade's two
masters share the metrics directory until the last of them exits."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from app.server.run_dirs import (
    RUN_DIR_PATTERN,
    clean_metrics_dir,
    clean_stale_runs,
    held_by_another,
    hold,
    leave_metrics_dir,
    mark_master,
    other_masters,
    private_directory,
    release,
    run_dir,
    shared_metrics_dir,
    upgraded_from,
)
from tests.test_server import FULL_FLIGHTS, spawn, stop, wait_until_ready, workers_of

TMPFILES = shutil.which("systemd-tmpfiles")


def test_stale_run_directories_of_dead_masters_are_removed(tmp_path: Path) -> None:
    """One named after this very pid too: the master has not made its own yet, so it is a dead
    master's with the same pid (in a container every master is pid 1)."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = [tmp_path / f"latam-delay-{kind}-{dead.pid}-x1_y" for kind in ("run", "metrics")]
    stale.append(tmp_path / f"latam-delay-run-{os.getpid()}-pid1")
    live = tmp_path / f"latam-delay-run-{os.getppid()}-abc"
    other = [tmp_path / "latam-delay-run-abc123", tmp_path / "unrelated-1-x"]
    for path in [*stale, live, *other]:
        path.mkdir()
        (path / "file").write_text("x")
    assert sorted(clean_stale_runs(tmp_path)) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted([live, *other])


def dead_pid() -> int:
    dead = subprocess.Popen(["true"])
    dead.wait()
    return dead.pid


def test_a_dead_masters_metrics_directory_a_live_master_shares_is_kept(tmp_path: Path) -> None:
    """After a binary upgrade the new master writes in the old one's directory, named after the
    old master's pid: a start meanwhile (another server, same TMPDIR) must not take it for a
    dead run's, nor one marked by this very master (pid 1 in a container: a dead run's)."""
    old = dead_pid()
    shared = tmp_path / f"latam-delay-metrics-{old}-abc"
    stale = tmp_path / f"latam-delay-metrics-{old}-def"
    own_mark = tmp_path / f"latam-delay-metrics-{old}-ghi"
    for path in (shared, stale, own_mark):
        path.mkdir()
    (shared / f"master-{os.getppid()}").touch()
    (stale / f"master-{old}").touch()
    (own_mark / f"master-{os.getpid()}").touch()
    assert sorted(clean_stale_runs(tmp_path)) == sorted([stale, own_mark])
    assert list(tmp_path.iterdir()) == [shared]


def test_an_upgraded_master_finds_the_metrics_directory_its_predecessor_writes_in(
    tmp_path: Path,
) -> None:
    """By the predecessor's mark, not by its name: after two upgrades the directory is named
    after the first master, and the second writes there too."""
    first = tmp_path / "latam-delay-metrics-1-abc"
    first.mkdir()
    (first / "master-1").touch()
    (first / f"master-{os.getppid()}").touch()
    (tmp_path / "latam-delay-metrics-2-def").mkdir()
    assert shared_metrics_dir(os.getppid(), tmp_path) == first
    assert shared_metrics_dir(dead_pid(), tmp_path) is None
    assert upgraded_from({"GUNICORN_PID": str(os.getppid())}) == os.getppid()
    assert upgraded_from({"GUNICORN_PID": str(os.getpid())}) is None
    assert upgraded_from({}) is None


def test_a_master_leaves_the_metrics_directory_to_the_other_generation(tmp_path: Path) -> None:
    """Kept while another live master's workers write there (the old master exiting once the new
    one serves, or the new one stopped to roll the upgrade back); removed by the last."""
    metrics = tmp_path / "latam-delay-metrics-1-abc"
    metrics.mkdir()
    mark_master(metrics)
    (metrics / f"master-{os.getppid()}").touch()
    (metrics / f"master-{dead_pid()}").touch()
    assert not leave_metrics_dir(metrics)
    assert metrics.is_dir()
    assert not (metrics / f"master-{os.getpid()}").exists()
    (metrics / f"master-{os.getppid()}").unlink()
    mark_master(metrics)
    assert leave_metrics_dir(metrics)
    assert not metrics.exists()


def test_a_metrics_directory_from_outside_loses_its_prometheus_files_only(tmp_path: Path) -> None:
    """What gunicorn.conf.py does at start to a PROMETHEUS_MULTIPROC_DIR given from outside (a
    real server: tests/test_server.py): the `*.db` files prometheus_client's collector reads go,
    whatever else the operator keeps there stays."""
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    stale = [
        metrics / name
        for name in (
            "counter_11.db",
            "gauge_livesum_11.db",
            "histogram_12.db",
            "archive.journal",  # a compaction killed half-way: app.observability.metrics_archive
            "archive.journal.tmp",
            "counter_archive.db.tmp",
        )
    ]
    for path in stale:
        path.write_bytes(b"\0" * 8)
    kept = [metrics / "notes.txt", metrics / "backup.db.tar", metrics / "notes.tmp"]
    for path in kept:
        path.write_text("kept")
    (metrics / "archive.db").mkdir()
    outside = tmp_path / "elsewhere.db"
    outside.write_text("kept")
    (metrics / "link.db").symlink_to(outside)
    assert sorted(clean_metrics_dir(metrics)) == sorted(stale)
    assert sorted(p.name for p in metrics.iterdir()) == [
        "archive.db",
        "backup.db.tar",
        "link.db",
        "notes.tmp",
        "notes.txt",
    ]
    assert outside.read_text() == "kept"
    with pytest.raises(NotADirectoryError, match="not a directory"):
        clean_metrics_dir(tmp_path / "missing")


def test_run_directories_carry_the_masters_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    made = run_dir("run")
    assert made.parent == tmp_path
    assert RUN_DIR_PATTERN.fullmatch(made.name)
    assert made.name.startswith(f"latam-delay-run-{os.getpid()}-")
    assert held_by_another(made)
    release(made)
    assert not held_by_another(made)


def test_a_held_directory_is_kept_whatever_pid_it_is_named_after(tmp_path: Path) -> None:
    """A live master in another pid namespace (a container sharing this TMPDIR) can be named
    after a pid that is dead here, or this very one: its lock says it lives."""
    held = [tmp_path / f"latam-delay-run-{pid}-abc" for pid in (dead_pid(), os.getpid())]
    for path in held:
        path.mkdir()
        hold(path)
    try:
        assert clean_stale_runs(tmp_path) == []
    finally:
        for path in held:
            release(path)
    assert sorted(clean_stale_runs(tmp_path)) == sorted(held)


def test_holding_never_waits_for_an_exclusive_lock(tmp_path: Path) -> None:
    """A start must not hang on a directory someone locked exclusively (a cleaner mid-scan, a
    stray process): the directory is then used unheld."""
    locked = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(locked, fcntl.LOCK_EX)
    try:
        holding = threading.Thread(target=hold, args=(tmp_path,), daemon=True)
        holding.start()
        holding.join(timeout=5)
        assert not holding.is_alive(), "hold waited for the exclusive lock"
    finally:
        os.close(locked)
    assert not held_by_another(tmp_path)
    release(tmp_path)


def backdate(root: Path, days: float) -> None:
    """Sets the access and modification times of `root` and everything under it `days` back,
    as they are on a server up that long with no worker started (each worker start reads the
    model snapshot; the metric files are written on requests of each kind)."""
    then = time.time() - days * 86400
    for path in [root, *root.rglob("*")]:
        os.utime(path, (then, then), follow_symlinks=False)


@pytest.mark.skipif(TMPFILES is None, reason="systemd-tmpfiles not installed (.ci/run installs it)")
def test_a_tmp_cleaner_leaves_a_running_server_its_directories(tmp_path: Path) -> None:
    """systemd-tmpfiles (Fedora and RHEL age /tmp out after 10 days) took the model snapshot
    and the metric files of a server up that long; the next worker to boot could not load its
    models and gunicorn halted (exit 3, every request refused). The master holds its directories
    (run_dirs.hold): the real cleaner skips them, and a worker killed then is replaced."""
    workdir = tmp_path / "tmp"
    server = spawn(workdir)
    try:
        wait_until_ready(server)
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.post("/predict", json={"flights": FULL_FLIGHTS}).status_code == 200
        runs = sorted(workdir.glob("latam-delay-*"))
        files = sorted(path for run in runs for path in run.rglob("*"))
        assert len(runs) == 2
        assert any(path.suffix == ".onnx" for path in files)
        for run in runs:
            backdate(run, days=30)
        rules = tmp_path / "tmp.conf"
        rules.write_text(f"e {workdir} - - - am:10d\n")  # atime, mtime: a ctime cannot go back
        assert TMPFILES is not None
        cleaned = subprocess.run([TMPFILES, "--clean", str(rules)], capture_output=True, text=True)
        assert cleaned.returncode == 0, cleaned.stderr
        assert sorted(path for run in runs for path in run.rglob("*")) == files
        (killed, *_) = workers_of(server)
        started = server.log().count("Application startup complete")
        os.kill(killed, signal.SIGKILL)
        wait_until_ready(server, startups=started + 1)
        assert killed not in workers_of(server)
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.post("/predict", json={"flights": FULL_FLIGHTS}).status_code == 200
    finally:
        stop(server)


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_checking_and_leaving_a_directory_leave_no_descriptor_nor_lock(tmp_path: Path) -> None:
    """held_by_another's probe lets go of what it opened, whatever it found (a leaked exclusive
    lock would make the next probe see the directory as held); a missing directory is held by
    no one; leave_metrics_dir releases the hold of a directory never marked."""
    free, held, missing = tmp_path / "free", tmp_path / "held", tmp_path / "missing"
    free.mkdir()
    held.mkdir()
    other = os.open(held, os.O_RDONLY | os.O_DIRECTORY)  # another open: another holder
    try:
        fcntl.flock(other, fcntl.LOCK_SH | fcntl.LOCK_NB)
        before = open_descriptors()
        assert not held_by_another(free)
        assert not held_by_another(free)
        assert held_by_another(held)
        assert not held_by_another(missing)
        assert open_descriptors() == before
    finally:
        os.close(other)
    metrics = tmp_path / "latam-delay-metrics-1-abc"
    metrics.mkdir()
    before = open_descriptors()
    hold(metrics)
    assert open_descriptors() == before + 1
    assert leave_metrics_dir(metrics)  # no mark of this master's to remove: still fine
    assert open_descriptors() == before


def test_only_masters_marks_in_run_directories_count(tmp_path: Path) -> None:
    """A `master-*` entry that is no pid, is a directory, or sits in a directory not named as a
    run's is no master's mark."""
    metrics = tmp_path / "latam-delay-metrics-1-abc"
    metrics.mkdir()
    mark_master(metrics)
    assert (metrics / f"master-{os.getpid()}").is_file()
    (metrics / "master-x").touch()
    assert other_masters(metrics) == []
    odd = tmp_path / "latam-delay-metrics-odd"
    odd.mkdir()
    (odd / f"master-{os.getppid()}").touch()
    not_a_file = tmp_path / "latam-delay-metrics-2-def"
    (not_a_file / f"master-{os.getppid()}").mkdir(parents=True)
    assert shared_metrics_dir(os.getppid(), tmp_path) is None
    assert shared_metrics_dir(dead_pid()) is None  # the system's temporary directory


def test_a_file_named_as_a_dead_run_is_left_alone(tmp_path: Path) -> None:
    named = tmp_path / f"latam-delay-run-{dead_pid()}-abc"
    named.write_text("not ours")
    assert clean_stale_runs(tmp_path) == []
    assert named.is_file()


OTHER_USER = 65534
"""Another local user (nobody), for the directories it could make in a shared TMPDIR."""


def test_a_directory_made_again_is_private_whatever_the_umask(tmp_path: Path) -> None:
    """Under umask 000 the directories a restore made again were writable by all."""
    snapshot = tmp_path / "latam-delay-run-1-x" / "models" / "release-y"
    previous = os.umask(0)
    try:
        assert private_directory(snapshot) == snapshot
    finally:
        os.umask(previous)
    for made in (snapshot, snapshot.parent, snapshot.parent.parent):
        assert made.stat().st_mode & 0o777 == 0o700
    assert private_directory(snapshot) == snapshot  # there already, this user's: kept


@pytest.mark.skipif(os.geteuid() != 0, reason="making another user's directory needs root")
def test_a_directory_another_user_made_at_a_runs_name_is_refused(tmp_path: Path) -> None:
    """After a /tmp cleaner took a run's directory, another user could make it again first."""
    run = tmp_path / "latam-delay-run-1-x"
    run.mkdir()
    os.chown(run, OTHER_USER, OTHER_USER)
    with pytest.raises(PermissionError, match="not a directory of this user's or root's"):
        private_directory(run / "models" / "release-y")
    (tmp_path / "elsewhere").mkdir()
    run.rmdir()
    run.symlink_to(tmp_path / "elsewhere")  # to a directory of this user's, by another user
    os.lchown(run, OTHER_USER, OTHER_USER)
    with pytest.raises(PermissionError):
        private_directory(run / "models")
    assert not list((tmp_path / "elsewhere").iterdir())

"""A server run's temporary directories, made by the gunicorn master: one for the model snapshots
and the gRPC hand-off, one for prometheus_client's multiprocess files (unless one is given from
outside). Each is named after its master's pid, so that a later start can tell a dead run's
leftovers (a master killed before its on_exit) from a live one's; a binary upgrade's new master
writes its workers' metrics in its predecessor's directory, and the last of the two to exit
removes it (gunicorn.conf.py). The master holds each of them (`hold`) for as long as it runs, so
that an age-based /tmp cleaner leaves them alone."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import tempfile
from pathlib import Path

from app import processes

OWN_METRICS_ENV = "LATAM_DELAY_OWN_METRICS_DIR"
"""The prometheus directory gunicorn.conf.py made for this run (not one given from outside)."""
RUN_DIR_PATTERN = re.compile(r"latam-delay-(?:run|metrics)-(\d+)-[a-z0-9_]+")
"""A server run's temporary directories, named after its gunicorn master's pid (see run_dir)."""
MASTER_MARK = "master-"
"""`master-<pid>`: an empty file in a run's own prometheus directory for each master whose workers
write there. A binary upgrade's new master shares its predecessor's (`shared_metrics_dir`), so a
directory named after a master that is gone can still be a live one's."""
_held: dict[Path, int] = {}
"""The directories this process holds (`hold`), with the open descriptor that holds each."""


def run_dir(kind: str) -> Path:
    """A new temporary directory for this server run, named after this (the master's) pid so
    that a later start can tell a dead run's leftovers from a live one's (clean_stale_runs)."""
    return hold(Path(tempfile.mkdtemp(prefix=f"latam-delay-{kind}-{os.getpid()}-")))


def private_directory(directory: Path) -> Path:
    """`directory`, made again with each parent of it that is gone, mode 0700 whatever the umask;
    an existing one another user owns (root aside), or a symlink another user made, is refused
    (PermissionError). A run's directories have names anyone can list in TMPDIR: once a /tmp
    cleaner had taken them, another local user could make them first, and the master wrote the
    checked models (or a process its metric files) into that user's directory, through a symlink
    planted at their temporary name (a root master overwrote any file with a model card), for
    the next worker to load whatever that user put there; under umask 000 it made them writable
    by all."""
    missing = []
    existing = directory
    while not os.path.lexists(existing):
        missing.append(existing)
        existing = existing.parent
    owners = {os.lstat(existing).st_uid, os.stat(existing).st_uid}  # a symlink's, its target's
    if not owners <= {0, os.geteuid()}:
        raise PermissionError(
            errno.EPERM, "not a directory of this user's or root's", str(existing)
        )
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
    for path in reversed(missing):
        path.mkdir(mode=0o700)  # made here, not one another user made meanwhile (FileExistsError)
    return directory


def hold(directory: Path) -> Path:
    """Takes a shared BSD lock (flock) on `directory` until this process exits or `release`s it;
    the workers it forks share it. systemd-tmpfiles, the age-based cleaner of /tmp (10 days on
    Fedora and RHEL), skips a directory it cannot lock: unheld, a server up longer than that
    with no worker started lost its model snapshot and its metric files, and the next worker
    to boot (after one was killed, or on a refused reload) could not load its models, and
    gunicorn halted. Best effort, never waiting: where the lock cannot be taken (a file system
    without flock, an exclusive lock someone holds), the directory is used unheld."""
    if directory not in _held:
        descriptor, _ = _try_flock(directory, fcntl.LOCK_SH)
        if descriptor is not None:
            _held[directory] = descriptor
    return directory


def release(directory: Path) -> None:
    """Lets go of a directory `hold` took (none held: nothing to do)."""
    descriptor = _held.pop(directory, None)
    if descriptor is not None:
        os.close(descriptor)


def held_by_another(directory: Path) -> bool:
    """Whether another open of `directory` holds it (`hold`): a live run's, whatever its pid
    says (a master in another pid namespace, a container sharing this TMPDIR, can have any)."""
    descriptor, conflict = _try_flock(directory, fcntl.LOCK_EX)
    if descriptor is not None:
        os.close(descriptor)
    return conflict


def _try_flock(directory: Path, operation: int) -> tuple[int | None, bool]:
    """(an open descriptor of `directory` holding the flock `operation`, or None when it could
    not be opened or locked; whether a conflicting lock was the reason), never waiting."""
    try:
        descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None, False
    try:
        fcntl.flock(descriptor, operation | fcntl.LOCK_NB)
    except OSError as error:
        os.close(descriptor)
        return None, isinstance(error, BlockingIOError)
    return descriptor, False


def clean_stale_runs(tmp: Path | None = None) -> list[Path]:
    """Removes the run directories of masters that are gone (killed before their on_exit).
    Called before this master makes its own, so one named after this very pid is a dead
    master's too: in a container every master is pid 1, and a restarted one kept its killed
    predecessor's directories (in an emptyDir that survives restarts) forever. One a live
    process holds is kept whatever its name says (held_by_another)."""
    removed = []
    for path in Path(tmp or tempfile.gettempdir()).iterdir():
        match = RUN_DIR_PATTERN.fullmatch(path.name)
        pid = int(match.group(1)) if match else 0
        if (
            match
            and path.is_dir()
            and (pid == os.getpid() or not processes.exists(pid))
            and not other_masters(path)
            and not held_by_another(path)
        ):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def upgraded_from(environ: dict[str, str] | os._Environ[str] = os.environ) -> int | None:
    """The pid of the master whose SIGUSR2 started this one (gunicorn's GUNICORN_PID, set until
    that master is gone), else None. Told by gunicorn itself, not by what the environment it
    copied holds: without a SIGHUP before the SIGUSR2 that copy holds none of the old run's
    names, and the new master took itself for a fresh start."""
    pid = environ.get("GUNICORN_PID", "")
    return int(pid) if pid.isdigit() and int(pid) != os.getpid() else None


def _own_mark(directory: Path) -> Path:
    """This master's MASTER_MARK in `directory`."""
    return directory / f"{MASTER_MARK}{os.getpid()}"


def mark_master(directory: Path) -> None:
    """Marks `directory` as written to by this master's workers (MASTER_MARK)."""
    _own_mark(directory).touch()


def other_masters(directory: Path) -> list[int]:
    """The live masters other than this one whose workers write to `directory`."""
    found = []
    for mark in directory.glob(f"{MASTER_MARK}*"):
        pid = mark.name.removeprefix(MASTER_MARK)
        if pid.isdigit() and int(pid) != os.getpid() and processes.exists(int(pid)):
            found.append(int(pid))
    return found


def shared_metrics_dir(master: int, tmp: Path | None = None) -> Path | None:
    """The prometheus directory the live master `master` made for its run (or shares), for the
    master its SIGUSR2 started: the two generations' workers answer the same metrics port, and
    from directories of their own a scrape read one generation's counters or the other's,
    back and forth (every flip a counter reset to Prometheus), and counted half the workers."""
    marks = Path(tmp or tempfile.gettempdir()).glob(f"latam-delay-metrics-*/{MASTER_MARK}{master}")
    for mark in marks:
        if mark.is_file() and RUN_DIR_PATTERN.fullmatch(mark.parent.name):
            return mark.parent
    return None


def leave_metrics_dir(directory: Path) -> bool:
    """At this master's exit: unmarks it, and removes `directory` unless another live master's
    workers still write there (an upgrade's other generation); returns whether it removed it."""
    with contextlib.suppress(OSError):  # a read-only TMPDIR: a mark of a dead master counts none
        _own_mark(directory).unlink(missing_ok=True)
    release(directory)
    if other_masters(directory):
        return False
    shutil.rmtree(directory, ignore_errors=True)
    return True


def clean_metrics_dir(directory: Path) -> list[Path]:
    """Removes the prometheus_client files (`*.db`, what its multiprocess collector reads) from a
    PROMETHEUS_MULTIPROC_DIR given from outside, with what a compaction killed half-way left
    (app.observability.metrics_archive.leftovers), and nothing else; called once by a master
    starting afresh (not one started by SIGUSR2: the old master's workers still write there).
    prometheus_client asks for the directory to be wiped between runs: a killed run's files
    stayed, so model_workers counted its dead workers beside the live ones (4 of 2) and the
    counters went on from the dead run's values."""
    from app.observability.metrics_archive import leftovers

    if not directory.is_dir():  # the workers would fail to boot on it, one after the other
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(directory))
    removed = []
    for path in [*directory.glob("*.db"), *leftovers(directory)]:
        if path.is_file() and not path.is_symlink():
            path.unlink()
            removed.append(path)
    return removed

"""Model releases in the gunicorn master: check once, snapshot, and let workers load only that.

gunicorn's SIGHUP starts new workers and retires the old ones whatever happens: if a new worker
then fails to load its models, the master halts the whole server ("Worker failed to boot").
So workers never read the operator's MODELS_DIR. The master copies the model files it names
(a directory, or a symlink to a versioned release) into a private snapshot directory, loads and
warms that copy, and only then points the workers' MODELS_DIR at it. On SIGHUP (`on_reload`)
it does the same with whatever the operator's MODELS_DIR holds now; if that is missing, corrupt
or unloadable, the reload is refused in one log line and the new workers load the previous
snapshot, so the service keeps serving the old models. What is served is byte for byte what
was checked: a file swapped or half-copied after the check cannot reach a worker.

Whatever goes wrong with a release (a missing or empty directory, a missing, unreadable or
wrong-kind file (a FIFO is refused unopened: reading one would block the master), a corrupt model,
a card that does not fit its model (app.inference.model.fit_problems), any error of onnxruntime)
is that one refusal, naming the file in the release directory the symlink resolved to:
nothing a release holds can stop the server. Reloads run one at a time (gunicorn calls on_reload
from its main loop; a lock makes that true for any caller), and a snapshot is removed only once
no live worker was forked to load it.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson

from app import processes
from app.errors import ModelLoadError
from app.inference.model import MODEL_NAMES, ModelSet, read_regular
from app.server.handoff import GENERATION_ENV, RUN_DIR_ENV

OWN_METRICS_ENV = "LATAM_DELAY_OWN_METRICS_DIR"
"""The prometheus directory gunicorn.conf.py made for this run (not one given from outside)."""
SOURCE_ENV = "MODELS_SOURCE"
"""The operator's MODELS_DIR, kept by the master; MODELS_DIR itself then names the snapshot."""
SERVED_ENV = "MODELS_SERVED"
"""What the pinned snapshot holds, for the log line of a refused reload."""
RUN_DIR_PATTERN = re.compile(r"latam-delay-(?:run|metrics)-(\d+)-[a-z0-9_]+")
"""A server run's temporary directories, named after its gunicorn master's pid (see run_dir)."""
MASTER_MARK = "master-"
"""`master-<pid>`: an empty file in a run's own prometheus directory for each master whose workers
write there. A binary upgrade's new master shares its predecessor's (`shared_metrics_dir`), so a
directory named after a master that is gone can still be a live one's."""
_reloading = threading.Lock()


@dataclass(frozen=True)
class Release:
    source: Path
    """The operator's MODELS_DIR."""
    resolved: Path
    """Where it pointed when copied (the release directory behind a symlink)."""
    snapshot: Path
    """The private copy the workers load."""
    versions: dict[str, str]

    def describe(self) -> str:
        versions = ", ".join(f"{name} {version}" for name, version in self.versions.items())
        return f"{versions} from {self.resolved}"


def take_snapshot(source: Path, snapshots: Path, threads: int = 1) -> Release:
    """Copies the models `source` names into a new directory under `snapshots` and loads that
    copy; raises ModelLoadError naming the file that is missing or unusable where it is, in the
    release directory `source` resolves to (a symlink names no release)."""
    try:
        resolved = source.resolve()
        _release_directory(source, resolved)
        snapshots.mkdir(parents=True, exist_ok=True)
        snapshot = Path(tempfile.mkdtemp(prefix="release-", dir=snapshots))
    except ModelLoadError:
        raise
    except (OSError, RuntimeError) as error:  # RuntimeError: a symlink loop
        raise ModelLoadError(_one_line(f"cannot snapshot {source}: {error}")) from None
    try:
        for name in MODEL_NAMES:
            card = _copy(resolved / f"{name}.json", snapshot)
            if card is not None:
                _copy(resolved / _onnx_file(card, resolved / f"{name}.json"), snapshot)
        models = ModelSet.load(snapshot, threads)
    except ModelLoadError as error:
        shutil.rmtree(snapshot, ignore_errors=True)
        raise ModelLoadError(_one_line(str(error).replace(str(snapshot), str(resolved)))) from None
    except Exception as error:  # onnxruntime, numpy or the OS: any failure refuses the release
        shutil.rmtree(snapshot, ignore_errors=True)
        message = f"release unusable: {resolved}: {type(error).__name__}: {error}"
        raise ModelLoadError(_one_line(message.replace(str(snapshot), str(resolved)))) from None
    except BaseException:
        shutil.rmtree(snapshot, ignore_errors=True)
        raise
    versions = {name: model.version for name, model in models.by_name.items()}
    return Release(source, resolved, snapshot, versions)


def _release_directory(source: Path, resolved: Path) -> None:
    """Refuses a release that is no directory, or holds no model card at all, saying so rather
    than naming the first card as missing."""
    named = source if source == resolved else f"{source} -> {resolved}"
    if not resolved.exists():
        raise ModelLoadError(f"model directory not found: {named}")
    if not resolved.is_dir():
        raise ModelLoadError(f"model directory is not a directory: {named}")
    cards = [f"{name}.json" for name in MODEL_NAMES]
    if not any(os.path.lexists(resolved / card) for card in cards):
        holds = "is empty" if not any(resolved.iterdir()) else "holds no model card"
        raise ModelLoadError(f"model directory {holds}: {named} (expected {', '.join(cards)})")


def _copy(path: Path, into: Path) -> bytes | None:
    """The file's bytes, written into `into`; None when it does not exist (the load that
    follows then names it as missing). Any other reason it cannot be read (no permission, a
    directory or a FIFO in its place: app.inference.model.read_regular) refuses the release,
    naming the file."""
    try:
        data = read_regular(path)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ModelLoadError(f"cannot read {path}: {error.strerror}") from None
    (into / path.name).write_bytes(data)
    return data


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _onnx_file(card: bytes, card_path: Path) -> str:
    """The card's ONNX file name, which must be a plain name beside the card."""
    try:
        name = orjson.loads(card)["onnx"]["file"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as error:
        raise ModelLoadError(f"model card unreadable: {card_path}: {error!r}") from None
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise ModelLoadError(f"model card names no plain ONNX file name: {card_path}: {name!r}")
    return name


def prune(snapshots: Path, keep: Collection[Path]) -> None:
    """Removes every snapshot but those in `keep`: the pinned one and those live workers were
    forked to load (a worker still loading must find its files)."""
    for old in snapshots.glob("release-*"):
        if old not in keep:
            shutil.rmtree(old, ignore_errors=True)


def in_use(environ: dict[str, str] | os._Environ[str], workers: Iterable[object]) -> set[Path]:
    """The pinned snapshot and every live worker's (gunicorn.conf.py's pre_fork tags each
    worker with the MODELS_DIR it was forked with)."""
    used = {Path(environ["MODELS_DIR"])} if "MODELS_DIR" in environ else set()
    return used | {Path(worker.models_dir) for worker in workers if hasattr(worker, "models_dir")}


def run_dir(kind: str) -> Path:
    """A new temporary directory for this server run, named after this (the master's) pid so
    that a later start can tell a dead run's leftovers from a live one's (clean_stale_runs)."""
    return Path(tempfile.mkdtemp(prefix=f"latam-delay-{kind}-{os.getpid()}-"))


def clean_stale_runs(tmp: Path | None = None) -> list[Path]:
    """Removes the run directories of masters that are gone (killed before their on_exit).
    Called before this master makes its own, so one named after this very pid is a dead
    master's too: in a container every master is pid 1, and a restarted one kept its killed
    predecessor's directories (in an emptyDir that survives restarts) forever."""
    removed = []
    for path in Path(tmp or tempfile.gettempdir()).iterdir():
        match = RUN_DIR_PATTERN.fullmatch(path.name)
        pid = int(match.group(1)) if match else 0
        if (
            match
            and path.is_dir()
            and (pid == os.getpid() or not processes.exists(pid))
            and not other_masters(path)
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


def mark_master(directory: Path) -> None:
    """Marks `directory` as written to by this master's workers (MASTER_MARK)."""
    (directory / f"{MASTER_MARK}{os.getpid()}").touch()


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
    (directory / f"{MASTER_MARK}{os.getpid()}").unlink(missing_ok=True)
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


def forget_inherited_run(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Whether this master inherited another's run, which it then forgets. gunicorn's binary
    upgrade (SIGUSR2) starts the new master with the environment gunicorn copied at the old
    master's last SIGHUP: the old run's directories and MODELS_DIR naming one of its snapshots.
    The new master then failed to start on a pruned snapshot and its exit removed the running
    master's directories (its /metrics a 500), or served the old snapshot from directories the
    old master's exit removed. MODELS_DIR is the operator's again (MODELS_SOURCE), and the old
    run's names are dropped (its directories stay: the old master still runs). This master's own
    run, met again when gunicorn.conf.py runs on SIGHUP, is kept."""
    run = environ.get(RUN_DIR_ENV)
    if not run:
        return False
    match = RUN_DIR_PATTERN.fullmatch(Path(run).name)
    if match is not None and int(match.group(1)) == os.getpid():
        return False
    if SOURCE_ENV in environ:
        environ["MODELS_DIR"] = environ[SOURCE_ENV]
    own_metrics = environ.pop(OWN_METRICS_ENV, None)
    if own_metrics is not None and environ.get("PROMETHEUS_MULTIPROC_DIR") == own_metrics:
        del environ["PROMETHEUS_MULTIPROC_DIR"]
    for name in (RUN_DIR_ENV, SOURCE_ENV, SERVED_ENV, GENERATION_ENV):
        environ.pop(name, None)
    return True


def pin(release: Release, environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Makes the workers forked from now on load `release`."""
    environ[SOURCE_ENV] = str(release.source)
    environ[SERVED_ENV] = release.describe()
    environ["MODELS_DIR"] = str(release.snapshot)


def reload_models(
    snapshots: Path,
    threads: int,
    info: Callable[[str], None],
    error: Callable[[str], None],
    environ: dict[str, str] | os._Environ[str] = os.environ,
    workers: Iterable[object] = (),
) -> Release | None:
    """gunicorn's on_reload: the operator's MODELS_DIR as it is now, or the previous release.
    Returns the new release, or None when it was refused. `workers`: the live ones, whose
    snapshots are kept."""
    with _reloading:
        source = Path(environ.get(SOURCE_ENV) or environ.get("MODELS_DIR") or "models")
        try:
            release = take_snapshot(source, snapshots, threads)
        except ModelLoadError as refused:
            error(
                f"model reload refused, still serving {environ.get(SERVED_ENV, '?')}: {refused}"
                " (fix the release and send SIGHUP again)"
            )
            return None
        pin(release, environ)
        prune(snapshots, in_use(environ, workers))
        info(f"models reloaded: {release.describe()}")
        return release

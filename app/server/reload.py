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
no live worker was forked to load it. The master keeps the checked bytes and writes back what
of the pinned snapshot is gone before each fork (`restore`).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

from app.errors import ModelLoadError
from app.inference.model import MODEL_NAMES, ModelSet, read_regular
from app.server.handoff import GENERATION_ENV, RUN_DIR_ENV
from app.server.run_dirs import OWN_METRICS_ENV, RUN_DIR_PATTERN, private_directory

SOURCE_ENV = "MODELS_SOURCE"
"""The operator's MODELS_DIR, kept by the master; MODELS_DIR itself then names the snapshot."""
SERVED_ENV = "MODELS_SERVED"
"""What the pinned snapshot holds, for the log line of a refused reload."""
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
    files: Mapping[str, bytes]
    """The checked bytes of each file in the snapshot, by name, to write back (`restore`)."""

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
        private_directory(snapshots)
        snapshot = Path(tempfile.mkdtemp(prefix="release-", dir=snapshots))
    except ModelLoadError:
        raise
    except (OSError, RuntimeError) as error:  # RuntimeError: a symlink loop
        raise ModelLoadError(_one_line(f"cannot snapshot {source}: {error}")) from None
    files: dict[str, bytes] = {}
    try:
        for name in MODEL_NAMES:
            card = _copy(resolved / f"{name}.json", snapshot, files)
            if card is not None:
                _copy(resolved / _onnx_file(card, resolved / f"{name}.json"), snapshot, files)
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
    return Release(source, resolved, snapshot, versions, files)


def _release_directory(source: Path, resolved: Path) -> None:
    """Refuses a release that is no directory, or holds no model card at all, saying so rather
    than naming the first card as missing."""
    named = source if source == resolved else f"{source} -> {resolved}"
    # stat, not Path.exists(), which reads a symlink loop as absent: since Python 3.13
    # (python/cpython#109187) Path.resolve() returns a loop unresolved instead of raising
    # RuntimeError, and its ELOOP must reach take_snapshot's "cannot snapshot", not pass for a
    # missing release.
    try:
        mode = resolved.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise ModelLoadError(f"model directory not found: {named}") from None
    if not stat.S_ISDIR(mode):
        raise ModelLoadError(f"model directory is not a directory: {named}")
    cards = [f"{name}.json" for name in MODEL_NAMES]
    if not any(os.path.lexists(resolved / card) for card in cards):
        holds = "is empty" if not any(resolved.iterdir()) else "holds no model card"
        raise ModelLoadError(f"model directory {holds}: {named} (expected {', '.join(cards)})")


def _copy(path: Path, into: Path, files: dict[str, bytes]) -> bytes | None:
    """The file's bytes, written into `into` and kept in `files`; None when it does not exist
    (the load that follows then names it as missing). Any other reason it cannot be read (no
    permission, a directory or a FIFO in its place: app.inference.model.read_regular) refuses
    the release, naming the file; a copy the snapshot directory cannot take, naming that."""
    try:
        data = read_regular(path)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ModelLoadError(f"cannot read {path}: {error.strerror}") from None
    try:
        (into / path.name).write_bytes(data)
    except OSError as error:  # the server's side, not the release's: a full TMPDIR, say
        raise ModelLoadError(
            f"model snapshot not written in {into.parent} (the server's run directory, under "
            f"TMPDIR): {error.strerror}"
        ) from None
    files[path.name] = data
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


def restore(release: Release) -> list[str]:
    """Writes back the files of `release`'s snapshot that are gone or altered, returning their
    names; called before each worker is forked to load it (gunicorn.conf.py's pre_fork). A
    worker that cannot load its models halts gunicorn, and the snapshot lives under TMPDIR for
    as long as the server runs: a /tmp cleaner that ignores the master's lock (tmpwatch,
    tmpreaper: app.server.run_dirs.hold), or an operator's `rm`, could take it, and the next
    worker to boot (one killed, a refused reload's) then stopped the server. What is written
    is the bytes that were checked, never MODELS_DIR's present ones, in directories of the
    server's own (run_dirs.private_directory)."""
    restored = []
    for name, data in release.files.items():
        path = release.snapshot / name
        try:
            if path.read_bytes() == data:
                continue
        except OSError:
            pass
        private_directory(release.snapshot)
        temporary = path.with_name(f".{name}.restoring")
        try:
            temporary.write_bytes(data)
            temporary.replace(path)
        except OSError:
            temporary.unlink(missing_ok=True)  # a full disk, a directory in the file's place
            raise
        restored.append(name)
    return restored


def in_use(environ: dict[str, str] | os._Environ[str], workers: Iterable[object]) -> set[Path]:
    """The pinned snapshot and every live worker's (gunicorn.conf.py's pre_fork tags each
    worker with the MODELS_DIR it was forked with)."""
    used = {Path(environ["MODELS_DIR"])} if "MODELS_DIR" in environ else set()
    return used | {Path(worker.models_dir) for worker in workers if hasattr(worker, "models_dir")}


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

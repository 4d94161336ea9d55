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
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from app.errors import ModelLoadError
from app.model import MODEL_NAMES, ModelSet

SOURCE_ENV = "MODELS_SOURCE"
"""The operator's MODELS_DIR, kept by the master; MODELS_DIR itself then names the snapshot."""
SERVED_ENV = "MODELS_SERVED"
"""What the pinned snapshot holds, for the log line of a refused reload."""
SNAPSHOTS_KEPT = 2
"""The current snapshot and the one before: a worker spawned just before a reload may still be
loading the previous one."""


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
    copy; raises ModelLoadError naming the file in `source` that is missing or unusable."""
    resolved = source.resolve()
    snapshots.mkdir(parents=True, exist_ok=True)
    snapshot = Path(tempfile.mkdtemp(prefix="release-", dir=snapshots))
    try:
        for name in MODEL_NAMES:
            card = _copy(resolved / f"{name}.json", snapshot)
            if card is not None:
                _copy(resolved / _onnx_file(card, source / f"{name}.json"), snapshot)
        models = ModelSet.load(snapshot, threads)
    except ModelLoadError as error:
        shutil.rmtree(snapshot, ignore_errors=True)
        raise ModelLoadError(str(error).replace(str(snapshot), str(source))) from None
    except BaseException:
        shutil.rmtree(snapshot, ignore_errors=True)
        raise
    versions = {name: model.version for name, model in models.by_name.items()}
    return Release(source, resolved, snapshot, versions)


def _copy(path: Path, into: Path) -> bytes | None:
    """The file's bytes, written into `into`; None when it does not exist (the load that
    follows then names it as missing)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    (into / path.name).write_bytes(data)
    return data


def _onnx_file(card: bytes, card_path: Path) -> str:
    """The card's ONNX file name, which must be a plain name beside the card."""
    try:
        name = orjson.loads(card)["onnx"]["file"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as error:
        raise ModelLoadError(f"model card unreadable: {card_path}: {error!r}") from None
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise ModelLoadError(f"model card names no plain ONNX file name: {card_path}: {name!r}")
    return name


def prune(snapshots: Path, keep: Path) -> None:
    """Removes all but the newest SNAPSHOTS_KEPT snapshots; `keep` is never removed."""
    releases = sorted(snapshots.glob("release-*"), key=lambda path: path.stat().st_mtime)
    for old in releases[:-SNAPSHOTS_KEPT]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


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
) -> Release | None:
    """gunicorn's on_reload: the operator's MODELS_DIR as it is now, or the previous release.
    Returns the new release, or None when it was refused."""
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
    prune(snapshots, release.snapshot)
    info(f"models reloaded: {release.describe()}")
    return release

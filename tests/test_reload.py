"""app.reload: a release is copied and loaded before any worker may use it; a broken one is
refused naming the operator's file, and the previous snapshot stays pinned."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.errors import ModelLoadError
from app.reload import SERVED_ENV, SOURCE_ENV, pin, prune, reload_models, take_snapshot
from benchmarks.chaos import corrupt_release, point, retagged_release

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "models"


def committed_versions() -> dict[str, str]:
    return {
        path.stem: json.loads(path.read_text())["version"] for path in MODELS_DIR.glob("*.json")
    }


def test_a_snapshot_is_a_checked_copy_of_the_release(tmp_path: Path) -> None:
    release = take_snapshot(MODELS_DIR, tmp_path / "snapshots")
    assert release.versions == committed_versions()
    assert release.snapshot.parent == tmp_path / "snapshots"
    for path in MODELS_DIR.iterdir():
        assert (release.snapshot / path.name).read_bytes() == path.read_bytes()
    assert "delay-minimal" in release.describe()


def test_a_snapshot_follows_a_symlink_once(tmp_path: Path) -> None:
    shutil.copytree(MODELS_DIR, tmp_path / "r1")
    current = tmp_path / "current"
    current.symlink_to(tmp_path / "r1")
    release = take_snapshot(current, tmp_path / "snapshots")
    assert release.resolved == (tmp_path / "r1").resolve()
    assert release.source == current


@pytest.mark.parametrize("broken", ["delay-full.onnx", "delay-minimal.json"])
def test_a_broken_release_is_refused_naming_the_operators_file(tmp_path: Path, broken: str) -> None:
    models = Path(shutil.copytree(MODELS_DIR, tmp_path / "models"))
    if broken.endswith(".onnx"):
        (models / broken).write_bytes((models / broken).read_bytes()[:1000])
    else:
        (models / broken).unlink()
    with pytest.raises(ModelLoadError) as refused:
        take_snapshot(models, tmp_path / "snapshots")
    assert str(models / broken) in str(refused.value)
    assert not list((tmp_path / "snapshots").iterdir())  # the failed copy is gone


def test_a_card_naming_a_file_outside_its_directory_is_refused(tmp_path: Path) -> None:
    models = Path(shutil.copytree(MODELS_DIR, tmp_path / "models"))
    card = json.loads((models / "delay-full.json").read_text())
    card["onnx"]["file"] = "../../etc/passwd"
    (models / "delay-full.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="no plain ONNX file name"):
        take_snapshot(models, tmp_path / "snapshots")


def test_reload_pins_a_good_release_and_refuses_a_broken_one(tmp_path: Path) -> None:
    releases = tmp_path / "releases"
    shutil.copytree(MODELS_DIR, releases / "r1")
    new_versions = retagged_release(MODELS_DIR, releases / "r2", "test r2")
    corrupt_release(MODELS_DIR, releases / "broken")
    current = tmp_path / "current"
    current.symlink_to(releases / "r1")
    snapshots = tmp_path / "snapshots"
    environ = {"MODELS_DIR": str(current)}
    pin(take_snapshot(current, snapshots), environ)
    assert environ[SOURCE_ENV] == str(current)
    first_snapshot = environ["MODELS_DIR"]
    infos: list[str] = []
    errors: list[str] = []

    point(current, releases / "r2")
    second = reload_models(snapshots, 1, infos.append, errors.append, environ)
    assert second is not None
    assert second.versions == new_versions
    assert environ["MODELS_DIR"] == str(second.snapshot) != first_snapshot
    assert infos[-1].startswith("models reloaded: ")
    assert new_versions["delay-full"] in infos[-1]

    point(current, releases / "broken")
    assert reload_models(snapshots, 1, infos.append, errors.append, environ) is None
    assert environ["MODELS_DIR"] == str(second.snapshot)  # the new workers load r2 again
    assert Path(environ["MODELS_DIR"]).is_dir()
    assert errors == [errors[0]]
    assert errors[0].startswith(f"model reload refused, still serving {environ[SERVED_ENV]}")
    assert str(current / "delay-full.onnx") in errors[0]


def test_prune_keeps_the_two_newest_snapshots(tmp_path: Path) -> None:
    import os

    made = []
    for age in range(4):
        path = tmp_path / f"release-{age}"
        path.mkdir()
        os.utime(path, (1000 + age, 1000 + age))
        made.append(path)
    prune(tmp_path, keep=made[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release-0", "release-2", "release-3"]

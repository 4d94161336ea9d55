"""The DVC pipeline (dvc.yaml, params.yaml, data.dvc, .dvc/config): `dvc repro` run for real in
a temporary git repository holding a copy of the project, on a small synthetic flights file,
offline and without the remote. Plus the prepare stage's own checks, in-process."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.dvc.prepare import main as prepare
from export.card import METRICS_FILE
from tests.conftest import ROOT, synthetic_rows, write_csv
from train.data import CSV_SHA256, csv_sha256, data_location

VENV_BIN = Path(sys.executable).parent
DVC = [sys.executable, "-m", "dvc"]
# What a clone holds that the pipeline reads: its code, its definition, the committed outputs.
PROJECT_FILES = [
    "app",
    "train",
    "export",
    "deploy/dvc",
    "models",
    "reports/model.md",
    "reports/metrics.json",
    "reports/figures",
    "dvc.yaml",
    "params.yaml",
    "data.dvc",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvcignore",
    ".gitignore",
    "pyproject.toml",
]
MODEL_FILES = ["delay-minimal.onnx", "delay-minimal.json", "delay-full.onnx", "delay-full.json"]


def run(
    args: list[str], cwd: Path, check: bool = True, site_cache: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`args` in `cwd`, DVC's site cache beside it (a temporary repository's) or at `site_cache`:
    beside the project itself it would be a directory outside the checkout."""
    env = {
        **os.environ,
        # `python` in dvc.yaml's commands is this virtualenv's
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(site_cache or cwd.parent / "dvc-site-cache"),
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
        "PYTHONDONTWRITEBYTECODE": "1",
        # scikit-learn's OpenMP threads only fight over a busy machine's cores (the export took
        # 17 s instead of 10 s on 2 cores at load 3, minutes at load 6); same model bytes.
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def dvc_yaml() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    return loaded


def params() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "params.yaml").read_text())
    return loaded


# ---- the definition, checked without running it ----


def test_params_name_the_challenges_data_and_the_full_search() -> None:
    """The data's sha256 is the challenge file's, or, once a retrain moves to newer data (a
    reviewed change of params.yaml), that of the data $SCL_DATA names (the retrain workflow's
    `dvc pull` target), which `dvc repro prepare` holds it to."""
    data = params()["data"]
    located = data_location()
    if data["sha256"] != CSV_SHA256:
        assert located.is_file(), f"params.yaml names other data than the challenge's: {located}"
        assert data["sha256"] == csv_sha256(located)
    assert data["path"] == "data/raw/dataset_SCL.csv.gz"
    assert params()["export"]["search"] == "grid"
    tracked = yaml.safe_load((ROOT / "data.dvc").read_text())["outs"]
    assert [out["path"] for out in tracked] == [data["path"]]


def test_the_export_stage_writes_every_model_the_app_serves_and_keeps_them_in_git() -> None:
    stage = dvc_yaml()["stages"]["export"]
    assert "python -m export" in stage["cmd"]
    outs = {name: options for out in stage["outs"] for name, options in out.items()}
    assert {f"models/{name}" for name in MODEL_FILES} <= set(outs)
    for options in outs.values():
        # In git, not the DVC cache: a clone serves without DVC. Never deleted before a run.
        assert options == {"cache": False, "persist": True}


def test_the_export_stage_declares_the_models_metrics_and_the_figures_as_plots() -> None:
    stage = dvc_yaml()["stages"]["export"]
    metrics = {name: options for out in stage["metrics"] for name, options in out.items()}
    plots = {name: options for out in stage["plots"] for name, options in out.items()}
    assert metrics == {f"reports/{METRICS_FILE}": {"cache": False, "persist": True}}
    assert plots == {"reports/figures": {"cache": False, "persist": True}}
    committed = json.loads((ROOT / "reports" / METRICS_FILE).read_text())
    for name in ("delay-minimal", "delay-full"):
        card = json.loads((ROOT / "models" / f"{name}.json").read_text())
        assert committed[name] == card["metrics"], "reports/metrics.json is the cards' metrics"


def exported_imports() -> set[str]:
    """The project's files a fresh `python -m export` imports, relative to the root."""
    listing = (
        "import sys, export.__main__\n"
        "for module in list(sys.modules.values()):\n"
        "    print(getattr(module, '__file__', None) or '')\n"
    )
    printed = subprocess.run(
        [sys.executable, "-c", listing], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    root = ROOT.resolve()
    environment = Path(sys.prefix).resolve()  # .venv, or make test-lowest's build/lowest
    files = {Path(name).resolve() for name in printed}
    return {
        file.relative_to(root).as_posix()
        for file in files
        if file.is_relative_to(root) and not file.is_relative_to(environment)
    }


def test_the_export_stage_depends_on_exactly_the_code_the_export_imports() -> None:
    stage = dvc_yaml()["stages"]
    deps = stage["export"]["deps"]
    made = {out if isinstance(out, str) else next(iter(out)) for out in stage["prepare"]["outs"]}
    for dep in deps:
        if dep not in made and "${" not in dep:
            assert (ROOT / dep).exists(), f"dvc.yaml's export stage names {dep}, which is absent"
    imported = exported_imports()
    assert {"export/__main__.py", "train/select.py", "app/inference/features.py"} <= imported
    for file in imported:
        assert any(file == dep or file.startswith(f"{dep}/") for dep in deps), (
            f"the export imports {file}; dvc.yaml's export stage does not depend on it"
        )
    app_deps = {dep for dep in deps if dep.startswith("app/")}
    assert app_deps == {file for file in imported if file.startswith("app/")}
    # `make export` reruns on the same files.
    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")  # continued lines joined
    training_code = re.search(r"^TRAINING_CODE := (.*)$", makefile, re.M)
    assert training_code is not None
    named = re.search(r"\$\(addprefix app/,([^)]*)\)", training_code.group(1))
    assert named is not None
    assert {f"app/{name}" for name in named.group(1).split()} == app_deps


def test_the_lock_records_the_stages_dependencies_and_the_committed_outputs() -> None:
    """After a change of dvc.yaml's dependencies or of the outputs (a new export), the lock
    must be refreshed (`dvc commit export`), or `dvc repro` reruns a stage for nothing."""
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    data_path = params()["data"]["path"]
    for name, stage in dvc_yaml()["stages"].items():
        named = {dep.replace("${data.path}", data_path) for dep in stage["deps"]}
        assert {dep["path"] for dep in lock[name]["deps"]} == named
    for out in lock["export"]["outs"]:
        if "nfiles" not in out:  # a file, not a directory
            digest = hashlib.md5((ROOT / out["path"]).read_bytes()).hexdigest()
            assert digest == out["md5"], f"dvc.lock's md5 of {out['path']} is stale"


def test_the_lock_records_the_code_as_it_is_now(tmp_path: Path) -> None:
    """A change of the code the stages run (train/, export/, the app modules the export imports)
    leaves the lock naming the old code: `dvc repro` on a clean clone would rerun the export for
    nothing, and the lock would no longer say which code made the committed models. After such a
    change, `dvc commit --force export` (`make test-slow` shows the export still makes the
    committed models byte for byte). Only the data, which a clone need not hold, may differ."""
    site_cache = tmp_path / "dvc-site-cache"  # not ROOT.parent's: nothing outside the checkout
    status = run([*DVC, "status", "--json"], cwd=ROOT, site_cache=site_cache).stdout
    data_path = params()["data"]["path"]
    made = [out for stage in dvc_yaml()["stages"].values() for out in stage["outs"]]
    absent_here = {data_path} | {out if isinstance(out, str) else next(iter(out)) for out in made}
    stale = {
        f"{stage}: {path} {state}"
        for stage, changes in json.loads(status or "{}").items()
        for change in changes
        if isinstance(change, dict)
        for path, state in change.get("changed deps", {}).items()
        if path not in absent_here
    }
    assert not stale, f"dvc.lock is stale ({sorted(stale)}): run `dvc commit --force export`"


def test_the_lock_check_writes_nothing_beside_the_checkout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`dvc status` in the project kept DVC's site cache in ROOT.parent / "dvc-site-cache": every
    run of the suite made or wrote a directory beside the checkout (in CI, beside the workspace)."""
    site_caches: list[Path] = []

    def status(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        site_caches.append(Path(kwargs["env"]["DVC_SITE_CACHE_DIR"]))
        return subprocess.CompletedProcess(args, 0, "{}", "")

    monkeypatch.setattr(subprocess, "run", status)
    test_the_lock_records_the_code_as_it_is_now(tmp_path)
    assert site_caches, "dvc status was not run"
    assert all(path.is_relative_to(tmp_path) for path in site_caches), site_caches


def test_remote_is_configured_but_analytics_are_off() -> None:
    config = (ROOT / ".dvc" / "config").read_text()
    assert "analytics = false" in config
    assert "url = s3://" in config


# ---- the prepare stage ----


def test_prepare_records_the_data_it_checked(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "flights.csv.gz", synthetic_rows(200))
    out = tmp_path / "build" / "data.json"
    assert prepare(["--data", str(data), "--sha256", csv_sha256(data), "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["csv_sha256"] == csv_sha256(data)
    assert record["rows"] == 200
    assert record["challenge_data"] is False
    assert 0 < record["delay_rate"] < 1


def test_prepare_refuses_data_other_than_the_params_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_csv(tmp_path / "flights.csv.gz", synthetic_rows(200))
    out = tmp_path / "data.json"
    assert prepare(["--data", str(data), "--sha256", CSV_SHA256, "--out", str(out)]) == 1
    assert "set data.sha256" in capsys.readouterr().err
    assert not out.exists()


def test_prepare_refuses_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert prepare(["--data", str(tmp_path / "nothing.csv.gz"), "--out", str(tmp_path / "o")]) == 1
    assert "data file not found" in capsys.readouterr().err


# ---- dvc repro, for real ----


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository with the project's pipeline files, the synthetic data committed to DVC
    (as `dvc commit data.dvc` does for new data) and params.yaml set for it."""
    repo = tmp_path_factory.mktemp("dvc") / "repo"
    for name in PROJECT_FILES:
        source, target = ROOT / name, repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    (repo / "data" / "raw").mkdir(parents=True)
    data = write_csv(repo / "data" / "raw" / "dataset_SCL.csv.gz", synthetic_rows(2000))
    settings = params()
    settings["data"]["sha256"] = csv_sha256(data)
    settings["export"]["search"] = "first"
    (repo / "params.yaml").write_text(yaml.safe_dump(settings))
    run(["git", "init", "--quiet"], repo)
    # The remote, for this clone only, a local directory: DVC loads the default remote's
    # filesystem for `dvc plots`, and S3's needs dvc-s3 (retrain.yml installs it).
    remote = tmp_path_factory.mktemp("dvc-remote")
    run([*DVC, "remote", "modify", "--local", "storage", "url", str(remote)], repo)
    run([*DVC, "commit", "--force", "data.dvc"], repo)
    run(["git", "add", "--all"], repo)
    run(["git", "commit", "--quiet", "--message", "pipeline"], repo)
    return repo


@pytest.fixture(scope="module")
def first_repro(clone: Path) -> subprocess.CompletedProcess[str]:
    return run([*DVC, "repro"], clone)


@pytest.mark.slow
def test_repro_exports_the_models_from_the_data(
    clone: Path, first_repro: subprocess.CompletedProcess[str]
) -> None:
    assert "Running stage 'prepare'" in first_repro.stdout
    assert "Running stage 'export'" in first_repro.stdout
    data_sha = csv_sha256(clone / "data" / "raw" / "dataset_SCL.csv.gz")
    for name in MODEL_FILES:
        assert (clone / "models" / name).stat().st_size > 0
    for card_name in ("delay-minimal.json", "delay-full.json"):
        card = json.loads((clone / "models" / card_name).read_text())
        assert card["data"]["csv_sha256"] == data_sha  # from this data, not the committed ones
        assert card["data"]["rows"] == 2000
    assert json.loads((clone / "build" / "data.json").read_text())["csv_sha256"] == data_sha
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"prepare", "export"}
    # `dvc metrics show` reads what the export wrote, for both models; the figures are plots.
    metrics = json.loads(run([*DVC, "metrics", "show", "--json"], clone).stdout)
    shown = metrics[""]["data"][f"reports/{METRICS_FILE}"]["data"]
    assert set(shown) == {"delay-minimal", "delay-full"}
    plots = run([*DVC, "plots", "show", "--json"], clone).stdout
    assert "reports/figures/roc.png" in plots
    # The models stay git's (cache: false): DVC did not ignore them.
    ignored = run(["git", "check-ignore", "models/delay-full.onnx"], clone, check=False)
    assert ignored.returncode == 1


@pytest.mark.slow
def test_second_repro_is_a_no_op(
    clone: Path, first_repro: subprocess.CompletedProcess[str]
) -> None:
    before = {name: (clone / "models" / name).stat().st_mtime_ns for name in MODEL_FILES}
    second = run([*DVC, "repro"], clone)
    assert "Data and pipelines are up to date." in second.stdout
    assert "Running stage" not in second.stdout
    after = {name: (clone / "models" / name).stat().st_mtime_ns for name in MODEL_FILES}
    assert after == before


@pytest.mark.slow
def test_a_change_to_training_code_marks_only_the_export_stale(
    clone: Path, first_repro: subprocess.CompletedProcess[str]
) -> None:
    candidates = clone / "train" / "candidates.py"
    original = candidates.read_text()
    try:
        candidates.write_text(original + "\n# a change\n")
        status = json.loads(run([*DVC, "status", "--json"], clone).stdout)
    finally:
        candidates.write_text(original)
    assert set(status) == {"export"}
    assert json.loads(run([*DVC, "status", "--json"], clone).stdout) == {}


@pytest.mark.slow
def test_other_data_stops_the_pipeline_before_the_export(
    clone: Path, first_repro: subprocess.CompletedProcess[str]
) -> None:
    data = clone / "data" / "raw" / "dataset_SCL.csv.gz"
    original = data.read_bytes()
    models_before = {name: (clone / "models" / name).read_bytes() for name in MODEL_FILES}
    try:
        write_csv(data, synthetic_rows(2000, seed=8))
        failed = run([*DVC, "repro"], clone, check=False)
    finally:
        data.write_bytes(original)
    assert failed.returncode != 0
    assert "set data.sha256" in failed.stdout + failed.stderr
    assert "Running stage 'export'" not in failed.stdout
    assert {name: (clone / "models" / name).read_bytes() for name in MODEL_FILES} == models_before

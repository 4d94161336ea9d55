"""train/provenance.py: the revision, date and machine a report names."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from train import provenance
from train.provenance import code_revision, machine, run_stamp


def test_a_revision_is_uncommitted_for_changed_code_not_for_the_pipeline_outputs(
    tmp_path: Path,
) -> None:
    """The retrain workflow's `dvc commit` and `make openapi` rewrite dvc.lock and
    docs/openapi.json before `make model-slices`: its report must still name clean code."""

    def git(*arguments: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *arguments], check=True, capture_output=True)

    files = ["train/code.py", "dvc.lock", "docs/openapi.json", "models/m.json", "reports/r.md"]
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("before\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    for name in files[1:]:
        (tmp_path / name).write_text("after\n")
    clean = code_revision(tmp_path)
    assert clean.startswith("`")
    assert "uncommitted" not in clean
    (tmp_path / "train" / "code.py").write_text("after\n")
    assert code_revision(tmp_path) == f"{clean} with uncommitted changes"


def test_the_machine_is_this_one() -> None:
    uname, cpu, cores = machine()
    assert uname.startswith("Linux")
    assert cpu
    assert 1 <= cores <= (os.cpu_count() or 1)


def test_a_run_stamp_names_the_date_in_utc_and_the_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(provenance, "machine", lambda: ("Linux host", "AMD EPYC", 2))
    stamp = run_stamp(datetime(2026, 12, 8, 0, 40, tzinfo=UTC))
    assert stamp == "2026-12-08 00:40 UTC, on 2 cores of AMD EPYC"

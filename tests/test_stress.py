"""benchmarks.stress's revision label, shared by every benchmark's report."""

from __future__ import annotations

import subprocess
from pathlib import Path

from benchmarks.stress import commit, revision

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_label_is_head_and_whether_tracked_files_differ() -> None:
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    assert commit() == (_git("rev-parse", "--short", "HEAD"), dirty)
    assert commit(short=False) == (_git("rev-parse", "HEAD"), dirty)
    head = _git("rev-parse", "--short", "HEAD")
    assert revision() == (f"{head} + uncommitted changes" if dirty else head)

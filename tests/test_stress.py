"""benchmarks.stress's revision label, shared by every benchmark's report."""

from __future__ import annotations

import subprocess
from pathlib import Path

from benchmarks.stress import Clocks, commit, cpu_use, revision

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


def test_the_cpu_spent_between_two_readings_is_split_among_server_wrk_and_the_rest() -> None:
    before = Clocks(server=10.0, children=1.0, machine=100.0)
    after = Clocks(server=17.5, children=21.0, machine=150.0)
    spent = cpu_use(before, after, same_workers=True)
    assert (spent.server_s, spent.wrk_s, spent.other_s) == (7.5, 20.0, 22.5)
    # a worker replaced meanwhile: its CPU went with it, so the server's is unknown
    replaced = cpu_use(before, after, same_workers=False)
    assert (replaced.server_s, replaced.other_s) == (None, 30.0)
    gone = cpu_use(before, Clocks(server=None, children=21.0, machine=150.0), same_workers=True)
    assert gone.server_s is None

"""Which code, when and on what machine a report's figures were produced: a timing read without
its machine, or a figure without its revision, cannot be compared with another."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIPELINE_OUTPUTS = ("models", "reports", "dvc.lock", "docs/openapi.json")
"""What `make export` and the retrain workflow's steps after it rewrite: a change there is the
pipeline's output, not uncommitted code (the workflow's `dvc commit` rewrites dvc.lock before
its `make model-slices`, whose report a test requires to be of committed code)."""


def code_revision(root: Path = ROOT) -> str:
    """The commit the training code was at, and whether its tracked files (the pipeline's
    outputs aside) had uncommitted changes."""

    def git(*arguments: str) -> str:
        run = subprocess.run(["git", *arguments], cwd=root, capture_output=True, text=True)
        return run.stdout.strip() if run.returncode == 0 else ""

    head = git("rev-parse", "--short=7", "HEAD")
    if not head:
        return "unknown (not a git checkout)"
    outputs = [f":!{path}" for path in PIPELINE_OUTPUTS]
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", *outputs)
    return f"`{head}`" + (" with uncommitted changes" if changed else "")


def machine() -> tuple[str, str, int]:
    """`uname -a`, the CPU model from /proc/cpuinfo and the CPUs this process may run on."""
    uname = subprocess.run(["uname", "-a"], capture_output=True, text=True, check=False)
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return uname.stdout.strip() or platform.platform(), model, len(os.sched_getaffinity(0))


def run_stamp(now: datetime | None = None) -> str:
    """When and where this run is, as a report's first lines state it: the date (UTC), the CPU
    model and the cores it may use."""
    _, cpu, cores = machine()
    when = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    return f"{when}, on {cores} cores of {cpu}"

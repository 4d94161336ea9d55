"""Workers that leave on their own after gunicorn's `--max-requests`: recycled, not lost.

The master counts a worker that died without its asking as lost (`workers_lost_total`, the
`LatamDelayWorkersLost` alert) and, if it lived under crash_loop.EARLY, as one that failed to
start. A worker that reached its request cap exits too, unasked, and gunicorn keeps no exit status
for the master's hooks: every recycle counted as a crash, and a small cap under heavy traffic
paused the next fork as a crash loop. So such a worker leaves a mark in the run directory as it
goes, and the master reads it before it counts the dead."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from app.server.run_dirs import private_directory

MARKS = "recycled"
"""The run directory's folder of marks, one empty file per recycled worker's pid."""


def mark(run_dir: Path, pid: int | None = None) -> None:
    """This worker (or `pid`) leaves because it reached its request cap. An OSError is raised:
    the worker logs it and is counted lost, as before."""
    marks = private_directory(run_dir / MARKS)
    (marks / str(os.getpid() if pid is None else pid)).touch()


def collect(run_dir: Path) -> list[int]:
    """The pids of the workers marked recycled since the last call; their marks removed."""
    try:
        names = os.listdir(run_dir / MARKS)
    except OSError:
        return []
    pids = []
    for name in names:
        with contextlib.suppress(OSError):
            os.unlink(run_dir / MARKS / name)
        if name.isdigit():
            pids.append(int(name))
    return pids

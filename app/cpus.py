"""How many CPUs this process may use: the default worker count.

`os.cpu_count()` is the host's cores: a container limited to 2 CPUs on a 64-core node would
start 64 workers, each loading the models and fighting over the same 2 CPUs' worth of time.
What bounds this process is the smaller of its affinity mask (cpusets, `taskset`) and its
cgroup's CPU quota (Kubernetes `limits.cpu`, `docker --cpus`), v2 or v1, rounded up.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def available(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """At least 1."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = cgroup_quota(root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus or quota, quota)
    return max(1, cpus or 1)


def cgroup_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int | None:
    """The tightest CPU quota on this process's cgroup or any of its ancestors, in whole CPUs
    (rounded up); None when there is none or it cannot be read."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one unified hierarchy
            limits += _walk(root, path, _v2_limit)
        elif "cpu" in controllers.split(","):
            limits += _walk(root / controllers, path, _v1_limit)
    return min(limits) if limits else None


def _walk(mount: Path, path: str, read: Callable[[Path], int | None]) -> list[int]:
    """Limits found at the cgroup's directory and its ancestors, and at the mount itself (a
    container sees its own cgroup mounted there, its path in /proc then being the host's)."""
    directories = {mount}
    relative = Path(path.lstrip("/"))
    for depth in range(len(relative.parts) + 1):
        directories.add(mount.joinpath(*relative.parts[:depth]))
    found = []
    for directory in directories:
        limit = read(directory)
        if limit is not None:
            found.append(limit)
    return found


def _v2_limit(directory: Path) -> int | None:
    try:
        quota, period = (directory / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else _whole(int(quota), int(period))


def _v1_limit(directory: Path) -> int | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 else _whole(quota, period)


def _whole(quota: int, period: int) -> int | None:
    return math.ceil(quota / period) if period > 0 else None

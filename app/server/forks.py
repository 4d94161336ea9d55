"""The master's forks: one the kernel refuses costs that fork, not the server.

gunicorn's master forks a worker in place of one that died, new workers on SIGHUP, and a new
master on SIGUSR2. A fork the kernel refuses (`EAGAIN` at a process limit: a container's
`pids.max`, a systemd unit's `TasksMax`; `ENOMEM`) raised out of its main loop, and the master
stopped every worker, those serving included: one worker's crash at the limit took the whole
server down (reports/reliability.md). `guard_forks` makes such a refusal one log line: the
workers that run serve on, and gunicorn's loop tries the missing worker again about every
second (its signal wait), until the kernel lets it.

It wraps two methods of gunicorn's Arbiter (`spawn_worker`, `reexec`) on the one instance;
undocumented names, so pyproject bounds gunicorn to the majors tests/test_forks.py runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def guard_forks(arbiter: Any) -> None:
    """From now on, a worker or a new master that cannot be made is logged, not raised."""
    spawn: Callable[[], int] = arbiter.spawn_worker
    reexec: Callable[[], None] = arbiter.reexec
    refused = 0

    def spawn_worker() -> int | None:
        nonlocal refused
        try:
            pid = spawn()
        except OSError as error:
            if not refused:
                arbiter.log.error(
                    "worker not started: %s; %d of %d workers serve, started again when the "
                    "system lets it (a process limit: a container's pids.max, a unit's TasksMax?)",
                    error,
                    len(arbiter.WORKERS),
                    arbiter.num_workers,
                )
            refused += 1
            return None
        if refused:
            arbiter.log.warning("worker started again, after %d refused tries", refused)
            refused = 0
        return pid

    def reexec_or_refuse() -> None:
        try:
            reexec()
        except OSError as error:
            arbiter.log.error("SIGUSR2 upgrade not started: %s; this master serves on", error)

    arbiter.spawn_worker = spawn_worker
    arbiter.reexec = reexec_or_refuse

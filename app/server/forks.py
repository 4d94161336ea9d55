"""The master's forks: one the kernel refuses costs that fork, not the server.

gunicorn's master forks a worker in place of one that died, new workers on SIGHUP, and a new
master on SIGUSR2. A fork the kernel refuses (`EAGAIN` at a process limit: a container's
`pids.max`, a systemd unit's `TasksMax`; `ENOMEM`) raised out of its main loop, and the master
stopped every worker, those serving included: one worker's crash at the limit took the whole
server down (reports/reliability.md). `guard_forks` makes such a refusal one log line: the
workers that run serve on, and gunicorn's loop tries the missing worker again about every
second (its signal wait), until the kernel lets it. A descriptor limit too low for a worker
(app.descriptors.WORKER_DESCRIPTORS: the master's, lowered while it runs) is such a refusal too:
every worker forked under it crashed at boot, and gunicorn forked the next at once.

It wraps two methods of gunicorn's Arbiter (`spawn_worker`, `reexec`) on the one instance;
undocumented names, so pyproject bounds gunicorn to the majors tests/test_forks.py runs.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

from app.descriptors import require_worker_descriptors

PROCESS_LIMIT = " (a process limit: a container's pids.max, a unit's TasksMax?)"
"""What an EAGAIN most likely means, said in its log line (not in others': misleading there)."""


def guard_forks(arbiter: Any) -> None:
    """From now on, a worker or a new master that cannot be made is logged, not raised."""
    spawn: Callable[[], int] = arbiter.spawn_worker
    reexec: Callable[[], None] = arbiter.reexec
    refused = 0

    def spawn_worker() -> int | None:
        nonlocal refused
        try:
            require_worker_descriptors()  # the worker inherits the master's limit
            pid = spawn()
        except OSError as error:
            if not refused:
                arbiter.log.error(
                    "worker not started: %s; %d of %d workers serve, started again when the "
                    "system lets it%s",
                    error,
                    len(arbiter.WORKERS),
                    arbiter.num_workers,
                    PROCESS_LIMIT if error.errno == errno.EAGAIN else "",
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

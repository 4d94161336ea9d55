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

A SIGHUP whose new workers are all refused leaves the old ones serving, and says so. gunicorn's
reload then waited `graceful_timeout` (20 s) for old workers it had not told to stop, handling
no signal (a SIGTERM waited that long), and the old workers, once told to stop, waited their
hand-off bound (app.server.handoff) for successors that never came: neither waits now.

Workers that die as they start are forked again after a growing pause (app.server.crash_loop),
not at once, in a loop that took every core from the workers serving.

It wraps four methods of gunicorn's Arbiter (`spawn_worker`, `kill_worker`, `reexec`, `reload`)
on the one instance; undocumented names, so pyproject bounds gunicorn to the majors
tests/test_forks.py runs.
"""

from __future__ import annotations

import errno
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from app.descriptors import require_worker_descriptors
from app.server.crash_loop import StartFailures

PROCESS_LIMIT = " (a process limit: a container's pids.max, a unit's TasksMax?)"
"""What an EAGAIN most likely means, said in its log line (not in others': misleading there)."""
STOPPING_SIGNALS = frozenset(
    {signal.SIGTERM, signal.SIGQUIT, signal.SIGINT, signal.SIGKILL, signal.SIGABRT}
)
"""What gunicorn's kill_worker sends a worker it stops (not SIGUSR1's log reopening, say)."""


@dataclass
class ReloadForks:
    """The forks of the SIGHUP under way: gunicorn's reload forks `workers` new workers in a
    row (its configuration's, read again by the reload), before it tells any old worker to stop."""

    workers: int = 0  # known at the reload's first fork
    started: int = 0
    refused: int = 0
    graceful_timeout: int | None = None  # gunicorn's, while this reload's wait is cut short

    @property
    def forked(self) -> bool:
        """Every new worker tried (a worker gunicorn's loop forks later is not the reload's)."""
        return self.started + self.refused >= self.workers


def guard_forks(
    arbiter: Any,
    successors: Callable[[int], None] = lambda workers: None,
    reloaded: Callable[[bool], None] = lambda started: None,
    lost: Callable[[str], None] = lambda cause: None,
    recycled: Callable[[], Iterable[int]] = lambda: (),
) -> None:
    """From now on, a worker or a new master that cannot be made is logged, not raised.
    At each fork a reload is refused, `successors` is told how many of its new workers can
    still start (app.server.handoff.started); once it has tried them all, `reloaded` is told
    whether any started. Both before gunicorn tells any old worker to stop. `lost` is told of
    each worker lost without the operator's asking: one that died unbidden ("crashed", seen at
    the fork that replaces it) and one gunicorn kills as hung ("timeout": SIGABRT, its
    murder_workers'), so that a crash loop inside a pod that stays ready can be alerted on.
    `recycled` gives the workers that left at their request cap (app.server.recycle): asked to,
    as if the master had stopped them."""
    spawn: Callable[[], int] = arbiter.spawn_worker
    kill: Callable[[int, int], None] = arbiter.kill_worker
    reexec: Callable[[], None] = arbiter.reexec
    reload: Callable[[], None] = arbiter.reload
    refused = 0
    reloading: ReloadForks | None = None
    failures = StartFailures()

    def spawn_worker() -> int | None:
        nonlocal refused
        if reloading is not None and not reloading.workers:
            reloading.workers = arbiter.cfg.workers
        forks = reloading if reloading is not None and not reloading.forked else None
        now = time.monotonic()
        for pid in recycled():
            failures.told(pid)
        crashed = failures.crashed
        died_starting = failures.reaped(arbiter.WORKERS, now)
        for _ in range(failures.crashed - crashed):
            lost("crashed")
        for pid, lived in died_starting:
            if failures.pause:
                arbiter.log.error(
                    "worker %s died %.1f s after its fork, %d in a row: workers fail to start; "
                    "the next one is forked %.0f s after the last (the others serve)",
                    pid,
                    lived,
                    failures.in_a_row,
                    failures.pause,
                )
        if reloading is None and failures.wait(now) > 0:
            return None  # gunicorn's loop asks again about every second
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
            if forks is not None:
                forks.refused += 1
                successors(forks.workers - forks.refused)
                tried(forks)
            return None
        if refused:
            arbiter.log.warning("worker started again, after %d refused tries", refused)
            refused = 0
        failures.forked(pid, now)
        if forks is not None:
            forks.started += 1
            tried(forks)
        return pid

    def tried(forks: ReloadForks) -> None:
        if not forks.forked:
            return
        reloaded(forks.started > 0)
        if not forks.started:
            # no new worker, so no old one told to stop: nothing for gunicorn's reload to wait for
            forks.graceful_timeout = arbiter.cfg.graceful_timeout
            arbiter.cfg.set("graceful_timeout", 0)

    def kill_worker(pid: int, sig: int) -> None:
        if sig in STOPPING_SIGNALS:
            failures.told(pid)
        if sig == signal.SIGABRT:  # gunicorn's murder_workers: no heartbeat for `timeout` s
            lost("timeout")
        kill(pid, sig)

    def reload_or_keep_serving() -> None:
        nonlocal reloading
        reloading = forks = ReloadForks()
        failures.restart()
        try:
            reload()
        finally:
            reloading = None
            if forks.graceful_timeout is not None:
                arbiter.cfg.set("graceful_timeout", forks.graceful_timeout)
                arbiter.log.error(
                    "SIGHUP: no new worker started; the %d old workers serve on, with the models "
                    "they loaded (SIGHUP again once the system lets workers start)",
                    len(arbiter.WORKERS),
                )

    def reexec_or_refuse() -> None:
        try:
            reexec()
        except OSError as error:
            arbiter.log.error("SIGUSR2 upgrade not started: %s; this master serves on", error)

    arbiter.spawn_worker = spawn_worker
    arbiter.kill_worker = kill_worker
    arbiter.reexec = reexec_or_refuse
    arbiter.reload = reload_or_keep_serving

"""Workers that die as they start: forked again after a growing pause, not at once.

gunicorn forks a worker in place of one that died as soon as it has reaped it, with no pause,
whatever killed it. A worker that cannot start (a process limit that admits the fork but not its
threads: grpcio's `SIGSEGV`; a broken native library; a boot that overflows a memory limit) died
and was forked again 7 to 40 times a second, each loading the models: the two cores of a small
pod went to boots, and the workers that did serve answered late (reports/reliability.md).

A worker that exits within `EARLY` seconds of its fork without the master having told it to
(gunicorn's kill_worker: a reload, a shutdown, a timeout) died starting. From the second such
death in a row, the next fork waits `pause` seconds from the last one: 1, 2, 4 … up to `LONGEST`.
A worker that dies after `EARLY`, or a SIGHUP (the operator's new try), starts the count again.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

EARLY = 10.0
"""Seconds after its fork within which a worker's death counts as a failure to start (a worker
boots in about 0.5 s of CPU; 10 s leaves room on a loaded machine)."""
LONGEST = 30.0
"""The longest pause between forks (Kubernetes' CrashLoopBackOff grows to minutes; a worker's
slot should not stay empty that long for a cause that may pass)."""


@dataclass
class StartFailures:
    """The master's record of its workers' lives: when each was forked, which it told to stop."""

    forked_at: dict[int, float] = field(default_factory=dict)
    told_to_stop: set[int] = field(default_factory=set)
    in_a_row: int = 0
    last_fork: float | None = None
    crashed: int = 0
    """Workers that died without being told to stop, starting or not, since the master started."""

    def forked(self, pid: int, now: float) -> None:
        self.forked_at[pid] = now
        self.last_fork = now

    def told(self, pid: int) -> None:
        if pid in self.forked_at:  # kept until it is seen gone
            self.told_to_stop.add(pid)

    def restart(self) -> None:
        """A SIGHUP: the operator's new try is not held back by the old failures."""
        self.in_a_row = 0

    def reaped(self, alive: Collection[int], now: float) -> list[tuple[int, float]]:
        """Counts the workers no longer `alive` (gunicorn's WORKERS, once it has reaped them):
        those that died starting, with the seconds each lived, oldest first."""
        died_starting = []
        for pid, forked_at in sorted(self.forked_at.items(), key=lambda item: item[1]):
            if pid in alive:
                continue
            del self.forked_at[pid]
            if pid in self.told_to_stop:
                self.told_to_stop.discard(pid)
                continue
            self.crashed += 1
            if now - forked_at < EARLY:
                self.in_a_row += 1
                died_starting.append((pid, now - forked_at))
            else:
                self.in_a_row = 0
        return died_starting

    @property
    def pause(self) -> float:
        """Seconds the next fork waits after the last one (0: none)."""
        if self.in_a_row < 2:
            return 0.0
        return min(LONGEST, 2.0 ** (self.in_a_row - 2))

    def wait(self, now: float) -> float:
        """Seconds left before the next fork may start."""
        if self.last_fork is None:
            return 0.0
        return max(0.0, self.last_fork + self.pause - now)

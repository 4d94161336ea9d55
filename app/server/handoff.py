"""A reload's hand-off of the gRPC port from the old workers to the new ones.

Every worker binds GRPC_BIND itself (app.grpc.server), and only once its models are ready. On
SIGHUP gunicorn starts the new workers and sends SIGTERM to the old ones at once, so if an old
worker closed its gRPC listener then, no worker would listen for the ~0.5 s the new ones take to
load, and new connections would be refused. Instead, an old worker told to stop by a reload goes
on serving as usual until the new generation's workers all listen, then stops as before.

The master numbers its generations of workers: `advance` (gunicorn.conf.py's on_reload, called
before gunicorn starts the new workers and stops the old ones) counts one more in the
environment the new workers inherit, and records it, with how many workers gunicorn will start,
in the server run's directory. A worker writes a marker there once its gRPC server listens
(`listening`) and removes it when it stops listening (`leaving`; gunicorn.conf.py's child_exit
removes the marker of a worker that died before). A stopping worker waits (`handed_over`) only
when the master has recorded a generation newer than its own: a plain shutdown, with no new
generation coming, does not wait. The wait is bounded, so new workers that never listen (they
failed to boot, or hang) hold the old ones back by at most that bound. A file that cannot be
written or removed costs the hand-off only, never the server: these calls run in the master's
hooks and in a worker's start, where an error would stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

from app.server.run_dirs import private_directory

RUN_DIR_ENV = "LATAM_DELAY_RUN_DIR"
"""This server run's directory (snapshots, hand-off markers), made by gunicorn.conf.py."""
GENERATION_ENV = "LATAM_DELAY_GENERATION"
"""The generation of workers the master forks now: 0 at start, one more on every SIGHUP."""
CURRENT = "generation"
"""The file in the hand-off directory where the master records its newest generation."""
POLL_SECONDS = 0.02


def advance(directory: Path, workers: int, environ: MutableMapping[str, str] = os.environ) -> int:
    """A reload: the workers forked from now on are the next generation, `workers` of them."""
    generation = int(environ.get(GENERATION_ENV, "0")) + 1
    environ[GENERATION_ENV] = str(generation)
    _record(directory, generation, workers)
    return generation


def started(directory: Path, workers: int, environ: MutableMapping[str, str] = os.environ) -> None:
    """A reload some of whose workers the system refused to fork (app.server.forks): the old
    workers wait for the `workers` that started only. They waited their whole bound for the
    others, which gunicorn does not fork again while the old ones fill the count."""
    _record(directory, int(environ.get(GENERATION_ENV, "0")), workers)


def _record(directory: Path, generation: int, workers: int) -> None:
    with contextlib.suppress(OSError):
        private_directory(directory)
        written = directory / f".{CURRENT}.{os.getpid()}"
        written.write_text(f"{generation} {workers}\n")
        os.replace(written, directory / CURRENT)  # a worker never reads half a record


def forget(directory: Path, pid: int) -> None:
    """Removes the marker of a worker that is gone (gunicorn.conf.py's child_exit)."""
    with contextlib.suppress(OSError):
        for marker in directory.glob(f"ready-*-{pid}"):
            marker.unlink(missing_ok=True)


@dataclass(frozen=True)
class Handoff:
    """One worker's side of the hand-off."""

    directory: Path
    generation: int
    pid: int

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] = os.environ) -> Handoff | None:
        """None outside a server run of gunicorn.conf.py (a test's or a benchmark's server)."""
        run_dir = environ.get(RUN_DIR_ENV)
        if not run_dir:
            return None
        return cls(Path(run_dir) / "handoff", int(environ.get(GENERATION_ENV, "0")), os.getpid())

    @property
    def marker(self) -> Path:
        return self.directory / f"ready-{self.generation}-{self.pid}"

    def listening(self) -> None:
        with contextlib.suppress(OSError):
            private_directory(self.directory)
            self.marker.touch()

    def leaving(self) -> None:
        with contextlib.suppress(OSError):
            self.marker.unlink(missing_ok=True)

    def successors(self) -> int | None:
        """How many workers of a newer generation are coming, or None when none is (the master
        has not reloaded since this worker was forked)."""
        try:
            generation, workers = map(int, (self.directory / CURRENT).read_text().split())
        except (OSError, ValueError):
            return None
        return workers if generation > self.generation else None

    def newer_listening(self) -> int:
        """Workers of a newer generation whose gRPC server listens."""
        count = 0
        for marker in self.directory.glob("ready-*-*"):  # none when it cannot be read
            generation = marker.name.split("-")[1]
            count += generation.isdigit() and int(generation) > self.generation
        return count

    async def handed_over(self, timeout: float) -> float:
        """Returns once a reload's new workers all listen (at once on a plain shutdown), or after
        `timeout` seconds; the seconds it waited."""
        successors = self.successors()
        started = time.monotonic()
        if successors is None:
            return 0.0
        deadline = started + timeout
        while self.newer_listening() < successors and time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
        return time.monotonic() - started

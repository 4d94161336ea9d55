"""app.server.handoff: a reload's old worker waits for the new generation's gRPC listeners, for
at most its bound; a plain shutdown does not wait. tests/test_grpc_server.py reloads a real
server under fresh connections."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from app.server.handoff import GENERATION_ENV, Handoff, advance, forget, started

BOUND = 2.0


def worker(directory: Path, environ: dict[str, str], pid: int) -> Handoff:
    """A worker forked now, as Handoff.from_env makes it in the worker."""
    return Handoff(directory, int(environ.get(GENERATION_ENV, "0")), pid)


def test_a_reload_counts_a_new_generation_for_the_workers_forked_after_it(
    tmp_path: Path,
) -> None:
    environ: dict[str, str] = {}
    old = worker(tmp_path, environ, 10)
    assert old.successors() is None  # no reload yet: a SIGTERM now is a shutdown
    assert advance(tmp_path, 3, environ) == 1
    new = worker(tmp_path, environ, 20)
    assert (old.generation, new.generation) == (0, 1)
    assert old.successors() == 3
    assert new.successors() is None
    assert advance(tmp_path, 2, environ) == 2
    assert old.successors() == new.successors() == 2


def test_only_listening_workers_of_a_newer_generation_count(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    old = worker(tmp_path, environ, 10)
    old.listening()
    advance(tmp_path, 2, environ)
    new, newer = worker(tmp_path, environ, 20), worker(tmp_path, environ, 21)
    assert old.newer_listening() == 0  # its own marker does not count
    new.listening()
    newer.listening()
    assert old.newer_listening() == 2
    assert new.newer_listening() == 0  # a worker of the same generation is no successor
    newer.leaving()
    forget(tmp_path, 20)  # the master's child_exit, for a worker that died listening
    assert old.newer_listening() == 0
    assert old.marker.exists()


def test_a_shutdown_does_not_wait(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    advance(tmp_path, 2, environ)
    current = worker(tmp_path, environ, 20)  # forked after the last reload
    started = time.monotonic()
    assert asyncio.run(current.handed_over(BOUND)) == 0.0
    assert time.monotonic() - started < BOUND / 4


def test_a_reloads_old_worker_waits_until_all_new_workers_listen(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    old = worker(tmp_path, environ, 10)
    advance(tmp_path, 2, environ)
    new = [worker(tmp_path, environ, pid) for pid in (20, 21)]

    async def reload() -> tuple[float, float]:
        waiting = asyncio.create_task(old.handed_over(BOUND))
        await asyncio.sleep(0.2)
        new[0].listening()
        await asyncio.sleep(0.2)
        assert not waiting.done()  # one of two is not enough
        new[1].listening()
        listening_at = time.monotonic()
        waited = await waiting
        return waited, time.monotonic() - listening_at

    waited, after = asyncio.run(reload())
    assert 0.4 <= waited < BOUND / 2
    assert after < 0.2


def test_new_workers_that_never_listen_hold_the_old_one_for_the_bound_only(
    tmp_path: Path,
) -> None:
    environ: dict[str, str] = {}
    old = worker(tmp_path, environ, 10)
    advance(tmp_path, 2, environ)
    worker(tmp_path, environ, 20).listening()  # the other one failed to boot
    started = time.monotonic()
    waited = asyncio.run(old.handed_over(BOUND))
    assert BOUND <= waited < BOUND + 0.5
    assert time.monotonic() - started < BOUND + 0.5


def test_a_reloads_old_worker_waits_for_the_new_workers_that_started_only(
    tmp_path: Path,
) -> None:
    """The system refused the others (app.server.forks): they never come, and the old worker
    waited its whole bound for them."""
    environ: dict[str, str] = {}
    old = worker(tmp_path, environ, 10)
    advance(tmp_path, 2, environ)
    started(tmp_path, 1, environ)
    assert old.successors() == 1
    worker(tmp_path, environ, 20).listening()
    assert asyncio.run(old.handed_over(BOUND)) < BOUND / 4
    started(tmp_path, 0, environ)  # none did
    assert asyncio.run(old.handed_over(BOUND)) < BOUND / 4
    assert worker(tmp_path, environ, 21).generation == 1  # later forks are still the new ones


def test_outside_a_server_run_there_is_no_handoff(tmp_path: Path) -> None:
    assert Handoff.from_env({}) is None
    handoff = Handoff.from_env({"LATAM_DELAY_RUN_DIR": str(tmp_path), GENERATION_ENV: "4"})
    assert handoff is not None
    assert (handoff.directory, handoff.generation) == (tmp_path / "handoff", 4)


def test_a_run_directory_that_cannot_be_written_costs_the_handoff_only(tmp_path: Path) -> None:
    """These calls run in gunicorn's hooks and a worker's start, where an error would stop it."""
    directory = tmp_path / "handoff"
    directory.write_text("a file where the directory should be")
    environ: dict[str, str] = {}
    old = worker(directory, environ, 10)
    old.listening()
    assert advance(directory, 2, environ) == 1
    assert environ[GENERATION_ENV] == "1"
    assert old.successors() is None  # so it does not wait
    old.leaving()
    forget(directory, 10)

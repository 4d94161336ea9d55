"""app.server.crash_loop: which deaths count as failures to start, and the pauses they earn.
tests/test_forks.py runs it inside gunicorn's worker management and the real server."""

from __future__ import annotations

from app.server.crash_loop import EARLY, LONGEST, StartFailures


def died_starting(failures: StartFailures, pid: int, at: float, lived: float = 0.5) -> None:
    failures.forked(pid, at)
    assert failures.reaped(set(), at + lived) == [(pid, lived)]


def test_from_the_second_death_in_a_row_each_pause_doubles_up_to_the_longest() -> None:
    failures = StartFailures()
    pauses = []
    for turn in range(10):
        died_starting(failures, 100 + turn, at=100.0 * turn)
        pauses.append(failures.pause)
    assert pauses == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, LONGEST, LONGEST, LONGEST, LONGEST]
    assert failures.wait(now=900.0 + 5.0) == LONGEST - 5.0  # from the last fork, at 900
    assert failures.wait(now=900.0 + LONGEST) == 0.0


def test_one_death_alone_costs_no_pause() -> None:
    """An OOM kill, an operator's kill: gunicorn's immediate fork, as before."""
    failures = StartFailures()
    died_starting(failures, 10, at=0.0)
    assert (failures.pause, failures.wait(now=0.5)) == (0.0, 0.0)


def test_workers_the_master_stopped_are_no_failures() -> None:
    """A reload's or a SIGHUP storm's young workers, a worker timed out while it booted."""
    failures = StartFailures()
    for pid in (1, 2, 3):
        failures.forked(pid, 0.0)
        failures.told(pid)
    assert failures.reaped(set(), 0.5) == []
    assert failures.in_a_row == 0
    failures.told(4)  # gone before, or no worker of this master's
    assert failures.told_to_stop == set()


def test_a_worker_that_lived_past_its_start_ends_the_run() -> None:
    failures = StartFailures()
    died_starting(failures, 1, at=0.0)
    died_starting(failures, 2, at=1.0)
    failures.forked(3, 2.0)
    assert failures.reaped({3}, 3.0) == []  # alive: nothing yet
    assert failures.in_a_row == 2
    assert failures.reaped(set(), 2.0 + EARLY) == []
    assert (failures.in_a_row, failures.pause) == (0, 0.0)


def test_a_sighup_starts_the_count_again() -> None:
    failures = StartFailures()
    for turn in range(4):
        died_starting(failures, turn, at=float(turn))
    failures.restart()
    assert (failures.pause, failures.wait(now=3.5)) == (0.0, 0.0)


def test_workers_alive_are_left_alone_and_deaths_come_oldest_first() -> None:
    failures = StartFailures()
    for pid, at in ((7, 2.0), (5, 1.0), (9, 3.0)):
        failures.forked(pid, at)
    assert failures.reaped({9}, 4.0) == [(5, 3.0), (7, 2.0)]
    assert list(failures.forked_at) == [9]

"""app.server.clock: gunicorn's own Arbiter.stop waits `graceful_timeout` s of the monotonic clock
for its workers, whatever the wall clock does meanwhile."""

from __future__ import annotations

import queue
import signal
import time
from types import MethodType, SimpleNamespace
from typing import Any

import gunicorn.arbiter
import pytest
from gunicorn.arbiter import Arbiter

from app.server.clock import steady_stop

GRACE = 0.5


def stopping_arbiter(signals: list[tuple[int, float]]) -> Any:
    """What Arbiter.stop reads of its arbiter, with one worker that never exits."""
    arbiter = SimpleNamespace(
        LISTENERS=[],
        WORKERS={4242: object()},
        SIG_QUEUE=queue.Queue(),
        reexec_pid=0,
        master_pid=0,
        systemd=False,
        dirty_arbiter_pid=0,
        cfg=SimpleNamespace(reuse_port=False, graceful_timeout=GRACE),
        kill_workers=lambda sig: signals.append((sig, time.monotonic())),
        reap_workers=lambda: None,
        reap_dirty_arbiter=lambda: None,
    )
    arbiter.stop = MethodType(Arbiter.stop, arbiter)
    return arbiter


@pytest.mark.parametrize("step", [86400.0, -5.0], ids=["a day forward", "5 s back"])
def test_a_stop_waits_its_grace_whatever_the_wall_clock_does(
    monkeypatch: pytest.MonkeyPatch, step: float
) -> None:
    """The wall clock steps once the workers are told to stop (a drain under way): stepped
    forward, gunicorn SIGKILLed them at once (requests in flight reset); stepped back, it left
    a hung one for the step's length."""
    signals: list[tuple[int, float]] = []
    arbiter = stopping_arbiter(signals)
    steady_stop(arbiter)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + (step if signals else 0.0))
    started = time.monotonic()
    arbiter.stop()
    assert [sig for sig, _ in signals] == [signal.SIGTERM, signal.SIGKILL]
    assert GRACE <= signals[-1][1] - started < GRACE + 1
    assert gunicorn.arbiter.time is time  # the module's own clock again once stopped

"""The gunicorn master's stop timed on the monotonic clock, as its worker timeouts are.

gunicorn 27's Arbiter.stop (SIGTERM's drain, SIGINT's and SIGQUIT's quick stop, a halt) waits
for the workers until `graceful_timeout` seconds of time.time() have passed, then SIGKILLs
them. A wall clock stepped forward during a drain (an NTP step, a VM's clock set right after a
pause or a migration, an operator's `date -s`) killed every worker at once: the requests in
flight and the idle connections the drain holds open (app.server.protocol) reset, the last
second's counts lost. Stepped back, a worker hung in its drain was left for the step's length.
The worker timeouts (`murder_workers`) are monotonic since gunicorn 20 (benoitc/gunicorn#1967).

`steady_stop` wraps `stop` on the one Arbiter instance, as app.server.forks wraps its forks;
undocumented names, so pyproject bounds gunicorn to the majors tests/test_clock.py runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gunicorn.arbiter


class _MonotonicTime:
    """The `time` module as `gunicorn.arbiter` sees it during `stop`: time.time() is
    time.monotonic(), the rest the module's own (whatever of it a gunicorn version calls)."""

    time = staticmethod(time.monotonic)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


_MONOTONIC = _MonotonicTime()


def steady_stop(arbiter: Any) -> None:
    """From now on, the arbiter's stop waits for its workers `graceful_timeout` s of the
    monotonic clock, whatever the wall clock does meanwhile."""
    stop: Callable[[bool], None] = arbiter.stop

    def monotonic_stop(graceful: bool = True) -> None:
        gunicorn.arbiter.time = _MONOTONIC
        try:
            stop(graceful)
        finally:
            gunicorn.arbiter.time = time

    arbiter.stop = monotonic_stop

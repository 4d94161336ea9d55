"""A bound on the lines one kind of event logs a second, so that a client cannot flood the logs.

The HTTP layer logs each request it refuses (bytes that are not HTTP, a head over the limit, a
head or body not in time) with its request ID: useful for the odd one, but one local client
sending malformed requests back to back wrote 7,223 such lines in 2 s. Past `per_second` lines
in a second the rest are held, counted by kind, and summed up in one line a second later;
/metrics counts every one of them still (route `<refused>`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

WINDOW = 1.0
"""Seconds over which `per_second` lines are let through."""


class LogBudget:
    """At most `per_second` lines a second; what is held past them, one line a second later."""

    def __init__(self, logger: logging.Logger, per_second: int, what: str) -> None:
        self.logger = logger
        self.per_second = per_second
        self.what = what
        self._window_began = float("-inf")
        self._lines = 0
        self._held: Counter[str] = Counter()

    def allows(self, loop: asyncio.AbstractEventLoop, kind: str) -> bool:
        """Whether a line of `kind` may be logged now; if not, it is counted for the summary."""
        now = loop.time()
        if now - self._window_began >= WINDOW:
            self._window_began, self._lines = now, 0
        if self._lines < self.per_second:
            self._lines += 1
            return True
        if not self._held:
            loop.call_later(WINDOW, self._summarise)
        self._held[kind] += 1
        return False

    def _summarise(self) -> None:
        kinds = ", ".join(f"{kind}: {count}" for kind, count in sorted(self._held.items()))
        self.logger.warning(
            "%d more %s within %g s not logged one by one (%s); /metrics counts each",
            sum(self._held.values()),
            self.what,
            WINDOW,
            kinds,
        )
        self._held.clear()

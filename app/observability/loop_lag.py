"""How late a worker's event loop runs what is due. A request that arrives while its worker's
loop is busy (scoring a batch, parsing other requests, a scrape) waits unread in the kernel's
buffers until the loop comes round to it; `http_request_duration_seconds` starts only once the
app is called, so that wait, which its client sees, was in no metric. A timer due every
INTERVAL seconds, run late by the same busy loop, measures it: each run observes how late it
ran, as Node's `eventloop_lag` metrics do."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

INTERVAL = 0.1
"""Seconds between samples: 10 a second a worker, each about 8 us of CPU with the loop's own
round for it (an idle loop's; a busy loop runs it in a round it makes anyway)."""


def sample_every(
    loop: asyncio.AbstractEventLoop, observe: Callable[[float], None], interval: float = INTERVAL
) -> None:
    """From now on, `observe(seconds late)` every `interval` seconds on `loop`; the next sample
    is due `interval` after the last ran, so a stall is observed once, not once per interval it
    lasted (as the requests waiting through it are: each waits once)."""

    def sample(due: float) -> None:
        now = loop.time()
        observe(max(0.0, now - due))
        loop.call_at(now + interval, sample, now + interval)

    due = loop.time() + interval
    loop.call_at(due, sample, due)

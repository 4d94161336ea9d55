"""Issue 10's in-process goal, judged over alternating rounds: `make bench`.

The no-op and the paths compared with it take turns in runs of RUN calls (the order reversed
every other turn), so a stretch of slower machine (the shared cores run at two speeds, a few tenths
of a second each) slows them all alike, and a round's medians are measured over the same
moments. pytest-benchmark times each round; the calls' own timings give each path's median a
round (extra_info "rounds"), which benchmarks.latency_report turns into each round's ratio to
the no-op, their median and range, and a verdict only when every round agrees.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette

from benchmarks.asgi import Message, request_caller
from benchmarks.conftest import JSON, noop_caller, ok_body, predict_body

ROUNDS = 15
CALLS = 2000
"""Timed calls a path a round, in runs of RUN calls (each path's own code stays warm in the
caches, as in a server that answers only it); WARMUP untimed calls a path go first."""
RUN = 50
WARMUP = 500


def callers(app: Starlette) -> dict[str, Callable[[], list[Message]]]:
    """The no-op ceiling (minimal body), the table path and onnxruntime full, one flight each,
    their answers checked once before any timing."""
    calls = {
        "noop": noop_caller(),
        **{
            f"{contract}-1": request_caller(
                app, "POST", "/predict", predict_body(contract, 1), headers=JSON
            )
            for contract in ("minimal", "full")
        },
    }
    for call in calls.values():
        assert len(ok_body(call())["predict"]) == 1
    return calls


def test_alternating(benchmark: Any, app: Starlette) -> None:
    calls = list(callers(app).items())
    for _, call in calls:
        for _ in range(WARMUP):
            call()
    rounds: list[dict[str, float]] = []

    def one_round() -> None:
        timings: dict[str, list[int]] = {path: [] for path, _ in calls}
        for index in range(CALLS // RUN):
            for path, call in calls[:: 1 if index % 2 else -1]:
                for _ in range(RUN):
                    start = time.perf_counter_ns()
                    call()
                    timings[path].append(time.perf_counter_ns() - start)
        rounds.append({path: statistics.median(ns) / 1e9 for path, ns in timings.items()})

    benchmark.group = "alternating rounds"
    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    benchmark.extra_info["rounds"] = rounds

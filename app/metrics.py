"""Prometheus metrics, summed across gunicorn workers.

Under gunicorn, `gunicorn.conf.py` points PROMETHEUS_MULTIPROC_DIR at a fresh directory
before any worker imports prometheus_client; each worker then writes its samples to
memory-mapped files there, and a scrape of any worker reads all of them.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.model import MODEL_NAMES, Prediction

disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series: noise for counters that only grow

LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time from request received to response started, by route template and status",
    ["route", "method", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
PREDICTIONS = Counter(
    "predictions_total", "Flights scored, by model and predicted label", ["model", "label"]
)
_PREDICTION_COUNTERS = {
    (model, label): PREDICTIONS.labels(model, str(label))
    for model in MODEL_NAMES
    for label in (0, 1)
}
_LATENCY_CHILDREN: dict[tuple[str, str, int], Any] = {}
"""labels() resolved once per (route, method, status): it costs more than the observation."""
UNMATCHED_ROUTE = "<unmatched>"
"""One label for every path no route knows, so scanners cannot explode the label space."""


def count_predictions(model: str, prediction: Prediction) -> None:
    # Each inc is a write to a shared memory-mapped file under gunicorn: skip the zero ones.
    delayed = prediction.delayed
    on_time = len(prediction.labels) - delayed
    if delayed:
        _PREDICTION_COUNTERS[model, 1].inc(delayed)
    if on_time:
        _PREDICTION_COUNTERS[model, 0].inc(on_time)


def exposition() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Times every HTTP request up to the start of its response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                key = (_route(scope), scope["method"], message["status"])
                histogram = _LATENCY_CHILDREN.get(key)
                if histogram is None:
                    histogram = _LATENCY_CHILDREN[key] = LATENCY.labels(key[0], key[1], str(key[2]))
                histogram.observe(time.perf_counter() - start)
            await send(message)

        await self.app(scope, receive, send_with_status)


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE

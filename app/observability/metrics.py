"""Prometheus metrics, summed across gunicorn workers.

Under gunicorn, `gunicorn.conf.py` points PROMETHEUS_MULTIPROC_DIR at a fresh directory
before any worker imports prometheus_client; each worker then writes its samples to
memory-mapped files there, and a scrape of any worker reads all of them.

A write to those files takes a lock and packs doubles into shared memory: three of them per
request cost about a tenth of a request. So each worker tallies in plain dicts and adds the
tallies to the shared metrics once a second (and before it answers a scrape, and at exit): a
scrape may see another worker's last second late, never lose it, unless that worker is killed.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.inference.flights import Columns
from app.inference.model import OnnxModel, Prediction
from app.observability import loop_lag, metric_files, metrics_archive

metric_files.install()  # before the first metric: a full disk must not SIGBUS a worker
disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series: noise for counters that only grow

ANSWERED_BY_SERVER = "latam.answered_by_server"
"""Set in a request's scope by the HTTP layer (app.server.protocol) when it has answered that
request itself (a body not received in time, or not framed as its headers say) while its app
was running, and counted that answer: the app's own, to a closed connection, is not counted."""
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
FLUSH_SECONDS = 1.0
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time from request received to response started, by route template and status",
    ["route", "method", "status"],
    buckets=BUCKETS,
)
REQUESTS = Counter(
    "http_requests_total",
    "HTTP answers, by route template, method and status (500s included)",
    ["route", "method", "status"],
)
PREDICTIONS = Counter(
    "predictions_total",
    "Flights scored, by model, model version and predicted label",
    ["model", "version", "label"],
)
MERGE_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
MERGED = Histogram(
    "microbatch_call_requests",
    "Requests scored by one merged onnxruntime call (app.inference.microbatch), by model: one "
    "observation per call; a request scored at once, alone in its worker, is in none",
    ["model"],
    buckets=MERGE_BUCKETS,
)
CALL_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.1)
MODEL_CALLS = Histogram(
    "model_call_seconds",
    "Wall time of one onnxruntime model call, its features' encoding included, by model: one "
    "observation per call (a merged call or a batch counts once; the table's answers never)",
    ["model"],
    buckets=CALL_BUCKETS,
)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LOOP_LAG = Histogram(
    "event_loop_lag_seconds",
    "How late each worker's event loop ran a timer due every 0.1 s (app.observability.loop_lag): "
    "what a request arriving then waited, unread, before its worker read it; not in "
    "http_request_duration_seconds, which starts once it is read",
    buckets=LAG_BUCKETS,
)
CONNECTIONS_CLOSED = Counter(
    "http_connections_closed_total",
    "REST connections a worker closed to stay within MAX_CONNECTIONS, by which one: never "
    "answered, idle keep-alive, or the new one (every other had a request in progress)",
    ["closed"],
)
CLOSED_KINDS = ("unanswered", "keep_alive", "new")
"""The `closed` label's values (app.server.protocol's `_make_room`)."""
WORKERS = Gauge(
    "model_workers",
    "Live workers that loaded each model version: after a reload, the old version's series "
    "stays until the last worker serving it has exited",
    ["model", "version"],
    multiprocess_mode="livesum",  # a worker's share leaves with it (gunicorn.conf.py's child_exit)
)
RELOADS = Counter(
    "model_reloads_total",
    "SIGHUP reloads of the models by the gunicorn master, by outcome: applied, or refused (the "
    "release in MODELS_DIR did not read, load or warm, and the previous one serves on)",
    ["outcome"],
)
RELOAD_OUTCOMES = ("applied", "refused")
LAST_RELOAD_SUCCESSFUL = Gauge(
    "model_last_reload_successful",
    "0 while the last SIGHUP reload was refused (MODELS_DIR holds a release the server does not "
    "serve), else 1: Prometheus's own prometheus_config_last_reload_successful, for the models",
    multiprocess_mode="livemostrecent",  # the master sets it; an upgrade's newer master wins
)
WORKERS_LOST = Counter(
    "workers_lost_total",
    "Workers the gunicorn master lost without the operator's asking, by cause: crashed (died "
    "unbidden: a kill, the kernel's OOM killer, a crash, a failure to start), timeout (hung, no "
    "heartbeat for `timeout` s, killed by the master); a reload's or a stop's are not counted",
    ["cause"],
)
LOST_CAUSES = ("crashed", "timeout")
"""The `cause` label's values (app.server.forks' `lost`)."""
IN_FLIGHT = Gauge(
    "requests_in_flight",
    "Requests begun and not yet answered, by transport, as each worker's in-flight bound counts "
    "them (REST: bodies received; gRPC: calls started, answers not yet sent), sampled once a "
    "second and at a scrape (not counting the scrape), summed over live workers: past "
    "MAX_IN_FLIGHT in one worker it sheds (503, UNAVAILABLE). Requests not yet read by their "
    "worker are not counted: a queue in the sockets shows in event_loop_lag_seconds",
    ["transport"],
    multiprocess_mode="livesum",  # a worker's share leaves with it, as model_workers'
)
TRANSPORTS = ("rest", "grpc")
"""The `transport` label's values (`sample_in_flight`)."""
UNMATCHED_ROUTE = "<unmatched>"
"""One label for every path no route knows, so scanners cannot explode the label space."""
OTHER_METHOD = "OTHER"
"""The method label of every method but RFC 9110's own: the HTTP parser takes 35 (PROPFIND,
MKCALENDAR, SOURCE…), and one series each, on every route, took /metrics from 92 lines to
7,548 (820 KB)."""
_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "GRPC", "-")
)
"""The method labels kept as they are: RFC 9110's, gRPC's and `-` (no method: bytes that are
not HTTP, app.server.protocol)."""


_latency: dict[tuple[str, str, int | str], list[float]] = {}
"""(route, method, status) → [sum of seconds, count in bucket 0, ..., count above the last]"""
_predictions: dict[OnnxModel, list[int]] = {}
"""model → [flights labelled 0, flights labelled 1]"""
_merged: dict[str, list[float]] = {}
"""model name → [sum of requests, count in bucket 0, ..., count above the last]"""
_model_calls: dict[str, list[float]] = {}
"""model name → [sum of seconds, count in bucket 0, ..., count above the last]"""
_closed: dict[str, int] = {}
"""CLOSED_KINDS value → connections closed"""
_loop_lag: dict[None, list[float]] = {}
"""None → [sum of seconds, count in bucket 0, ..., count above the last]"""
_in_flight: dict[str, Callable[[], int]] = {}
"""TRANSPORTS value → this worker's count of its requests in flight on it"""


class Derived(Protocol):
    """Metrics computed from the families every worker flushed, at scrape time
    (app.observability.drift_metrics)."""

    def flush(self) -> None: ...

    def derive(self, families: list[Metric]) -> list[Metric]: ...


_derived: Derived | None = None


def observe_latency(route: str, method: str, status: int | str, seconds: float) -> None:
    """`status`: an HTTP status, or a gRPC status code's name (app.grpc, method "GRPC")."""
    if method not in _METHODS:
        method = OTHER_METHOD
    _tally(_latency, (route, method, status), BUCKETS, seconds)


def observe_merge(model: OnnxModel, requests: int) -> None:
    """One onnxruntime call of app.inference.microbatch, for `requests` requests' flights."""
    _tally(_merged, model.name, MERGE_BUCKETS, requests)


def _tally(
    tallies: dict[Any, list[float]], key: Any, bounds: tuple[float, ...], value: float
) -> None:
    """A histogram observation, into the plain list `flush` adds to the shared metric."""
    tally = tallies.get(key)
    if tally is None:
        tally = tallies[key] = [0.0] * (len(bounds) + 2)
    tally[0] += value
    tally[bisect_left(bounds, value) + 1] += 1  # a bucket holds values <= its bound


def observe_loop_lag(seconds: float) -> None:
    """One sample of app.observability.loop_lag."""
    _tally(_loop_lag, None, LAG_BUCKETS, seconds)


def count_closed_connection(kind: str) -> None:
    """One connection closed to stay within MAX_CONNECTIONS (`kind`: one of CLOSED_KINDS)."""
    _closed[kind] = _closed.get(kind, 0) + 1


def count_predictions(model: OnnxModel, columns: Columns, prediction: Prediction) -> None:
    tally = _predictions.get(model)
    if tally is None:
        tally = _predictions[model] = [0, 0]
    delayed = prediction.delayed
    tally[0] += len(prediction.labels) - delayed
    tally[1] += delayed
    if prediction.seconds:
        _tally(_model_calls, model.name, CALL_BUCKETS, prediction.seconds)


def expect_models(models: Iterable[OnnxModel], derived: Derived | None) -> None:
    """Counts this worker in `model_workers` of every model it serves, shows their prediction
    counts from zero, before the first prediction (so that `rate()` sees the first ones), and
    sets what a scrape derives (None: nothing)."""
    global _derived
    for model in models:
        WORKERS.labels(model.name, model.version).set(1)
        for label in ("0", "1"):
            PREDICTIONS.labels(model.name, model.version, label)
        MERGED.labels(model.name)
        MODEL_CALLS.labels(model.name)
    _derived = derived


def sample_in_flight(transport: str, count: Callable[[], int]) -> None:
    """From now on `requests_in_flight` shows `count()` for this worker's `transport` (one of
    TRANSPORTS), read at each flush: read on every request, it would cost the hot path a write
    to shared memory twice a request."""
    _in_flight[transport] = count
    IN_FLIGHT.labels(transport).set(count())


def count_reload(applied: bool | None) -> None:
    """The master's record of a SIGHUP reload's outcome (None: its start, whose check of
    MODELS_DIR passed, so both counts show from zero). Written at once: the master answers no
    request, and a refusal is otherwise one log line that no alert can see."""
    for outcome in RELOAD_OUTCOMES:
        RELOADS.labels(outcome)
    if applied is not None:
        RELOADS.labels("applied" if applied else "refused").inc()
    LAST_RELOAD_SUCCESSFUL.set(0.0 if applied is False else 1.0)


def count_lost_worker(cause: str | None) -> None:
    """The master's record of a worker lost (None: at its start, so that both counts show from
    zero and `rate()` sees the first loss). Written at once, as `count_reload`: in a pod that
    stays ready, a worker dying in a loop was otherwise one log line a death."""
    for known in LOST_CAUSES:
        WORKERS_LOST.labels(known)
    if cause is not None:
        WORKERS_LOST.labels(cause).inc()


def flush(scrapes: int = 0) -> None:
    """Adds this worker's tallies to the shared metrics and starts new ones (into its files
    written again first if they were removed: app.observability.metric_files), and samples its
    requests in flight, less the `scrapes` (REST requests) it is flushing for."""
    global _latency, _predictions, _merged, _model_calls, _closed, _loop_lag
    metric_files.restore_removed()
    latency, _latency = _latency, {}
    predictions, _predictions = _predictions, {}
    merged, _merged = _merged, {}
    model_calls, _model_calls = _model_calls, {}
    closed, _closed = _closed, {}
    loop_lags, _loop_lag = _loop_lag, {}
    for transport, in_flight in _in_flight.items():
        IN_FLIGHT.labels(transport).set(in_flight() - (scrapes if transport == "rest" else 0))
    for kind, count in closed.items():
        CONNECTIONS_CLOSED.labels(kind).inc(count)
    for (route, method, status), tally in latency.items():
        _add(LATENCY.labels(route, method, str(status)), tally)
        REQUESTS.labels(route, method, str(status)).inc(sum(tally[1:]))
    for name, tally in merged.items():
        _add(MERGED.labels(name), tally)
    for tally in loop_lags.values():
        _add(LOOP_LAG, tally)
    for name, tally in model_calls.items():
        _add(MODEL_CALLS.labels(name), tally)
    for model, counts in predictions.items():
        for label, count in enumerate(counts):
            if count:
                PREDICTIONS.labels(model.name, model.version, str(label)).inc(count)
    if _derived is not None:
        _derived.flush()


def _add(child: Histogram, tally: list[float]) -> None:
    """A `_tally` list into a histogram's child: prometheus_client has no bulk observe, so this
    adds to the child's values as observe() does."""
    child._sum.inc(tally[0])
    for bucket, count in zip(child._buckets, tally[1:], strict=True):
        if count:
            bucket.inc(count)


_flush_failed = False


def flush_or_log(scrapes: int = 0) -> None:
    """Flushes (`flush`'s `scrapes`); a failure (a full disk refusing a new series:
    app.observability.metric_files) loses that flush's tallies and is logged, the first time
    only, rather than raised into the loop's timer or a scrape."""
    global _flush_failed
    try:
        flush(scrapes)
    except Exception:
        if not _flush_failed:
            _flush_failed = True
            logging.getLogger("app").exception("metrics flush failed (logged once; goes on)")


def _flush_every_second(loop: asyncio.AbstractEventLoop) -> None:
    """Flushes, and comes back in a second even if that flush failed: a flush that stopped for
    good would leave every later tally to the scrapes."""
    try:
        flush_or_log()
    finally:
        loop.call_later(FLUSH_SECONDS, _flush_every_second, loop)


_flushing_loop: asyncio.AbstractEventLoop | None = None


def keep_flushing() -> None:
    """Flushes every second on the running loop from now on, and samples its lag
    (app.observability.loop_lag): once per loop, whether HTTP or gRPC (app.grpc) asks first."""
    global _flushing_loop
    loop = asyncio.get_running_loop()
    if loop is not _flushing_loop:
        _flushing_loop = loop
        for kind in CLOSED_KINDS:  # shown from zero, so that `rate()` sees the first ones
            CONNECTIONS_CLOSED.labels(kind)
        loop.call_later(FLUSH_SECONDS, _flush_every_second, loop)
        loop_lag.sample_every(loop, observe_loop_lag)


atexit.register(flush_or_log)  # a graceful worker exit keeps its last second


def exposition() -> tuple[bytes, str]:
    """Every worker's metrics under gunicorn (app.observability.metrics_archive reads their
    files), this process's otherwise: a flush that fails still lets the scrape read the files.
    Called by a REST request, the scrape: not itself in the requests in flight it shows."""
    flush_or_log(scrapes=1)
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    families = metrics_archive.collect(Path(directory)) if directory else list(REGISTRY.collect())
    if _derived is not None:
        families = _derived.derive(families)
    return generate_latest(_Families(families)), CONTENT_TYPE_LATEST


class _Families(Collector):
    """Already collected families, for generate_latest."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


class MetricsMiddleware:
    """Times and counts every HTTP request up to the start of its response; app.main puts it
    outside Starlette's error middleware, so that the 500s that middleware sends count too. A
    request the HTTP layer has answered itself (ANSWERED_BY_SERVER) is counted there, once, with
    the status its client got.

    Like app.observability.request_id's, neither `__call__` nor the send wrapper is a coroutine
    function: each returns the awaitable of the layer below, a coroutine frame fewer per call
    (in-process, with the caches cooled between requests as a server's are: 24.1 -> 21.9 us a table
    request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._flushing = False

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        if not self._flushing:
            self._flushing = True
            keep_flushing()
        start = time.perf_counter()

        def send_with_status(message: Message) -> Awaitable[None]:
            if message["type"] == "http.response.start" and ANSWERED_BY_SERVER not in scope:
                observe_latency(
                    _route(scope), scope["method"], message["status"], time.perf_counter() - start
                )
            return send(message)

        return self.app(scope, receive, send_with_status)


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE

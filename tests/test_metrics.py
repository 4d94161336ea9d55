from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from app.observability.metrics import OTHER_METHOD, UNMATCHED_ROUTE, exposition
from tests.conftest import answer_499_through

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
LABELS_499 = {"route": UNMATCHED_ROUTE, "method": "POST", "status": "499"}
"""What tests.conftest.answer_499_through's request is counted as (it has no route)."""


def _samples(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return _parsed(response.text)


def _scraped() -> Samples:
    """This process's metrics, as a scrape would see them, without an app."""
    return _parsed(exposition()[0].decode())


def _parsed(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_requests_are_counted_by_route_template_and_status(client: TestClient) -> None:
    before = _samples(client)
    flight = {"OPERA": "Grupo LATAM", "TIPOVUELO": "N", "MES": 3}
    for _ in range(3):
        assert client.post("/predict", json={"flights": [flight, flight]}).status_code == 200
    assert client.post("/predict", json={"flights": []}).status_code == 400
    assert client.get("/v2/models/delay-full/ready").status_code == 200
    assert client.post("/v2/models/delay-minimal/infer", json={"inputs": []}).status_code == 400
    assert client.get("/no/such/path").status_code == 404
    after = _samples(client)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    count = "http_request_duration_seconds_count"
    assert delta(count, route="/predict", method="POST", status="200") == 3
    assert delta(count, route="/predict", method="POST", status="400") == 1
    assert delta(count, route="/v2/models/{name}/ready", method="GET", status="200") == 1
    assert delta(count, route="/v2/models/{name}/infer", method="POST", status="400") == 1
    assert delta(count, route="<unmatched>", method="GET", status="404") == 1
    seconds = delta(
        "http_request_duration_seconds_sum", route="/predict", method="POST", status="200"
    )
    assert 0 < seconds < 30  # three requests' times, each from its own start
    version = client.app.state.models.minimal.version  # type: ignore[attr-defined]
    scored = delta("predictions_total", model="delay-minimal", version=version, label="0") + delta(
        "predictions_total", model="delay-minimal", version=version, label="1"
    )
    assert scored == 6


def test_a_method_outside_rfc_9110_is_counted_as_other(client: TestClient) -> None:
    """Methods are a client's choice: beyond RFC 9110's, one label for all, so that a scanner
    cycling through WebDAV's cannot add series to every route."""
    before = _samples(client)
    for method in ("PROPFIND", "MKCALENDAR", "LOCK", "SOURCE"):
        assert client.request(method, "/health").status_code == 405
    assert client.request("PUT", "/health").status_code == 405
    after = _samples(client)
    count = "http_request_duration_seconds_count"
    labels = {"route": "/health", "status": "405"}
    assert (
        _value(after, count, method=OTHER_METHOD, **labels)
        - _value(before, count, method=OTHER_METHOD, **labels)
        == 4
    )
    assert (
        _value(after, count, method="PUT", **labels) - _value(before, count, method="PUT", **labels)
        == 1
    )
    assert not any(("PROPFIND" in dict(labels).values()) for _, labels in after)


def test_each_onnxruntime_model_call_is_timed_once_and_table_answers_never(
    client: TestClient,
) -> None:
    minimal = {"OPERA": "Grupo LATAM", "TIPOVUELO": "N", "MES": 3}
    full = minimal | {
        "Fecha-I": "2017-03-05 19:30:00",
        "Des-I": "SCFA",
        "Emp-I": "LAN",
        "Vlo-I": "226",
    }
    before = _samples(client)
    for _ in range(2):  # two flights, one call each: a request's flights are scored together
        assert client.post("/predict", json={"flights": [full, full]}).status_code == 200
    assert client.post("/predict", json={"flights": [minimal, minimal]}).status_code == 200
    after = _samples(client)

    def delta(name: str, model: str, **labels: str) -> float:
        return _value(after, name, model=model, **labels) - _value(
            before, name, model=model, **labels
        )

    assert delta("model_call_seconds_count", "delay-full") == 2
    assert 0 < delta("model_call_seconds_sum", "delay-full") < 2.0
    assert delta("model_call_seconds_bucket", "delay-full", le="+Inf") == 2
    assert delta("model_call_seconds_count", "delay-minimal") == 0  # the table answered
    assert ("model_call_seconds_count", frozenset({("model", "delay-minimal")})) in after


def test_flushed_tallies_equal_direct_observations() -> None:
    from prometheus_client import CollectorRegistry, Histogram

    from app.observability.metrics import BUCKETS, LATENCY, flush, observe_latency

    values = [0.0, 0.0004, 0.0005, 0.00051, 0.3, 2.5, 7.0, *BUCKETS]
    reference = Histogram(
        "reference_seconds", "same buckets", buckets=BUCKETS, registry=CollectorRegistry()
    )
    for value in values:
        reference.observe(value)
        observe_latency("/flush-test", "GET", 200, value)

    def samples(histogram: object) -> dict[str, float]:
        return {
            f"{sample.name.rsplit('_', 1)[-1]}{sample.labels.get('le', '')}": sample.value
            for metric in histogram.collect()  # type: ignore[attr-defined]
            for sample in metric.samples
            if sample.labels.get("route", "/flush-test") == "/flush-test"
        }

    flush()
    flushed = samples(LATENCY.labels("/flush-test", "GET", "200"))
    assert flushed["count"] == len(values)
    assert flushed["bucket+Inf"] == len(values)
    assert flushed == samples(reference)


def test_a_500_is_counted_like_any_other_answer() -> None:
    """A fault inside the app (a model that raises) is answered by Starlette's error middleware;
    the metrics middleware sits outside it, so the 500 is timed and counted."""
    from app.main import create_app
    from app.settings import Settings
    from tests.conftest import MODELS_DIR

    app = create_app(Settings(models_dir=MODELS_DIR))
    with TestClient(app, raise_server_exceptions=False) as client:

        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("injected fault")

        app.state.models.predict = broken
        before = _samples(client)
        flight = {"OPERA": "Grupo LATAM", "TIPOVUELO": "N", "MES": 3}
        assert client.post("/predict", json={"flights": [flight]}).status_code == 500
        after = _samples(client)
    labels = {"route": "/predict", "method": "POST", "status": "500"}
    for name in ("http_requests_total", "http_request_duration_seconds_count"):
        assert _value(after, name, **labels) - _value(before, name, **labels) == 1, name


def test_an_answer_the_http_layer_gave_and_counted_is_not_counted_again() -> None:
    """app.server.protocol answers a request whose body never came (408) or came misframed
    (400) itself, counts that, and marks the scope: the app's answer to the closed connection
    (its 499) must not be counted too."""
    from app.observability.metrics import MetricsMiddleware

    def count(marked: bool) -> float:
        before = _value(_scraped(), "http_requests_total", **LABELS_499)
        answer_499_through(MetricsMiddleware, marked)
        return _value(_scraped(), "http_requests_total", **LABELS_499) - before

    assert count(marked=False) == 1  # the test counts what it should
    assert count(marked=True) == 0


def test_requests_total_equals_the_histograms_count(client: TestClient) -> None:
    assert client.get("/health").status_code == 200
    samples = _samples(client)
    labels = {"route": "/health", "method": "GET", "status": "200"}
    count = _value(samples, "http_request_duration_seconds_count", **labels)
    assert count >= 1
    assert _value(samples, "http_requests_total", **labels) == count


def test_a_worker_exiting_gracefully_keeps_its_last_tallies(tmp_path: Path) -> None:
    """Tallies reach the shared files once a second: the last second's are added at exit."""
    observe = "observe_latency('/at-exit', 'GET', 200, 0.01)"
    subprocess.run(
        [sys.executable, "-c", f"from app.observability.metrics import *; {observe}"],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        cwd=Path(__file__).resolve().parent.parent,
        check=True,
        timeout=60,
    )
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]
    samples = _parsed(generate_latest(registry).decode())
    labels = {"route": "/at-exit", "method": "GET", "status": "200"}
    assert _value(samples, "http_requests_total", **labels) == 1


def test_the_prometheus_client_internals_flush_relies_on_are_there() -> None:
    """app.observability.metrics.flush adds tallies to a histogram child's private `_sum` and
    `_buckets` (prometheus_client has no bulk observe); pyproject pins a tested range, and this
    fails loudly the day a release renames them."""
    from app.observability.metrics import BUCKETS, LATENCY

    child = LATENCY.labels("/internals-test", "GET", "200")
    assert hasattr(child, "_sum"), "prometheus_client Histogram child has no _sum any more"
    assert hasattr(child, "_buckets"), "prometheus_client Histogram child has no _buckets"
    assert len(child._buckets) == len(BUCKETS) + 1, "one bucket per bound plus +Inf expected"
    assert callable(child._sum.inc)
    assert all(callable(bucket.inc) for bucket in child._buckets)


def test_the_prometheus_client_internals_the_metrics_archive_relies_on_are_there(
    tmp_path: Path,
) -> None:
    """app.observability.metrics_archive reads and writes prometheus_client's multiprocess files
    itself (mmap_dict is no documented API): the files' names, their entries' key and
    (value, timestamp) layout, a timestamp of 0 in the summed types (an archive keeps the low
    part of each sum there), which prometheus_client's collector ignores, and mark_process_dead
    leaving the summed types' files. pyproject pins a tested range; this fails loudly the day a
    release changes one. The service's gauges must all be of a `live` mode (`livesum`, and the
    master's `livemostrecent`), whose files leave with their process: another mode's would stay,
    neither archived nor removed."""
    import subprocess
    import sys

    from prometheus_client import CollectorRegistry, Gauge
    from prometheus_client.mmap_dict import MmapedDict, mmap_key
    from prometheus_client.multiprocess import (
        _LIVE_GAUGE_MULTIPROCESS_MODES,
        MultiProcessCollector,
        mark_process_dead,
    )

    from app.observability import drift_metrics, metrics
    from tests.test_metrics_archive import mmap_file

    writer = (
        "import os, prometheus_client as p;"
        "p.Counter('c', 'C', ['a']).labels('x').inc(2);"
        "p.Histogram('h', 'H', buckets=(1.0,)).observe(0.5);"
        "p.Summary('s', 'S').observe(3);"
        "print(os.getpid())"
    )
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    pid = subprocess.run(
        [sys.executable, "-c", writer], env=environment, capture_output=True, check=True, text=True
    ).stdout.strip()
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        f"{kind}_{pid}.db" for kind in ("counter", "histogram", "summary")
    ]
    # read_all_values_from_file, MultiProcessCollector and mark_process_dead: unannotated upstream
    entries = list(MmapedDict.read_all_values_from_file(str(tmp_path / f"counter_{pid}.db")))  # type: ignore[no-untyped-call]
    assert [entry[:3] for entry in entries] == [
        (mmap_key("c", "c_total", ["a"], ["x"], "C"), 2.0, 0.0)
    ]
    assert json.loads(entries[0][0]) == ["c", "c_total", {"a": "x"}, "C"]
    histogram = MmapedDict.read_all_values_from_file(str(tmp_path / f"histogram_{pid}.db"))  # type: ignore[no-untyped-call]
    assert {(json.loads(key)[1], value, timestamp) for key, value, timestamp, _ in histogram} == {
        ("h_sum", 0.5, 0.0),
        ("h_bucket", 1.0, 0.0),
        ("h_bucket", 0.0, 0.0),
    }
    archive = mmap_file(tmp_path / "counter_archive.db")
    archive.write_value(mmap_key("c", "c_total", ["a"], ["x"], "C"), 1.0, 0.25)
    archive.close()
    mark_process_dead(int(pid), str(tmp_path))  # type: ignore[no-untyped-call]
    assert len(list(tmp_path.glob("*.db"))) == 4
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(tmp_path))  # type: ignore[no-untyped-call]
    counter = {s.name: s.value for f in registry.collect() if f.name == "c" for s in f.samples}
    assert counter == {"c_total": 3.0}, (
        "prometheus_client's collector no longer ignores a counter's timestamp"
    )
    gauges = [
        value
        for module in (metrics, drift_metrics)
        for value in vars(module).values()
        if isinstance(value, Gauge)
    ]
    assert len(gauges) == 6
    assert {gauge._multiprocess_mode for gauge in gauges} == {"livesum", "livemostrecent"}
    assert {"livesum", "livemostrecent"} <= _LIVE_GAUGE_MULTIPROCESS_MODES  # mark_process_dead's


def test_the_flush_keeps_its_schedule_when_one_flush_raises(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A flush that raised (a drift window's IndexError, an operator probe) ended the
    once-a-second schedule for good; now it comes back and says so once."""
    from app.observability import metrics

    calls = []

    def failing(scrapes: int = 0) -> None:
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise IndexError("list index out of range")

    monkeypatch.setattr(metrics, "flush", failing)
    monkeypatch.setattr(metrics, "FLUSH_SECONDS", 0.01)
    monkeypatch.setattr(metrics, "_flush_failed", False)
    loop = asyncio.new_event_loop()
    try:
        loop.call_soon(metrics._flush_every_second, loop)
        loop.run_until_complete(asyncio.sleep(0.2))
    finally:
        loop.close()
    assert len(calls) >= 4
    failures = [r for r in caplog.records if "metrics flush failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None


def test_a_scrape_answers_when_its_flush_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """A flush that raised (a full disk refusing a new series: app.observability.metric_files)
    made the scrape itself fail; the files already written are still read."""
    from app.observability import metrics

    def failing(scrapes: int = 0) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(metrics, "flush", failing)
    monkeypatch.setattr(metrics, "_flush_failed", False)
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    assert b"http_requests_total" in body


def test_a_reloads_outcome_is_counted_and_the_last_one_shows() -> None:
    """The master's only record of a refused reload (count_reload): a refusal is counted and
    turns model_last_reload_successful to 0 until one is applied; a start shows both series."""
    from prometheus_client import REGISTRY

    from app.observability.metrics import count_reload

    def reloads() -> tuple[float, float, float | None]:
        applied, refused = (
            REGISTRY.get_sample_value("model_reloads_total", {"outcome": outcome}) or 0.0
            for outcome in ("applied", "refused")
        )
        return applied, refused, REGISTRY.get_sample_value("model_last_reload_successful")

    count_reload(None)
    applied, refused, last = reloads()
    assert last == 1.0
    count_reload(False)
    assert reloads() == (applied, refused + 1, 0.0)
    count_reload(None)  # a later start whose check passed
    assert reloads() == (applied, refused + 1, 1.0)
    count_reload(False)
    count_reload(True)
    assert reloads() == (applied + 1, refused + 2, 1.0)


def test_each_connection_closed_to_make_room_is_counted_by_kind() -> None:
    from prometheus_client import REGISTRY

    from app.observability.metrics import CLOSED_KINDS, count_closed_connection, flush

    def closed() -> dict[str, float]:
        flush()
        return {
            kind: REGISTRY.get_sample_value("http_connections_closed_total", {"closed": kind})
            or 0.0
            for kind in CLOSED_KINDS
        }

    assert CLOSED_KINDS == ("unanswered", "keep_alive", "new")
    before = closed()
    count_closed_connection("new")
    count_closed_connection("new")
    count_closed_connection("keep_alive")
    after = closed()
    assert after["new"] - before["new"] == 2
    assert after["keep_alive"] - before["keep_alive"] == 1
    assert after["unanswered"] == before["unanswered"]


def _loop_lag() -> dict[str, float]:
    """event_loop_lag_seconds' count, sum and its 5 s and 10 s buckets in this process, flushed."""
    from prometheus_client import REGISTRY

    from app.observability.metrics import flush

    flush()
    samples: dict[str, tuple[str, dict[str, str]]] = {"count": ("_count", {}), "sum": ("_sum", {})}
    samples |= {bound: ("_bucket", {"le": bound}) for bound in ("5.0", "10.0")}
    return {
        key: REGISTRY.get_sample_value(f"event_loop_lag_seconds{suffix}", labels) or 0.0
        for key, (suffix, labels) in samples.items()
    }


def test_loop_lag_samples_are_flushed_into_the_histogram() -> None:
    """Lags of 5 to 10 s, which no loop sampling meanwhile (a module's TestClient) observes."""
    from app.observability.metrics import observe_loop_lag

    before = _loop_lag()
    observe_loop_lag(7.0)
    observe_loop_lag(7.5)
    after = _loop_lag()
    assert (after["10.0"] - after["5.0"]) - (before["10.0"] - before["5.0"]) == 2
    assert after["count"] - before["count"] >= 2
    assert after["sum"] - before["sum"] >= 14.5


def test_the_loop_that_flushes_samples_its_lag(monkeypatch: pytest.MonkeyPatch) -> None:
    """keep_flushing, which the first request (or the gRPC server) calls on a worker's loop,
    also starts app.observability.loop_lag there: a stall of that loop is observed."""
    from app.observability import metrics

    observed: list[float] = []
    monkeypatch.setattr(metrics, "_flushing_loop", None)
    monkeypatch.setattr(metrics, "observe_loop_lag", observed.append)

    async def a_worker_stalled_by_a_blocking_call() -> None:
        metrics.keep_flushing()
        await asyncio.sleep(0.05)
        time.sleep(0.4)  # over the first sample, due 0.1 s after keep_flushing
        await asyncio.sleep(0.25)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(a_worker_stalled_by_a_blocking_call())
    finally:
        loop.close()
    assert len(observed) >= 2
    assert max(observed) >= 0.3, observed


def test_requests_in_flight_are_sampled_at_each_flush_less_the_scrape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each transport's count is read when the worker flushes (once a second), not on every
    request; a scrape, itself a REST request in flight, leaves itself out. The once-a-second
    flushes of the loops other tests' clients left running (in their own threads) are held off
    meanwhile: one read the counts between two of the test's steps."""
    import threading

    from prometheus_client import REGISTRY

    from app.observability import metrics

    test_thread, flush_or_log = threading.get_ident(), metrics.flush_or_log

    def flush_in_this_thread_only(scrapes: int = 0) -> None:
        if threading.get_ident() == test_thread:
            flush_or_log(scrapes)

    monkeypatch.setattr(metrics, "flush_or_log", flush_in_this_thread_only)
    monkeypatch.setattr(metrics, "_in_flight", {})
    counts = {"rest": 3, "grpc": 2}

    def shown() -> dict[str, float | None]:
        return {
            transport: REGISTRY.get_sample_value("requests_in_flight", {"transport": transport})
            for transport in metrics.TRANSPORTS
        }

    for transport in metrics.TRANSPORTS:
        metrics.sample_in_flight(transport, functools.partial(counts.__getitem__, transport))
    assert shown() == {"rest": 3.0, "grpc": 2.0}
    counts.update(rest=5, grpc=0)
    assert shown() == {"rest": 3.0, "grpc": 2.0}  # until the next flush
    metrics.flush()
    assert shown() == {"rest": 5.0, "grpc": 0.0}
    scraped = _scraped()
    assert _value(scraped, "requests_in_flight", transport="rest") == 4.0
    assert _value(scraped, "requests_in_flight", transport="grpc") == 0.0

"""The deployed service with its observability on: a real gunicorn master and two workers
with LOG_FORMAT=json, ACCESS_LOG=-, METRICS_BIND on a port of its own and a small drift window,
spoken to over real sockets. The drift stream is drawn from the real data."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.inference.flights import Flight
from app.observability.drift import PSI_ALERT, PSI_WARN, SEASONAL_INPUTS
from app.observability.metrics import FLUSH_SECONDS
from benchmarks.drift_replay import alerting, replay
from tests.conftest import MODELS_DIR, add_profiles
from tests.test_server import HOST, Server, free_port, spawn, stop, wait_until_ready, workers_of
from train.data import DATA_ENV, data_location, load

pytestmark = pytest.mark.server

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
DRIFT_WINDOW = 1500
"""Flights per worker: two workers hold at most 2 x (1500 + 150) of the latest flights."""
STREAM = 4000
"""Flights a stream sends: more than both windows hold, so it replaces what came before."""
REPLAY = 8000
"""Flights a month of the replay sends: 4,000 a model, more than its two windows hold together
(2 x 1,650), though a worker that scores fewer than 1,650 of them keeps some of the month before
(benchmarks.drift_replay serves one worker for that): what the test asserts holds on such a mix."""
FLIGHT = {"OPERA": "Grupo LATAM", "TIPOVUELO": "N", "MES": 3}


@pytest.fixture(scope="module")
def real_flights() -> dict[bool, list[Flight]] | None:
    if not data_location().is_file():
        return None
    dataset = load(data_location())
    return {schedule: dataset.flights(schedule) for schedule in (False, True)}


@pytest.fixture(scope="module")
def models(
    tmp_path_factory: pytest.TempPathFactory, real_flights: dict[bool, list[Flight]] | None
) -> Path:
    """The committed models; if their cards predate the drift profile, given the one export
    writes (from the real data, when it is here)."""
    copy = Path(shutil.copytree(MODELS_DIR, tmp_path_factory.mktemp("models") / "models"))
    if real_flights is not None:
        add_profiles(copy, real_flights.__getitem__)
    return copy


@dataclass(frozen=True)
class Observed(Server):
    metrics_url: str = ""


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory, models: Path) -> Iterator[Observed]:
    metrics_port = free_port()
    running = spawn(
        tmp_path_factory.mktemp("gunicorn"),
        MODELS_DIR=str(models),
        LOG_FORMAT="json",
        ACCESS_LOG="-",
        METRICS_BIND=f"{HOST}:{metrics_port}",
        DRIFT_WINDOW=str(DRIFT_WINDOW),
    )
    try:
        wait_until_ready(running)
        yield Observed(**vars(running), metrics_url=f"http://{HOST}:{metrics_port}")
    finally:
        stop(running)


def json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def access_lines(server: Server) -> list[dict[str, Any]]:
    return [
        line for line in json_lines(server.workdir / "stdout.log") if line["logger"] == "app.access"
    ]


def wait_for(find: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = find()
        if found:
            return found
        time.sleep(0.1)
    pytest.fail("not logged in time")


def test_every_log_line_is_one_json_object(observed: Observed) -> None:
    assert httpx.get(observed.url + "/health").status_code == 200
    errors = json_lines(observed.stderr)  # a line that is not JSON raises here
    messages = [line["message"] for line in errors]
    assert any(message.startswith("models checked") for message in messages)  # the master's
    assert any(message.startswith("models ready") for message in messages)  # each worker's
    for line in errors:
        assert {"time", "level", "message", "request_id", "trace_id"} <= line.keys()
    wait_for(lambda: access_lines(observed))


def test_access_lines_carry_request_id_trace_id_route_status_and_duration(
    observed: Observed,
) -> None:
    answer = httpx.post(
        observed.url + "/predict",
        json={"flights": [FLIGHT]},
        headers={"X-Request-ID": "obs-test-1", "traceparent": TRACEPARENT},
    )
    assert answer.status_code == 200
    assert answer.headers["x-request-id"] == "obs-test-1"
    assert answer.headers["traceparent"] == TRACEPARENT
    (line,) = wait_for(
        lambda: [line for line in access_lines(observed) if line["request_id"] == "obs-test-1"]
    )
    assert line["trace_id"] == TRACEPARENT.split("-")[1]
    assert (line["method"], line["route"], line["status"]) == ("POST", "/predict", 200)
    assert isinstance(line["duration_ms"], float)
    assert 0 < line["duration_ms"] < 30_000
    # uvicorn's own access line (no route, no duration) is replaced, not doubled
    assert not any(
        line["logger"] == "uvicorn.access" for line in json_lines(observed.workdir / "stdout.log")
    )


def test_a_bad_traceparent_is_ignored(observed: Observed) -> None:
    bad = TRACEPARENT.replace("4bf9", "4BF9")
    answer = httpx.post(
        observed.url + "/predict",
        json={"flights": [FLIGHT]},
        headers={"X-Request-ID": "obs-test-2", "traceparent": bad},
    )
    assert answer.status_code == 200
    assert "traceparent" not in answer.headers
    (line,) = wait_for(
        lambda: [line for line in access_lines(observed) if line["request_id"] == "obs-test-2"]
    )
    assert line["trace_id"] is None


def test_metrics_move_to_metrics_bind(observed: Observed) -> None:
    metrics_url = observed.metrics_url
    assert httpx.get(observed.url + "/metrics").status_code == 404
    scraped = httpx.get(metrics_url + "/metrics")
    assert scraped.status_code == 200
    names = {family.name for family in text_string_to_metric_families(scraped.text)}
    assert {"predictions", "http_request_duration_seconds"} <= names
    assert httpx.get(metrics_url + "/predict").status_code == 404


def waits_over(server: Observed, bound: str) -> tuple[float, float]:
    """(event-loop lag samples, /predict answers) over `bound` (a bucket's `le`): each
    histogram's count less that bucket, every worker's last second flushed."""
    time.sleep(FLUSH_SECONDS + 0.5)
    text = httpx.get(server.metrics_url + "/metrics").text
    over = {"event_loop_lag_seconds": 0.0, "http_request_duration_seconds": 0.0}
    for family in text_string_to_metric_families(text):
        if family.name not in over:
            continue
        for sample in family.samples:
            if sample.labels.get("route", "/predict") != "/predict":
                continue
            if sample.name == f"{family.name}_count":
                over[family.name] += sample.value
            elif sample.name == f"{family.name}_bucket" and sample.labels["le"] == bound:
                over[family.name] -= sample.value
    return over["event_loop_lag_seconds"], over["http_request_duration_seconds"]


def test_a_stalled_worker_shows_in_the_loop_lag_not_in_the_request_latency(
    observed: Observed,
) -> None:
    """A request that comes while its worker cannot run (a throttled CPU, a blocking call)
    waits unread, and http_request_duration_seconds, which starts once it is read, never saw
    that wait (app.observability.loop_lag)."""
    fresh = httpx.Limits(max_keepalive_connections=0)  # new connections: both workers serve
    with httpx.Client(base_url=observed.url, timeout=10, limits=fresh) as client:
        for _ in range(20):  # each worker's loop samples from its first request on
            assert client.post("/predict", json={"flights": [FLIGHT]}).status_code == 200
    workers = workers_of(observed)
    before = waits_over(observed, "0.25")
    with ThreadPoolExecutor(1) as pool:
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            answer = pool.submit(
                httpx.post, observed.url + "/predict", json={"flights": [FLIGHT]}, timeout=10
            )
            time.sleep(0.6)
        finally:
            for pid in workers:
                os.kill(pid, signal.SIGCONT)
        assert answer.result().status_code == 200
        waited = time.monotonic() - started
    lag, predict = waits_over(observed, "0.25")
    assert waited >= 0.5
    assert lag - before[0] >= 1  # the stall, in the loop's lag
    assert predict == before[1]  # not in the request's latency


def stream(server: Server, flights: list[Flight]) -> None:
    limits = httpx.Limits(max_keepalive_connections=0)  # new connections: both workers serve
    with httpx.Client(base_url=server.url, timeout=30, limits=limits) as fresh:
        for start in range(0, len(flights), 100):
            batch = [flight.request_fields() for flight in flights[start : start + 100]]
            assert fresh.post("/predict", json={"flights": batch}).status_code == 200


def psi(server: Observed) -> dict[tuple[str, str], float]:
    time.sleep(FLUSH_SECONDS + 0.5)  # every worker has flushed its window
    text = httpx.get(server.metrics_url + "/metrics").text
    return {
        (sample.labels["model"], sample.labels["feature"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "drift_psi"
    }


@pytest.mark.real_data
def test_one_month_of_flights_drifts_and_flights_like_training_do_not(
    observed: Observed, real_flights: dict[bool, list[Flight]] | None
) -> None:
    if real_flights is None:
        pytest.skip(
            f"real data not found at {data_location()} (the SCL 2017 file; ${DATA_ENV} sets the path)"
        )
    rng = random.Random(13)
    full = real_flights[True]
    like_training = [full[rng.randrange(len(full))] for _ in range(STREAM)]
    # half of them without their schedule, for the minimal model
    like_training = [
        f if i % 2 else Flight(f.operator, f.flight_type, f.month)
        for i, f in enumerate(like_training)
    ]
    stream(observed, like_training)
    stable = psi(observed)
    assert {model for model, _ in stable} == {"delay-minimal", "delay-full"}
    assert len(stable) == 4 + 9  # minimal: 3 inputs + proba; full: 8 inputs + proba
    assert max(stable.values()) < PSI_WARN, stable

    july = [flight for flight in full if flight.month == 7]
    one_month = [july[rng.randrange(len(july))] for _ in range(STREAM)]
    one_month = [
        f if i % 2 else Flight(f.operator, f.flight_type, f.month) for i, f in enumerate(one_month)
    ]
    stream(observed, one_month)
    drifted = psi(observed)
    assert drifted["delay-minimal", "MES"] > PSI_ALERT
    assert drifted["delay-full", "MES"] > PSI_ALERT


@pytest.mark.real_data
def test_each_month_of_the_data_alone_moves_only_the_seasonal_inputs(
    observed: Observed, real_flights: dict[bool, list[Flight]] | None
) -> None:
    """Live traffic is about one month's flights. Each month of the data the models learnt
    from, alone in the windows, keeps every input the drift alert watches under PSI_ALERT (no
    alert all year round on the training flights themselves) while MES is far over it in every
    month (so an alert on MES fired whatever the traffic: it leaves SEASONAL_INPUTS out)."""
    if real_flights is None:
        pytest.skip(
            f"real data not found at {data_location()} (the SCL 2017 file; ${DATA_ENV} sets the path)"
        )
    months = replay(observed.url, observed.metrics_url, real_flights[True], REPLAY)
    assert [month.month for month in months] == list(range(1, 13))
    for month in months:
        assert set(month.gauges) == {"delay-minimal", "delay-full"}, month
        assert alerting(month) == {"delay-minimal": [], "delay-full": []}, month
        for model in month.gauges.values():
            assert all(model[name] > PSI_ALERT for name in SEASONAL_INPUTS), month

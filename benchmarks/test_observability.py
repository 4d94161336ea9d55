"""What observability costs, in-process (`make bench`; reports/observability.md reads a run).

* drift: `Window.observe`, the only per-flight work (target: under 2 µs a flight), and /predict
  with drift on against DRIFT=0, whose observer is the plain prediction counter;
* trace context: the request-ID middleware, which also scans for `traceparent`, with and
  without one;
* the layers that are only in the stack when asked (ACCESS_LOG, METRICS_BIND,
  OTEL_EXPORTER_OTLP_ENDPOINT): /predict with all of them off, then each on.

Off, the access log, the metrics port and tracing add no layer and import nothing
(tests/test_tracing.py, tests/test_logs.py): their "off" rows are the baseline itself.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette

from app.inference.flights import FlightValidator
from app.inference.model import MINIMAL_MODEL, OnnxModel
from app.main import create_app
from app.observability.drift import Profile, Window
from app.observability.logs import JsonFormatter
from app.observability.request_id import RequestIdMiddleware
from app.settings import Settings
from benchmarks.asgi import request_caller, started
from benchmarks.conftest import JSON, MODELS_DIR, SIZES, make_flights, on_the_calling_thread
from tests.conftest import add_profiles

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(scope="session")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed models, their cards given a profile if they have none (of flights drawn
    over their vocabulary: the cost does not depend on which profile)."""
    models = Path(shutil.copytree(MODELS_DIR, tmp_path_factory.mktemp("bench") / "models"))
    operators = OnnxModel.load(MODELS_DIR, MINIMAL_MODEL).card.operators
    validator = FlightValidator(operators, 10**6)
    add_profiles(models, lambda schedule: validator.flights(make_flights(5000, schedule, seed=9)))
    return models


def served(settings: Settings) -> Iterator[Starlette]:
    with started(create_app(on_the_calling_thread(settings))) as app:
        yield app


@pytest.fixture(scope="session")
def drift_on(profiled: Path) -> Iterator[Starlette]:
    yield from served(Settings(models_dir=profiled))


@pytest.fixture(scope="session")
def drift_off(profiled: Path) -> Iterator[Starlette]:
    yield from served(Settings(models_dir=profiled, drift=False))


def _ok(messages: list[dict[str, Any]]) -> int:
    assert messages[0]["status"] == 200, messages
    return len(orjson.loads(messages[1]["body"])["predict"])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("contract", ["minimal", "full"])
@pytest.mark.parametrize("drift", ["off", "on"])
def test_predict_drift(
    benchmark: Any,
    drift_on: Starlette,
    drift_off: Starlette,
    drift: str,
    contract: str,
    size: int,
) -> None:
    benchmark.group = f"drift /predict {contract} {size}"
    app = drift_on if drift == "on" else drift_off
    body = orjson.dumps({"flights": make_flights(size, contract == "full")})
    call = request_caller(app, "POST", "/predict", body, headers=JSON)
    assert _ok(call()) == size
    benchmark(call)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("contract", ["minimal", "full"])
def test_drift_window_observe(
    benchmark: Any, drift_on: Starlette, profiled: Path, contract: str, size: int
) -> None:
    """Window.observe alone: what drift adds per flight (extra_info: ns_per_flight)."""
    benchmark.group = "drift Window.observe"
    models = drift_on.state.models
    model = models.full if contract == "full" else models.minimal
    batch = drift_on.state.validator.batch(make_flights(size, contract == "full"))
    columns = batch.full if contract == "full" else batch.minimal
    prediction = model.predict(columns)
    window = Window(
        Profile.from_json(model.card.raw["profile"], model.card.encoder.schedule), 10_000
    )
    window.observe(columns, prediction.probabilities, prediction.delayed)
    assert window.totals()[1] == size
    benchmark(window.observe, columns, prediction.probabilities, prediction.delayed)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["ns_per_flight"] = benchmark.stats.stats.median * 1e9 / size


async def _constant(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.mark.parametrize("traceparent", ["absent", "valid"])
def test_request_id_middleware(benchmark: Any, traceparent: str) -> None:
    """The trace-context scan is always on: its cost without and with a traceparent."""
    benchmark.group = "traceparent"
    headers = {"X-Request-ID": "lb-7f3a9c2e-0001"}
    if traceparent == "valid":
        headers["traceparent"] = TRACEPARENT
    call = request_caller(RequestIdMiddleware(_constant), "GET", "/", headers=headers)
    start = call()[0]
    assert (b"traceparent" in dict(start["headers"])) is (traceparent == "valid")
    benchmark(call)


LAYERS: dict[str, dict[str, Any]] = {
    "all off": {},
    "ACCESS_LOG": {"access_log": "-"},
    "METRICS_BIND": {"metrics_bind": "127.0.0.1:9100"},
    "OTEL_EXPORTER_OTLP_ENDPOINT": {"otel_endpoint": "http://127.0.0.1:9"},
}


@pytest.mark.parametrize("layer", list(LAYERS))
def test_predict_with_each_layer_on(benchmark: Any, profiled: Path, layer: str) -> None:
    """One minimal flight through /predict, drift off, with each optional layer on in turn."""
    benchmark.group = "optional layers, /predict minimal 1"
    access = logging.getLogger("app.access")
    sink = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115  # a JSON line written
    sink.setFormatter(JsonFormatter())
    access.handlers, access.propagate = [sink], False
    settings = Settings(models_dir=profiled, drift=False, **LAYERS[layer])
    for app in served(settings):
        body = orjson.dumps({"flights": make_flights(1, False)})
        call = request_caller(app, "POST", "/predict", body, headers=JSON)
        assert _ok(call()) == 1
        benchmark(call)
    sink.stream.close()
    access.handlers = []

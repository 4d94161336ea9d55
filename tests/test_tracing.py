"""app.observability.tracing: off, nothing of OpenTelemetry is loaded or in the request path; on, a
real server exports a span per request, continuing the caller's traceparent, to an OTLP/HTTP
collector (a stub on a loopback port that keeps what it receives)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from app.main import create_app
from app.settings import Settings
from tests.conftest import MODELS_DIR, ROOT
from tests.test_server import HOST, spawn, stop, wait_until_ready

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def test_tracing_off_loads_nothing_of_opentelemetry() -> None:
    """In a fresh interpreter: building and serving the app leaves `opentelemetry` unimported."""
    script = (
        "import sys\n"
        "from starlette.testclient import TestClient\n"
        "from app.main import create_app\n"
        "from app.settings import Settings\n"
        f"with TestClient(create_app(Settings(models_dir=__import__('pathlib').Path({str(MODELS_DIR)!r})))) as c:\n"
        "    assert c.get('/health').status_code == 200\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_tracing_on_wraps_the_app_and_off_does_not() -> None:
    def outer(settings: Settings) -> str:
        return type(create_app(settings).build_middleware_stack()).__name__

    assert outer(Settings(models_dir=MODELS_DIR)) == "RequestIdMiddleware"
    assert outer(Settings(models_dir=MODELS_DIR, otel_endpoint="http://127.0.0.1:4318")) == (
        "OpenTelemetryMiddleware"
    )


def test_an_endpoint_without_the_extra_is_a_start_up_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from app import settings

    monkeypatch.setattr(settings, "OTEL_MODULES", ("opentelemetry.not_installed",))
    with pytest.raises(ValueError, match=r"OTEL_EXPORTER_OTLP_ENDPOINT=.*pip install '\.\[otel\]'"):
        Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})


class Collector(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__((HOST, 0), _Handler)
        self.requests: list[ExportTraceServiceRequest] = []

    def spans(self) -> list[Any]:
        return [
            span
            for request in list(self.requests)
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]


class _Handler(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces":
            self.server.requests.append(ExportTraceServiceRequest.FromString(body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.server
def test_a_served_request_is_a_span_of_the_callers_trace(
    tmp_path: Path, collector: Collector
) -> None:
    running = spawn(
        tmp_path,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{HOST}:{collector.server_address[1]}",
        OTEL_BSP_SCHEDULE_DELAY="100",  # ms between exports, instead of 5 s
        LOG_FORMAT="json",
        ACCESS_LOG="-",
    )
    try:
        wait_until_ready(running)
        answer = httpx.post(
            running.url + "/predict",
            json={"flights": [{"OPERA": "Grupo LATAM", "TIPOVUELO": "N", "MES": 3}]},
            headers={"traceparent": TRACEPARENT},
        )
        assert answer.status_code == 200
        assert answer.headers["traceparent"] == TRACEPARENT
        # no traceparent: a new trace, whose ID the request's log line carries
        untraced = httpx.get(running.url + "/v2", headers={"X-Request-ID": "no-trace"})
        assert untraced.status_code == 200
        deadline = time.monotonic() + 20
        while not (
            any(s.trace_id.hex() == TRACE_ID for s in collector.spans())
            and any(s.name == "GET /v2" for s in collector.spans())
        ):
            assert time.monotonic() < deadline, "the spans did not reach the collector"
            time.sleep(0.1)
    finally:
        stop(running)
    lines = [json.loads(line) for line in (tmp_path / "stdout.log").read_text().splitlines()]
    (logged,) = [line for line in lines if line["request_id"] == "no-trace"]
    (new_trace,) = [span for span in collector.spans() if span.name == "GET /v2"]
    assert logged["trace_id"] == new_trace.trace_id.hex() != TRACE_ID
    spans = [span for span in collector.spans() if span.trace_id.hex() == TRACE_ID]
    server_spans = [span for span in spans if span.parent_span_id.hex() == PARENT_ID]
    assert len(server_spans) == len(spans) == 1  # no span per ASGI receive or send
    attributes = {a.key: a.value.string_value for a in server_spans[0].attributes}
    assert attributes.get("http.route") == "/predict"
    resources = {
        a.key: a.value.string_value
        for request in collector.requests
        for resource in request.resource_spans
        for a in resource.resource.attributes
    }
    assert resources["service.name"] == "latam-delay"
    # probes and scrapes are not traced
    assert not any("health" in span.name or "metrics" in span.name for span in collector.spans())

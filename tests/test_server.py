"""The service as it is deployed: a real gunicorn master with two uvicorn workers on a loopback
port, spoken to over real sockets by httpx and by the unmodified Triton HTTP client."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx2 as httpx
import numpy as np
import pytest
import tritonclient.http as triton
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient
from tritonclient.utils import InferenceServerException

from app import cpus
from app.observability.metrics import FLUSH_SECONDS
from app.server.coalesce import LINGER
from app.server.protocol import REFUSED_ROUTE
from app.settings import max_workers
from benchmarks.chaos import wait_for
from benchmarks.stress import defaults_environment
from tests.conftest import MODELS_DIR, PAYLOADS, ROOT, payload_request

pytestmark = pytest.mark.server

GUNICORN = Path(sys.executable).with_name("gunicorn")
HOST = "127.0.0.1"
WORKERS = 2
STARTUP_TIMEOUT = 30.0
"""Seconds for the server to answer ready; start-up takes ~1 s on an idle machine."""
FAILURE_TIMEOUT = 20.0
"""Seconds for a server with a broken model to give up."""
SHUTDOWN_TIMEOUT = 30.0
"""Over gunicorn.conf.py's graceful_timeout (20 s)."""


MINIMAL_FLIGHTS: list[dict[str, Any]] = [
    {"OPERA": "Aerolineas Argentinas", "TIPOVUELO": "N", "MES": 3},
    {"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 7},
    {"OPERA": "Sky Airline", "TIPOVUELO": "N", "MES": 12},
    {"OPERA": "Copa Air", "TIPOVUELO": "I", "MES": 1},
    {"OPERA": "Avianca", "TIPOVUELO": "I", "MES": 9},
    {"OPERA": "Latin American Wings", "TIPOVUELO": "N", "MES": 7},
    {"OPERA": "JetSmart SPA", "TIPOVUELO": "N", "MES": 12},
    {"OPERA": "Plus Ultra Lineas Aereas", "TIPOVUELO": "I", "MES": 7},
    # Within 0.003 of the committed minimal model's threshold, one on each side.
    {"OPERA": "Avianca", "TIPOVUELO": "I", "MES": 4},
    {"OPERA": "British Airways", "TIPOVUELO": "N", "MES": 11},
]
FULL_FLIGHTS: list[dict[str, Any]] = [
    {
        "OPERA": "Grupo LATAM",
        "TIPOVUELO": "I",
        "MES": 1,
        "Fecha-I": "2017-01-01 23:30:00",
        "Des-I": "KMIA",
        "Emp-I": "LAN",
        "Vlo-I": "226",
    },
    {
        "OPERA": "Sky Airline",
        "TIPOVUELO": "N",
        "MES": 7,
        "Fecha-I": "2017-07-14 06:10:00",
        "Des-I": "SCFA",
        "Emp-I": "SKU",
        "Vlo-I": "106",
    },
    {
        "OPERA": "Aerolineas Argentinas",
        "TIPOVUELO": "I",
        "MES": 3,
        "Fecha-I": "2017-03-05 19:45:00",
        "Des-I": "SABE",
        "Emp-I": "ARG",
        "Vlo-I": "1283",
    },
    {
        "OPERA": "Latin American Wings",
        "TIPOVUELO": "N",
        "MES": 7,
        "Fecha-I": "2017-07-20 20:00:00",
        "Des-I": "SCIE",
        "Emp-I": "LAW",
        "Vlo-I": "41",
    },
]
MINIMAL_INPUTS = ("OPERA", "TIPOVUELO", "MES")
FULL_INPUTS = (*MINIMAL_INPUTS, "Fecha-I", "Des-I", "Emp-I", "Vlo-I")


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen[bytes]
    port: int
    workdir: Path
    """The server's TMPDIR: its prometheus multiprocess directory is made in here."""
    stderr: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log(self) -> str:
        return self.stderr.read_text(encoding="utf-8", errors="replace")

    def metrics_dir(self) -> Path:
        (directory,) = self.workdir.glob("latam-delay-metrics-*")
        return directory


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def spawn(
    workdir: Path,
    preexec: Callable[[], None] | None = None,
    app: str = "app.main:create_app()",
    wrapper: tuple[str, ...] = (),
    **env: str,
) -> Server:
    """gunicorn exactly as deployed, in its own session, with its own temp and control-socket
    directories so that concurrent test runs (or a developer's server) cannot collide.
    `preexec` runs in the child before gunicorn (a resource limit, say); `app` is the app path
    an operator's command names; `wrapper`, a command that ends by executing the one it is
    given (a namespace with a mount of its own, say)."""
    workdir.mkdir(parents=True, exist_ok=True)
    environment = defaults_environment()  # none of the settings a developer's shell may carry
    port = free_port()
    environment |= {
        "BIND": f"{HOST}:{port}",
        "WORKERS": str(WORKERS),
        "LOG_LEVEL": "info",
        "TMPDIR": str(workdir),
        "XDG_RUNTIME_DIR": str(workdir),
        "GRPC_BIND": "",  # tests/test_grpc_server.py gives its servers a free loopback port
        **env,
    }
    stderr = workdir / "stderr.log"
    with stderr.open("wb") as err, (workdir / "stdout.log").open("wb") as out:
        process = subprocess.Popen(
            [*wrapper, str(GUNICORN), "-c", "gunicorn.conf.py", app],
            cwd=ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            preexec_fn=preexec,
        )
    return Server(process, port, workdir, stderr)


def stop(server: Server) -> None:
    if server.process.poll() is not None:
        return
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=SHUTDOWN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)  # the session start_new_session made
        server.process.wait(timeout=SHUTDOWN_TIMEOUT)


def wait_until_ready(server: Server, startups: int = WORKERS) -> None:
    """Ready = /v2/health/ready answers 200 and every worker has finished loading its models,
    so that requests can land on either worker (`startups`: the worker starts logged by then)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if server.process.poll() is not None:
            pytest.fail(
                f"gunicorn exited with {server.process.returncode} before it was ready:\n"
                + server.log()
            )
        try:
            status = httpx.get(server.url + "/v2/health/ready", timeout=5).status_code
        except httpx.TransportError:
            status = None
        if status == 200 and server.log().count("Application startup complete") >= startups:
            return
        if time.monotonic() > deadline:
            stop(server)
            pytest.fail(
                f"gunicorn not ready after {STARTUP_TIMEOUT:.0f} s (last status {status}):\n"
                + server.log()
            )
        time.sleep(0.1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = spawn(tmp_path_factory.mktemp("gunicorn"))
    try:
        wait_until_ready(running)
        yield running
    finally:
        stop(running)


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def triton_client(server: Server) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(
        url=f"{HOST}:{server.port}", connection_timeout=30, network_timeout=30
    )
    yield client
    client.close()


def card(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MODELS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return data


def predict(http: httpx.Client, flights: list[dict[str, Any]]) -> dict[str, Any]:
    response = http.post("/predict?proba=true", json={"flights": flights})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- /predict ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flights",
    [
        pytest.param(MINIMAL_FLIGHTS[:1], id="challenge-minimal"),
        pytest.param(MINIMAL_FLIGHTS, id="minimal"),
        pytest.param(FULL_FLIGHTS, id="full"),
        pytest.param(
            [
                flight
                for pair in zip(MINIMAL_FLIGHTS, FULL_FLIGHTS, strict=False)
                for flight in pair
            ],
            id="mixed",
        ),
    ],
)
def test_predict_serves_the_committed_models(
    http: httpx.Client, client: TestClient, flights: list[dict[str, Any]]
) -> None:
    body = {"flights": flights}
    served = http.post("/predict", json=body)
    assert served.status_code == 200, served.text
    assert served.headers["content-type"] == "application/json"
    assert list(served.json()) == ["predict"]
    assert len(served.json()["predict"]) == len(flights)
    assert served.json() == client.post("/predict", json=body).json()

    served_proba = http.post("/predict", params={"proba": "true"}, json=body).json()
    local_proba = client.post("/predict", params={"proba": "true"}, json=body).json()
    assert served_proba["predict"] == served.json()["predict"]
    np.testing.assert_allclose(served_proba["proba"], local_proba["proba"], rtol=0, atol=1e-6)


def test_predict_labels_follow_each_models_threshold(http: httpx.Client) -> None:
    """Each label is the served probability against the committed card's threshold; both
    labels occur in these flights, so the comparison above is not of all zeros."""
    for flights, name in ((MINIMAL_FLIGHTS, "delay-minimal"), (FULL_FLIGHTS, "delay-full")):
        body = predict(http, flights)
        threshold = card(name)["threshold"]
        assert body["predict"] == [int(p >= threshold) for p in body["proba"]]
    assert set(predict(http, MINIMAL_FLIGHTS + FULL_FLIGHTS)["predict"]) == {0, 1}


def test_bad_month_is_a_400_naming_the_field(http: httpx.Client) -> None:
    flights = [
        *MINIMAL_FLIGHTS[:2],
        {"OPERA": "Aerolineas Argentinas", "TIPOVUELO": "N", "MES": 13},
    ]
    response = http.post("/predict", json={"flights": flights})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["detail"] == {
        "index": 2,
        "field": "MES",
        "value": 13,
        "allowed": "an integer from 1 to 12",
    }
    assert "MES" in body["error"]


def test_get_predict_is_a_405_in_json(http: httpx.Client) -> None:
    response = http.get("/predict")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/json"
    assert "GET" in response.json()["error"]


def test_every_invalid_payload_gets_its_client_error_over_the_wire(http: httpx.Client) -> None:
    """The shared invalid-payload cases through uvicorn's parser: the expected 4xx, never a
    500 and never a traceback."""
    cases = json.loads((PAYLOADS / "predict_invalid.json").read_text(encoding="utf-8"))
    wrong = []
    for case in cases:
        url, content, headers = payload_request(case)
        response = http.post(url, content=content, headers=headers)
        ok = (
            response.status_code == case["status"]
            and response.headers.get("content-type") == "application/json"
            and isinstance(response.json().get("error"), str)
            and "Traceback" not in response.text
            and ("field" not in case or response.json()["detail"]["field"] == case["field"])
        )
        if not ok:
            wrong.append((case["id"], response.status_code, response.text[:200]))
    assert cases
    assert wrong == []


def test_body_over_the_limit_is_a_413(http: httpx.Client) -> None:
    content = b'{"flights": [' + b" " * 1_100_000 + b"]}"
    response = http.post("/predict", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["detail"] == {"limit": 1_048_576}


def read_after_sending(server: Server, *parts: bytes) -> bytes:
    """What a client reads to the end of the connection once it has sent `parts`, 1 ms apart;
    b"" if the connection was reset (the answer, if any, lost with it)."""
    with socket.create_connection((HOST, server.port), timeout=10) as connection:
        answer = b""
        try:
            for part in parts:
                connection.sendall(part)
                time.sleep(0.001)
            while chunk := connection.recv(65536):
                answer += chunk
        except (BrokenPipeError, ConnectionResetError):
            return b""
        return answer


@pytest.mark.parametrize(
    ("request_line", "fields", "trailing", "status"),
    [
        pytest.param(b"HTTP/1.1", b"Connection: close\r\n", None, b"413", id="close-413"),
        pytest.param(b"HTTP/1.0", b"", None, b"413", id="http10-413"),
        pytest.param(b"HTTP/1.1", b"Connection: close\r\n", b"\r\n", b"200", id="close-crlf"),
    ],
)
def test_an_answer_that_closes_is_read_whatever_the_client_sends_after_it(
    server: Server, request_line: bytes, fields: bytes, trailing: bytes | None, status: bytes
) -> None:
    """Closed at once after its answer, a connection the client still sent on was reset by the
    kernel, and the client lost the answer it had not read: a 413 given before a body over
    MAX_BODY_BYTES was in (165 of 200 uploads read a reset), an answer followed by a stray CRLF
    (230 of 2,000). It closes in stages now (app.server.coalesce.LINGER)."""
    body = b'{"flights":[{"OPERA":"Grupo LATAM","TIPOVUELO":"N","MES":3}]}'
    if trailing is None:  # over the limit: answered 413 from its length, before it is read
        body = b'{"flights": [' + b" " * 1_100_000 + b"]}"
    head = (
        b"POST /predict " + request_line + b"\r\nHost: x\r\n" + fields
        + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )  # fmt: skip
    parts = (head, body) if trailing is None else (head + body, trailing)
    answers = [read_after_sending(server, *parts)[:12] for _ in range(20)]
    assert answers == [b"HTTP/1.1 " + status] * 20


def test_a_connection_closed_in_stages_is_closed_after_linger_whatever_its_client_does(
    server: Server,
) -> None:
    """The staged close ends LINGER s (and up to a sweep) after the answer even if the client
    neither closes nor stops sending: a half-closed connection is not held for ever."""
    with socket.create_connection((HOST, server.port), timeout=10) as connection:
        connection.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := connection.recv(65536):  # to the server's half-close
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ")
        start, error = time.monotonic(), None
        while error is None and time.monotonic() - start < LINGER + 3:
            try:
                connection.sendall(b"x")  # read and dropped until the close; then reset
            except (BrokenPipeError, ConnectionResetError) as reset:
                error = reset
            time.sleep(0.05)
        assert error is not None
        assert time.monotonic() - start >= LINGER - 0.2


def test_health_routes(http: httpx.Client) -> None:
    assert http.get("/health").json() == {"status": "OK"}
    assert http.get("/v2/health/live").json() == {"live": True}
    ready = http.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


# --- Open Inference Protocol through the Triton client ---------------------------------------


def test_triton_client_health_and_metadata(triton_client: triton.InferenceServerClient) -> None:
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    assert triton_client.is_model_ready("delay-minimal")
    assert triton_client.is_model_ready("delay-full")
    assert not triton_client.is_model_ready("delay-nope")
    minimal_version = card("delay-minimal")["version"]
    assert triton_client.is_model_ready("delay-minimal", model_version=minimal_version)
    assert not triton_client.is_model_ready("delay-minimal", model_version="0")

    server_metadata = triton_client.get_server_metadata()
    assert server_metadata["name"] == "latam-delay"
    assert server_metadata["version"] == version("latam-delay")
    assert "binary_tensor_data" in server_metadata["extensions"]

    metadata = triton_client.get_model_metadata("delay-full")
    assert metadata["name"] == "delay-full"
    assert metadata["versions"] == [card("delay-full")["version"]]
    assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == [
        ("OPERA", "BYTES"),
        ("TIPOVUELO", "BYTES"),
        ("MES", "INT64"),
        ("Fecha-I", "BYTES"),
        ("Des-I", "BYTES"),
        ("Emp-I", "BYTES"),
        ("Vlo-I", "BYTES"),
    ]
    assert [(o["name"], o["datatype"]) for o in metadata["outputs"]] == [
        ("label", "INT64"),
        ("proba", "FP32"),
    ]
    minimal = triton_client.get_model_metadata("delay-minimal")
    assert [i["name"] for i in minimal["inputs"]] == list(MINIMAL_INPUTS)


def infer_inputs(
    flights: list[dict[str, Any]], names: tuple[str, ...], binary_data: bool
) -> list[triton.InferInput]:
    inputs = []
    for name in names:
        if name == "MES":
            values = np.array([flight[name] for flight in flights], dtype=np.int64)
            tensor = triton.InferInput(name, [len(flights)], "INT64")
        else:
            values = np.array([flight[name] for flight in flights], dtype=np.object_)
            tensor = triton.InferInput(name, [len(flights)], "BYTES")
        tensor.set_data_from_numpy(values, binary_data=binary_data)
        inputs.append(tensor)
    return inputs


REQUESTED_OUTPUTS = [
    triton.InferRequestedOutput("label", binary_data=True),
    triton.InferRequestedOutput("proba", binary_data=False),
]


@pytest.mark.parametrize("binary_data", [True, False], ids=["binary-inputs", "json-inputs"])
@pytest.mark.parametrize("versioned", [False, True], ids=["latest", "versioned"])
def test_triton_infer_minimal_matches_predict(
    http: httpx.Client,
    triton_client: triton.InferenceServerClient,
    binary_data: bool,
    versioned: bool,
) -> None:
    expected = predict(http, MINIMAL_FLIGHTS)
    result = triton_client.infer(
        "delay-minimal",
        infer_inputs(MINIMAL_FLIGHTS, MINIMAL_INPUTS, binary_data),
        model_version=card("delay-minimal")["version"] if versioned else "",
        outputs=REQUESTED_OUTPUTS,
        request_id="minimal-1",
    )
    response = result.get_response()
    assert response["model_name"] == "delay-minimal"
    assert response["model_version"] == card("delay-minimal")["version"]
    assert response["id"] == "minimal-1"
    assert result.get_output("label")["parameters"]["binary_data_size"] == 8 * len(MINIMAL_FLIGHTS)
    assert "data" in result.get_output("proba")

    labels = result.as_numpy("label")
    probabilities = result.as_numpy("proba")
    assert labels.dtype == np.int64
    assert probabilities.dtype == np.float32
    assert labels.tolist() == expected["predict"]
    np.testing.assert_allclose(probabilities, expected["proba"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("binary_data", [True, False], ids=["binary-inputs", "json-inputs"])
def test_triton_infer_full_matches_predict(
    http: httpx.Client, triton_client: triton.InferenceServerClient, binary_data: bool
) -> None:
    expected = predict(http, FULL_FLIGHTS)
    result = triton_client.infer(
        "delay-full",
        infer_inputs(FULL_FLIGHTS, FULL_INPUTS, binary_data),
        outputs=REQUESTED_OUTPUTS,
    )
    assert result.get_response()["model_version"] == card("delay-full")["version"]
    assert result.as_numpy("label").tolist() == expected["predict"]
    np.testing.assert_allclose(result.as_numpy("proba"), expected["proba"], rtol=0, atol=1e-6)


def test_triton_infer_error_is_a_400_naming_the_input(
    triton_client: triton.InferenceServerClient,
) -> None:
    flights = [
        *MINIMAL_FLIGHTS[:2],
        {"OPERA": "Aerolineas Argentinas", "TIPOVUELO": "N", "MES": 13},
    ]
    with pytest.raises(InferenceServerException) as raised:
        triton_client.infer(
            "delay-minimal",
            infer_inputs(flights, MINIMAL_INPUTS, binary_data=True),
            outputs=REQUESTED_OUTPUTS,
        )
    assert raised.value.status() == "400"
    assert "MES" in raised.value.message()

    with pytest.raises(InferenceServerException) as unknown:
        triton_client.infer(
            "delay-nope", infer_inputs(flights[:1], MINIMAL_INPUTS, binary_data=True)
        )
    assert unknown.value.status() == "404"
    assert "delay-nope" in unknown.value.message()


# --- metrics across workers -------------------------------------------------------------------


def scrape(url: str) -> list[Metric]:
    """One scrape over a new connection, so successive scrapes may reach either worker."""
    with httpx.Client(base_url=url, timeout=30) as fresh:
        response = fresh.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return list(text_string_to_metric_families(response.text))


def predict_requests(families: list[Metric]) -> float:
    return sum(
        sample.value
        for family in families
        for sample in family.samples
        if sample.name == "http_request_duration_seconds_count"
        and sample.labels.get("route") == "/predict"
        and sample.labels.get("method") == "POST"
        and sample.labels.get("status") == "200"
    )


def model_workers(families: list[Metric]) -> dict[str, float]:
    """`model_workers` by model: the live workers that loaded it."""
    return {
        sample.labels["model"]: sample.value
        for family in families
        for sample in family.samples
        if sample.name == "model_workers"
    }


def predictions(families: list[Metric], model: str) -> float:
    return sum(
        sample.value
        for family in families
        for sample in family.samples
        if sample.name == "predictions_total" and sample.labels.get("model") == model
    )


def totals(url: str, scrapes: int = 6) -> tuple[float, float, float]:
    """Every scrape must give the same totals, whichever worker answers it, once every worker
    has flushed its tallies (app.observability.metrics flushes them each FLUSH_SECONDS)."""
    time.sleep(FLUSH_SECONDS + 0.5)
    seen = set()
    for _ in range(scrapes):
        families = scrape(url)
        seen.add(
            (
                predict_requests(families),
                predictions(families, "delay-minimal"),
                predictions(families, "delay-full"),
            )
        )
    assert len(seen) == 1, f"scrapes disagree: {seen}"
    (only,) = seen
    return only


def predict_requests_by_worker(metrics_dir: Path, scratch: Path) -> dict[str, float]:
    """/predict 200s counted in each worker's own histogram file."""
    counts = {}
    for path in sorted(metrics_dir.glob("histogram_*.db")):
        alone = scratch / path.stem
        alone.mkdir(parents=True)
        shutil.copy(path, alone)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]  # unannotated upstream
        counts[path.stem.removeprefix("histogram_")] = predict_requests(list(registry.collect()))
    return counts


def test_metrics_sum_every_workers_requests(server: Server, tmp_path: Path) -> None:
    requests = 200
    bodies = [{"flights": MINIMAL_FLIGHTS[: 1 + i % 3]} for i in range(requests)]
    flights = sum(len(body["flights"]) for body in bodies)
    before = totals(server.url)

    limits = httpx.Limits(max_keepalive_connections=0)  # a new connection for every request
    with (
        httpx.Client(base_url=server.url, timeout=30, limits=limits) as fresh,
        ThreadPoolExecutor(max_workers=8) as pool,
    ):
        statuses = list(
            pool.map(lambda body: fresh.post("/predict", json=body).status_code, bodies)
        )
    assert statuses == [200] * requests

    after = totals(server.url)
    assert after[0] - before[0] == requests
    assert after[1] - before[1] == flights
    assert after[2] == before[2]

    by_worker = predict_requests_by_worker(server.metrics_dir(), tmp_path)
    served = {pid: count for pid, count in by_worker.items() if count}
    assert len(served) >= 2, f"one worker served every /predict: {by_worker}"
    assert sum(served.values()) == after[0]


def workers_of(server: Server) -> set[int]:
    """The master's children: its live workers (no gRPC or other child here)."""
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    return {int(pid) for pid in children.read_text().split()}


def test_reloads_archive_the_old_workers_files_and_keep_the_totals_exact(tmp_path: Path) -> None:
    """Each SIGHUP replaces both workers. Their counter and histogram files stayed, so that
    every scrape read more files after each reload; gunicorn.conf.py's child_exit now adds them
    into one archive per type (app.observability.metrics_archive): after four reloads the
    directory holds the live workers' files and the archives, and the totals are exact."""
    port = next(port for port in range(18200, 18300) if _free(port))
    server = spawn(tmp_path, BIND=f"{HOST}:{port}")
    server = Server(server.process, port, server.workdir, server.stderr)
    try:
        wait_until_ready(server)
        sent = flights = 0
        limits = httpx.Limits(max_keepalive_connections=0)  # either worker may answer each
        with httpx.Client(base_url=server.url, timeout=30, limits=limits) as fresh:
            for reload in range(1, 5):
                for i in range(20):
                    body = {"flights": MINIMAL_FLIGHTS[: 1 + i % 3]}
                    assert fresh.post("/predict", json=body).status_code == 200
                    sent, flights = sent + 1, flights + len(body["flights"])
                old = workers_of(server)
                os.kill(server.process.pid, signal.SIGHUP)
                wait_until_ready(server, startups=WORKERS * (reload + 1))
                deadline = time.monotonic() + SHUTDOWN_TIMEOUT
                while workers_of(server) & old and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert totals(server.url) == (sent, flights, 0)
        live = workers_of(server)
        assert len(live) == WORKERS
        deadline = time.monotonic() + 5
        # its reload counts (gunicorn.conf.py's on_reload), and the event-loop lag histogram,
        # which has no labels, so prometheus_client gives every process that imports it a file
        master = server.process.pid
        expected = (
            {f"{kind}_archive.db" for kind in ("counter", "histogram")}
            | {
                f"{kind}_{pid}.db"
                for pid in live
                for kind in ("counter", "histogram", "gauge_livesum", "gauge_livemostrecent")
            }
            | {f"{kind}_{master}.db" for kind in ("counter", "gauge_livemostrecent", "histogram")}
        )
        while (found := {p.name for p in server.metrics_dir().glob("*.db")}) != expected:
            assert time.monotonic() < deadline, sorted(found ^ expected)
            time.sleep(0.1)
    finally:
        stop(server)
    assert "not archived" not in server.log()


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def test_metrics_label_unknown_paths_as_one_route(server: Server, http: httpx.Client) -> None:
    for path in ("/wp-admin", "/etc/passwd", "/v3/anything"):
        assert http.get(path).status_code == 404
    time.sleep(FLUSH_SECONDS + 0.5)  # every worker has flushed its tallies
    families = scrape(server.url)
    routes = {
        sample.labels["route"]
        for family in families
        for sample in family.samples
        if sample.name == "http_request_duration_seconds_count"
    }
    assert "<unmatched>" in routes
    assert not routes & {"/wp-admin", "/etc/passwd", "/v3/anything"}


def answers_by_status(families: list[Metric], route: str) -> dict[str, float]:
    """The answers counted under `route`, by status."""
    counted: dict[str, float] = {}
    for family in families:
        for sample in family.samples:
            if sample.name == "http_requests_total" and sample.labels["route"] == route:
                status = sample.labels["status"]
                counted[status] = counted.get(status, 0.0) + sample.value
    return counted


def raw_answer(server: Server, sent: bytes) -> bytes:
    with socket.create_connection((HOST, server.port), timeout=10) as connection:
        connection.sendall(sent)
        return connection.recv(65536)


def test_metrics_count_the_http_layers_own_answers(server: Server, http: httpx.Client) -> None:
    """Bytes that are not HTTP (400) and a head over the limit (431) never reach the app: they
    are counted under their own route, and the request refused 431 is not counted as the 200
    its app would have given (before: neither was counted, and that 200 was), nor is a request
    pipelined behind it in the same write (until this was fixed, it was)."""
    time.sleep(FLUSH_SECONDS + 0.5)
    families = scrape(server.url)
    before = answers_by_status(families, REFUSED_ROUTE)
    health_before = answers_by_status(families, "/health")
    assert raw_answer(server, b"NOT HTTP\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    big = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    # and a request pipelined behind it, never answered: its app ran, counted as a 200
    assert raw_answer(server, big + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").startswith(
        b"HTTP/1.1 431 "
    )
    time.sleep(FLUSH_SECONDS + 0.5)
    families = scrape(server.url)
    after = answers_by_status(families, REFUSED_ROUTE)
    assert after.get("400", 0) - before.get("400", 0) == 1, after
    assert after.get("431", 0) - before.get("431", 0) == 1, after
    assert answers_by_status(families, "/health") == health_before


@pytest.mark.parametrize(
    "sent",
    [
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nzz\r\n",
    ],
    ids=["bad-chunk-size", "misframed-after-an-upgrade-offer"],
)
def test_metrics_count_a_misframed_body_as_the_400_its_client_got(
    server: Server, sent: bytes
) -> None:
    """The app of such a request is already running when its body turns out misframed: it
    reads a disconnect and answers a closed connection. Counted before: that never-sent answer
    (a 499, or the 415 the app gives `gzip`), by its route, and not the 400 the client got."""
    time.sleep(FLUSH_SECONDS + 0.5)
    families = scrape(server.url)
    refused_before = answers_by_status(families, REFUSED_ROUTE)
    predict_before = answers_by_status(families, "/predict")
    assert raw_answer(server, sent).startswith(b"HTTP/1.1 400 ")
    time.sleep(FLUSH_SECONDS + 0.5)
    families = scrape(server.url)
    refused_after = answers_by_status(families, REFUSED_ROUTE)
    assert refused_after.get("400", 0) - refused_before.get("400", 0) == 1, refused_after
    assert answers_by_status(families, "/predict") == predict_before


# --- start-up failure -------------------------------------------------------------------------


def truncate(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def failed_start(failing: Server) -> str:
    """The log of a server that must exit non-zero on its own, soon."""
    try:
        returncode = failing.process.wait(timeout=FAILURE_TIMEOUT)
    except subprocess.TimeoutExpired:
        stop(failing)
        pytest.fail(f"gunicorn still running {FAILURE_TIMEOUT:.0f} s on:\n" + failing.log())
    log = failing.log()
    assert returncode != 0, log
    return log


def refused_in_the_master(run: Path, **env: str) -> list[str]:
    """The `cannot start` lines of a server its master stopped before forking any worker, with
    nothing left behind."""
    log = failed_start(spawn(run, preexec=None, wrapper=(), **env))
    assert "Booting worker" not in log, log
    assert not list(run.glob("latam-delay-*")), log
    return [line for line in log.splitlines() if "cannot start" in line]


def directory_in_place(path: Path) -> None:
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize(
    ("damage", "broken"),
    [
        pytest.param(truncate, "delay-full.onnx", id="truncated-full-onnx"),
        pytest.param(Path.unlink, "delay-minimal.json", id="missing-minimal-card"),
        pytest.param(directory_in_place, "delay-full.onnx", id="directory-for-full-onnx"),
    ],
)
def test_a_broken_model_stops_start_up_with_one_line(
    tmp_path: Path, damage: Any, broken: str
) -> None:
    models = Path(shutil.copytree(MODELS_DIR, tmp_path / "models"))
    damage(models / broken)
    log = failed_start(spawn(tmp_path / "run", MODELS_DIR=str(models)))
    lines = [line for line in log.splitlines() if "cannot start" in line]
    assert len(lines) == 1, log
    assert lines[0].startswith("latam-delay: cannot start: "), log
    assert str(models / broken) in lines[0]
    assert "Traceback" not in log
    assert "Booting worker" not in log  # stopped in the master, before any worker
    assert not list((tmp_path / "run").glob("latam-delay-metrics-*"))  # no metrics dir left behind


def test_with_log_format_json_the_fatal_start_up_line_is_a_json_object_too(
    tmp_path: Path,
) -> None:
    """It was printed as text while every other line of the master was JSON (an operator probe:
    a log pipeline expecting JSON lines dropped or mangled the one line that said why)."""
    missing = tmp_path / "no-models"
    log = failed_start(spawn(tmp_path / "run", MODELS_DIR=str(missing), LOG_FORMAT="json"))
    entries = [json.loads(line) for line in log.strip().splitlines()]  # each line one object
    fatal = [entry for entry in entries if "cannot start" in entry["message"]]
    assert len(fatal) == 1, log
    assert fatal[0]["message"] == f"latam-delay: cannot start: model directory not found: {missing}"
    assert fatal[0]["level"] == "ERROR"
    assert fatal[0]["logger"] == "gunicorn.error"
    assert fatal[0]["pid"] == entries[0]["pid"]  # the master's, as its other lines


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WORKERS", "abc"),
        ("BIND", "nowhere"),
        ("MAX_BODY_BYTES", "-1"),
        # found by an operator probe: ~900 workers forked in seconds on a 2-core host
        ("WORKERS", "99999999999999999999"),
        # found by an operator probe: every worker crashed at boot in grpc.aio.server, forever
        ("MAX_BODY_BYTES", "2147483648"),
    ],
)
def test_a_bad_setting_stops_start_up_with_one_line(tmp_path: Path, name: str, value: str) -> None:
    # preexec named: a setting's name can then never bind it
    log = failed_start(spawn(tmp_path / "run", preexec=None, wrapper=(), **{name: value}))
    assert log.strip().splitlines() == [
        f"latam-delay: cannot start: {name}={value!r}: expected "
        + log.split(": expected ", 1)[1].strip()
    ], log
    assert not list((tmp_path / "run").glob("latam-delay-*"))  # nothing made, nothing left


def test_a_bind_in_gunicorn_cmd_args_that_drops_the_metrics_port_stops_start_up(
    tmp_path: Path,
) -> None:
    """GUNICORN_CMD_ARGS='--bind=…' (a platform guide's way to name the port) replaced BIND and
    METRICS_BIND alike: the server served, /metrics a 404 on the public port and nothing on
    METRICS_BIND's."""
    port, metrics = free_port(), f"{HOST}:{free_port()}"
    assert refused_in_the_master(
        tmp_path / "run", METRICS_BIND=metrics, GUNICORN_CMD_ARGS=f"--bind={HOST}:{port}"
    ) == [
        f"latam-delay: cannot start: METRICS_BIND={metrics!r}: not among the addresses gunicorn "
        f"listens on, {HOST}:{port}: a --bind (in GUNICORN_CMD_ARGS or the command) replaces "
        "BIND and METRICS_BIND; expected BIND instead"
    ]


def test_workers_in_gunicorn_cmd_args_past_the_bound_stops_start_up(tmp_path: Path) -> None:
    """GUNICORN_CMD_ARGS='--workers …' replaced WORKERS past the bound WORKERS has (found by an
    operator probe): a mistyped count forked that many workers."""
    most = max_workers(cpus.available())
    assert refused_in_the_master(tmp_path / "run", GUNICORN_CMD_ARGS=f"--workers {most + 1}") == [
        f"latam-delay: cannot start: workers={most + 1} (gunicorn's --workers, in "
        f"GUNICORN_CMD_ARGS or the command): expected at most {most}, as WORKERS; expected "
        "WORKERS instead"
    ]


def test_preload_in_gunicorn_cmd_args_stops_start_up(tmp_path: Path) -> None:
    """GUNICORN_CMD_ARGS=--preload (found by an operator probe) made the app in the master before
    on_starting pinned the checked snapshot: every worker loaded the operator's MODELS_DIR itself.
    With a broken release there, the next worker started (a crash, a timeout, a SIGHUP) failed to
    boot with a traceback and gunicorn halted the whole server."""
    assert refused_in_the_master(tmp_path / "run", GUNICORN_CMD_ARGS="--preload") == [
        "latam-delay: cannot start: preload_app=True (gunicorn's --preload, in GUNICORN_CMD_ARGS "
        "or the command): expected it off, the workers would load MODELS_DIR itself rather than "
        "the release the master checked"
    ]


@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_a_wsgi_worker_class_in_gunicorn_cmd_args_stops_start_up(
    tmp_path: Path, worker_class: str
) -> None:
    """GUNICORN_CMD_ARGS=--worker-class sync (found by an operator probe) started a server that
    answered every request, readiness included, with a 500 and a TypeError traceback."""
    assert refused_in_the_master(
        tmp_path / "run", GUNICORN_CMD_ARGS=f"--worker-class {worker_class}"
    ) == [
        f"latam-delay: cannot start: worker_class={worker_class} (gunicorn's --worker-class, in "
        "GUNICORN_CMD_ARGS or the command): a WSGI worker, this app is ASGI; expected none "
        "(app.server.worker.UvicornWorker) or another uvicorn worker"
    ]


def test_workers_in_gunicorn_cmd_args_within_the_bound_are_gunicorns_to_set(
    tmp_path: Path,
) -> None:
    server = spawn(tmp_path / "run", GUNICORN_CMD_ARGS="--workers 1")
    try:
        wait_until_ready(server, startups=1)
        assert model_workers(scrape(server.url)) == {"delay-minimal": 1, "delay-full": 1}
    finally:
        stop(server)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching the workers' user needs root")
def test_gunicorns_user_setting_stops_start_up_with_one_line(tmp_path: Path) -> None:
    """`--user` (a root master, workers as another user: a classic systemd unit) left every
    worker unable to read the master's private model snapshot: a traceback each, then gunicorn
    halted ("Worker failed to boot")."""
    assert refused_in_the_master(
        tmp_path / "run", GUNICORN_CMD_ARGS="--user 65534 --group 65534"
    ) == [
        "latam-delay: cannot start: user=65534, group=65534 (gunicorn's --user and --group, in "
        "GUNICORN_CMD_ARGS or the command): expected none, the workers could not read the "
        "master's run directories; start gunicorn as that user (systemd's User=, USER)"
    ]


def test_a_descriptor_limit_too_low_for_a_worker_stops_start_up_with_one_line(
    tmp_path: Path,
) -> None:
    """Started under `ulimit -n 32`, every worker crashed at boot (EMFILE out of uvloop, a
    traceback each, or a SIGSEGV in grpcio), and gunicorn forked the next at once: 75 boots in
    5 s, never serving, never exiting."""
    log = failed_start(
        spawn(
            tmp_path / "run", preexec=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))
        )
    )
    assert log.strip().splitlines() == [
        "latam-delay: cannot start: [Errno 24] a descriptor limit (ulimit -n, a container's "
        "nofile) of 32 leaves a worker too few: it needs 64"
    ], log
    assert not list((tmp_path / "run").glob("latam-delay-*"))  # nothing made, nothing left


def test_a_metrics_directory_given_from_outside_starts_empty_after_a_crash(
    tmp_path: Path,
) -> None:
    """An operator probe: PROMETHEUS_MULTIPROC_DIR set from outside was never wiped, so after a
    crash and a restart model_workers counted the dead run's workers beside the live ones (4 of
    2) and the counters went on from the dead run's. The master now removes the prometheus files
    (`*.db`) there at start, and only those."""
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "notes.txt").write_text("kept")
    crashed = spawn(tmp_path / "crashed", PROMETHEUS_MULTIPROC_DIR=str(metrics))
    try:
        wait_until_ready(crashed)
        httpx.post(crashed.url + "/predict", json={"flights": MINIMAL_FLIGHTS}, timeout=30)
        time.sleep(FLUSH_SECONDS + 0.5)
    finally:
        os.killpg(crashed.process.pid, signal.SIGKILL)  # master and workers: no exit hook runs
        crashed.process.wait(timeout=SHUTDOWN_TIMEOUT)
    assert list(metrics.glob("gauge_livesum_*.db"))  # the dead workers' share is still there
    restarted = spawn(tmp_path / "restarted", PROMETHEUS_MULTIPROC_DIR=str(metrics))
    try:
        wait_until_ready(restarted)
        families = scrape(restarted.url)
    finally:
        stop(restarted)
    assert model_workers(families) == {"delay-minimal": WORKERS, "delay-full": WORKERS}
    assert predict_requests(families) == 0
    assert (metrics / "notes.txt").read_text() == "kept"


def test_a_metrics_directory_another_running_server_writes_in_is_refused(
    tmp_path: Path,
) -> None:
    """Two servers given one PROMETHEUS_MULTIPROC_DIR (a copied unit file, say): the second's
    start wiped the first's live files, then each /metrics summed both servers' workers. The
    first holds the directory (app.server.run_dirs.hold); the second now stops with one line,
    and the first still counts its own workers."""
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    first = spawn(tmp_path / "first", PROMETHEUS_MULTIPROC_DIR=str(metrics))
    try:
        wait_until_ready(first)
        log = failed_start(spawn(tmp_path / "second", PROMETHEUS_MULTIPROC_DIR=str(metrics)))
        assert log.strip().splitlines() == [
            f"latam-delay: cannot start: PROMETHEUS_MULTIPROC_DIR={str(metrics)!r}: another "
            "running server writes its metrics there; give each server a directory of its own"
        ], log
        assert not list((tmp_path / "second").glob("latam-delay-*"))  # nothing made, nothing left
        assert model_workers(scrape(first.url)) == {"delay-minimal": WORKERS, "delay-full": WORKERS}
    finally:
        stop(first)


@pytest.mark.usefixtures("private_mounts")
def test_a_full_metrics_filesystem_is_served_through_without_a_crash(tmp_path: Path) -> None:
    """An operator's PROMETHEUS_MULTIPROC_DIR on a tmpfs that is full (a small emptyDir, say).
    prometheus_client's files are sparse, so the first write of a new series was a SIGBUS: the
    master died at its first count, and a worker forked later died at boot, then every worker
    forked in its place (40 in 3 s). Allocated when made (app.observability.metric_files), a
    file the filesystem cannot hold is an error logged once: the server serves, its scrapes
    answer, and a worker killed is replaced once."""
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    fill = 'mount -t tmpfs -o size=256k tmpfs "$0" && { cat /dev/zero > "$0/filler"; exec "$@"; }'
    server = spawn(
        tmp_path / "run",
        wrapper=("unshare", "-rm", "sh", "-c", fill, str(metrics)),
        PROMETHEUS_MULTIPROC_DIR=str(metrics),
    )
    try:
        wait_until_ready(server)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for flight in MINIMAL_FLIGHTS:
                assert predict(client, [flight])["predict"] in ([0], [1])
            assert client.get("/no-such-route").status_code == 404
            assert client.get("/metrics").status_code == 200
            worker = min(workers_of(server))
            os.kill(worker, signal.SIGKILL)
            wait_until_ready(server, startups=WORKERS + 1)
            time.sleep(1.0)  # a crash loop would show by now
            for flight in MINIMAL_FLIGHTS:
                assert predict(client, [flight])["predict"] in ([0], [1])
        log = server.log()
        assert server.process.poll() is None, log
    finally:
        stop(server)
    assert "SIGBUS" not in log, log
    assert log.count("Booting worker") == WORKERS + 1, log
    assert "not made (No space left on device)" in log, log


def test_a_metrics_directory_removed_from_under_the_server_comes_back_with_its_counts(
    tmp_path: Path,
) -> None:
    """tmpwatch, tmpreaper (which ignore the master's lock) or an operator's `rm` took the run's
    metrics directory: every scrape was then a 500, and the next worker forked (one killed, a
    reload) failed to boot on its metric files, so gunicorn halted the server. Each process
    now writes its files again where they were, with their values (app.observability.
    metric_files): the counts go on, a killed worker is replaced and its counts archived."""
    server = spawn(tmp_path / "run")
    try:
        wait_until_ready(server)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for flight in MINIMAL_FLIGHTS:
                predict(client, [flight])
            time.sleep(FLUSH_SECONDS + 0.5)
            before = predict_requests(scrape(server.url))
            shutil.rmtree(server.metrics_dir())
            time.sleep(FLUSH_SECONDS + 0.5)  # each worker's next flush
            assert predict_requests(scrape(server.url)) == before
            os.kill(min(workers_of(server)), signal.SIGKILL)
            wait_until_ready(server, startups=WORKERS + 1)
            for flight in MINIMAL_FLIGHTS:
                predict(client, [flight])
            time.sleep(FLUSH_SECONDS + 0.5)
            families = scrape(server.url)
        log = server.log()
    finally:
        stop(server)
    assert predict_requests(families) == before + len(MINIMAL_FLIGHTS), log
    assert model_workers(families) == {"delay-minimal": WORKERS, "delay-full": WORKERS}
    assert "Worker failed to boot" not in log, log
    assert "written again with their values" in log, log


@pytest.mark.usefixtures("private_mounts")
def test_a_tmpdir_turned_read_only_under_the_server_is_served_through(tmp_path: Path) -> None:
    """TMPDIR made read-only while the server runs (a read-only bind mount over it: `mount -o
    remount,ro` is refused while the server's metric files there are open for writing). Before,
    every scrape was a 500 (a traceback each); a worker killed, the master's child_exit raised
    EROFS (prometheus_client's mark_process_dead) into gunicorn's main loop, which stopped the
    other worker and exited; past that, no worker could be forked (gunicorn made its heartbeat
    file in TMPDIR); SIGTERM ended in a traceback, exit 1. Now each is served through: scrapes
    answer, a killed worker is replaced, a reload is refused with one line (its snapshot cannot
    be written) and its new workers serve the old models, and the master exits cleanly."""
    if not os.access("/dev/shm", os.W_OK | os.X_OK):
        pytest.skip("no writable /dev/shm for gunicorn's heartbeat files")
    tmpdir, turn, turned = tmp_path / "tmp", tmp_path / "turn", tmp_path / "turned"
    tmpdir.mkdir()
    script = (
        'mount -t tmpfs -o size=64m tmpfs "$0" && ( ( while [ ! -e "$1" ]; do sleep 0.1; done; '
        'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && touch "$2" ) & ) && '
        'shift 2 && exec "$@"'
    )
    server = spawn(
        tmp_path / "run",
        wrapper=("unshare", "-rm", "sh", "-c", script, str(tmpdir), str(turn), str(turned)),
        TMPDIR=str(tmpdir),
    )
    try:
        wait_until_ready(server)
        turn.touch()
        assert wait_for(turned.exists, timeout=10)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/metrics").status_code == 200
            os.kill(min(workers_of(server)), signal.SIGKILL)
            wait_until_ready(server, startups=WORKERS + 1)
            server.process.send_signal(signal.SIGHUP)
            wait_until_ready(server, startups=2 * WORKERS + 1)
            for flight in MINIMAL_FLIGHTS:
                assert predict(client, [flight])["predict"] in ([0], [1])
            assert client.get("/metrics").status_code == 200
        assert server.process.poll() is None, server.log()
    finally:
        stop(server)
    log = server.log()
    assert server.process.returncode == 0, log
    assert "Traceback" not in log, log
    assert "model reload refused" in log, log


def test_a_metrics_directory_from_outside_that_is_no_directory_stops_start_up(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "missing"
    log = failed_start(spawn(tmp_path / "run", PROMETHEUS_MULTIPROC_DIR=str(missing)))
    assert log.strip().splitlines() == [
        f"latam-delay: cannot start: PROMETHEUS_MULTIPROC_DIR={str(missing)!r}: expected a "
        f"directory: [Errno 20] not a directory: {str(missing)!r}"
    ], log
    assert not list((tmp_path / "run").glob("latam-delay-*"))  # nothing made, nothing left


def test_the_real_server_sends_no_server_header(server: Server, http: httpx.Client) -> None:
    """uvicorn adds `server: uvicorn` unless told not to (app.server.worker): ask the real
    server."""
    answers = [
        http.get("/health"),
        http.get("/no/such/path"),
        http.post("/predict", json={"flights": []}),
        http.post("/predict", json={"flights": [MINIMAL_FLIGHTS[0]]}),
    ]
    assert [answer.status_code for answer in answers] == [200, 404, 400, 200]
    for answer in answers:
        assert "server" not in answer.headers, answer.headers


def test_a_request_id_with_trailing_whitespace_is_the_clients_own(server: Server) -> None:
    """llhttp keeps a field value's trailing whitespace, which RFC 9110 §5.5 excludes: the ID
    `abc-1 ` was no valid one, and the answer carried a generated ID the client never sent."""
    sent = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-ID: abc-1 \t\r\nConnection: close\r\n\r\n"
    answer = raw_answer(server, sent)
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert b"\r\nx-request-id: abc-1\r\n" in answer, answer


def test_past_the_in_flight_bound_the_real_server_answers_503_with_retry_after(
    tmp_path: Path,
) -> None:
    """One worker that may hold one request: while it scores large batches pipelined on one
    connection (one in flight at a time, the next started as the last is answered: the worker
    stays full for as long as they come), another request gets the shed answer at once, and the
    batches still complete. They come until the two requests shed at once have been: a fixed
    eight (about 0.2 s of scoring) were once all answered before the first probe on a loaded
    machine, and every probe got its 200 for 30 s. The shed client, re-sending at once on its
    kept-alive connection, gets its next 503 only once the Retry-After has elapsed; a request it
    re-sends and then leaves is neither shed nor counted as shed. (A request whose body is still to come does not
    count against the bound: tests/test_protocol.py.)"""
    running = spawn(tmp_path / "run", WORKERS="1", MAX_IN_FLIGHT="1")

    def post(content: bytes) -> bytes:
        return (
            b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(content) + content
        )

    body = json.dumps({"flights": [MINIMAL_FLIGHTS[0]]}).encode()
    request = post(body)
    batch = json.dumps({"flights": FULL_FLIGHTS * (5_000 // len(FULL_FLIGHTS))}).encode()
    shed_twice = threading.Event()

    def keep_full(busy: socket.socket) -> tuple[int, bytes]:
        """Two batches pipelined at a time on `busy` (the second read while the first is
        scored), their answers read, until `shed_twice`: the batches sent, the answers read."""
        sent, answers = 0, b""
        while not shed_twice.is_set():
            busy.sendall(post(batch) * 2)
            sent += 2
            while answers.count(b"HTTP/1.1 ") < sent:
                received = busy.recv(1 << 20)
                if not received:
                    return sent, answers
                answers += received
        return sent, answers

    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while "Application startup complete" not in running.log():
            assert running.process.poll() is None, running.log()
            assert time.monotonic() < deadline, running.log()
            time.sleep(0.1)
        with (
            socket.create_connection((HOST, running.port), timeout=30) as busy,
            ThreadPoolExecutor(1) as sender,
        ):
            sending = sender.submit(keep_full, busy)
            deadline = time.monotonic() + STARTUP_TIMEOUT
            try:
                while True:  # the worker is full once it has read the first batch's head
                    shed = httpx.post(running.url + "/predict", content=body, timeout=30,
                                      headers={"content-type": "application/json"})  # fmt: skip
                    if shed.status_code == 503 or time.monotonic() > deadline:
                        break
                while True:
                    client = socket.create_connection((HOST, running.port), timeout=30)
                    client.sendall(request)
                    first = client.recv(65536)  # this connection's first shed request: at once
                    if first.startswith(b"HTTP/1.1 503 ") or time.monotonic() > deadline:
                        break
                    # admitted between two batches (the next one's body still arriving: not in
                    # flight), as on a loaded machine: a new connection tries again
                    client.close()
            finally:
                shed_twice.set()  # the batches sent finish well before the Retry-After's release
            with client:
                shed_at = time.monotonic()
                client.sendall(request)  # re-sent at once
                again = client.recv(65536)
                waited = time.monotonic() - shed_at
                client.sendall(request)  # re-sent at once again, then the client leaves
            batches, answers = sending.result()
        assert shed.status_code == 503, shed.text
        assert shed.headers["retry-after"] == "1"
        assert shed.headers["x-request-id"]
        assert shed.json()["error"].startswith("overloaded")
        assert first.startswith(b"HTTP/1.1 503 "), first
        assert again.startswith(b"HTTP/1.1 503 "), again
        assert b"\r\nretry-after: 1\r\n" in again
        assert waited >= 0.5, "answered at once, not held until its Retry-After had elapsed"
        assert answers.count(b"HTTP/1.1 200 ") == batches, answers[:300]
        after = httpx.post(running.url + "/predict", content=body, timeout=30,
                           headers={"content-type": "application/json"})  # fmt: skip
        assert after.status_code == 200, "the bound was released with the batches"
        time.sleep(1 + FLUSH_SECONDS + 0.5)  # the third's Retry-After, then the flush
        counted = sum(
            sample.value
            for family in scrape(running.url)
            for sample in family.samples
            if sample.name == "http_requests_total" and sample.labels.get("route") == "<shed>"
        )
        assert counted == 3, "shed, first, again: the request of the client that left is not"
    finally:
        stop(running)


def test_idle_connections_past_max_connections_cannot_take_a_workers_files(
    tmp_path: Path,
) -> None:
    """Found by a descriptor probe: REST connections were bounded in time (HEAD_TIMEOUT), not in
    number, and each is a file: 1,100 sending nothing took all 1,024 of a worker's, and
    `/predict` and the metrics refused new connections until the head timeout closed them.
    Here the files are held to 256 (soft and hard: the master cannot lift them), so each worker
    holds at most 64 connections (MAX_CONNECTIONS' default, a quarter): 600 idle ones leave
    both workers with files to spare, the oldest closed as new ones come."""
    limit = 256
    running = spawn(
        tmp_path, preexec=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    )
    try:
        wait_until_ready(running)
        with contextlib.ExitStack() as held:
            idle = [
                held.enter_context(socket.create_connection((HOST, running.port), timeout=5))
                for _ in range(600)
            ]
            bound = WORKERS * limit // 4
            assert wait_for(
                lambda: sum(map(closed_by_server, idle)) >= len(idle) - bound, timeout=10
            )
            with httpx.Client(base_url=running.url, timeout=10) as rest:
                assert predict(rest, MINIMAL_FLIGHTS)["predict"]
                assert rest.get("/metrics").status_code == 200
            assert not closed_by_server(idle[-1])  # the newest are the ones held

            def closed_unanswered() -> float:
                return sum(
                    sample.value
                    for family in scrape(running.url)
                    for sample in family.samples
                    if sample.name == "http_connections_closed_total"
                    and sample.labels["closed"] == "unanswered"
                )

            assert wait_for(lambda: closed_unanswered() >= len(idle) - bound, timeout=5)
        assert "connection(s) closed to stay within MAX_CONNECTIONS=64" in running.log()
    finally:
        stop(running)


def closed_by_server(sock: socket.socket) -> bool:
    """The server closed `sock` (what it sent before is read and dropped)."""
    sock.setblocking(False)
    try:
        while sock.recv(65_536):
            pass
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True

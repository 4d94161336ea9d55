"""The OIP over gRPC as deployed: a real gunicorn with two workers, each serving GRPC_BIND on a
loopback port, spoken to by the unmodified `tritonclient.grpc` (and its own protobuf stubs for
the messages that client cannot send: typed contents, hostile requests).

This process never imports app.grpc: its messages and tritonclient's share the `inference`
proto package, which one process cannot hold twice (app/grpc/__init__.py)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx2 as httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from google.protobuf import json_format
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from app.observability.metrics import FLUSH_SECONDS
from benchmarks import grpc_load
from benchmarks.chaos import point, retagged_release, wait_for
from tests.conftest import MODELS_DIR, PADDED_REQUEST_IDS, PAYLOADS, SEVERAL_REQUEST_IDS
from tests.test_server import (
    FULL_FLIGHTS,
    FULL_INPUTS,
    HOST,
    MINIMAL_FLIGHTS,
    MINIMAL_INPUTS,
    WORKERS,
    Server,
    card,
    closed_by_server,
    failed_start,
    free_port,
    predict,
    spawn,
    stop,
    wait_until_ready,
    workers_of,
)

pytestmark = pytest.mark.server

MAX_FLIGHTS = 100
MAX_STREAMS = 32
SERVICE = "/inference.GRPCInferenceService/"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = (0).to_bytes(3, "big") + bytes([4, 0]) + (0).to_bytes(4, "big")
"""An HTTP/2 frame: length 0, type SETTINGS, no flags, stream 0."""
FRESH = [("grpc.use_local_subchannel_pool", 1)]
"""Channel options that give a channel its own connection: by default grpc shares one between
channels to the same target, so a "new" channel may reuse an open connection."""
MODELS = {
    "delay-minimal": (MINIMAL_FLIGHTS, MINIMAL_INPUTS),
    "delay-full": (FULL_FLIGHTS, FULL_INPUTS),
}


@dataclass(frozen=True)
class GrpcServer:
    http: Server
    target: str
    early_status: grpc.StatusCode | None
    """What a call got right after gunicorn was spawned, before any worker was ready."""


def serving(server: Server, target: str) -> GrpcServer:
    channel = grpc.insecure_channel(target)
    try:
        pb_grpc.GRPCInferenceServiceStub(channel).ServerReady(pb.ServerReadyRequest(), timeout=5)
        early = None
    except grpc.RpcError as error:
        early = error.code()
    finally:
        channel.close()
    wait_until_ready(server)
    if not wait_for(lambda: server.log().count("gRPC serving on") >= WORKERS, timeout=30):
        stop(server)
        pytest.fail("the workers did not all start gRPC:\n" + server.log())
    return GrpcServer(server, target, early)


@contextlib.contextmanager
def serving_grpc(workdir: Path, **env: str) -> Iterator[GrpcServer]:
    """A server with gRPC on a free loopback port, once every worker serves it; stopped after."""
    target = f"{HOST}:{free_port()}"
    running = spawn(
        workdir, preexec=None, wrapper=(), GRPC_BIND=target, **env
    )  # named: env binds neither
    try:
        yield serving(running, target)
    finally:
        stop(running)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServer]:
    with serving_grpc(
        tmp_path_factory.mktemp("grpc"),
        MAX_FLIGHTS=str(MAX_FLIGHTS),
        GRPC_MAX_STREAMS=str(MAX_STREAMS),
    ) as server:
        yield server


@pytest.fixture(scope="module")
def client(served: GrpcServer) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(served.target) as grpc_client:
        yield grpc_client


@pytest.fixture(scope="module")
def stub(served: GrpcServer) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(served.target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def http(served: GrpcServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.http.url, timeout=30) as http_client:
        yield http_client


def raw_inputs(flights: list[dict[str, Any]], names: tuple[str, ...]) -> list[triton.InferInput]:
    inputs = []
    for name in names:
        integers = name == "MES"
        tensor = triton.InferInput(name, [len(flights)], "INT64" if integers else "BYTES")
        values = [flight[name] for flight in flights]
        tensor.set_data_from_numpy(np.array(values, dtype=np.int64 if integers else object))
        inputs.append(tensor)
    return inputs


def typed_request(model: str, flights: list[dict[str, Any]], names: tuple[str, ...]) -> Any:
    request = pb.ModelInferRequest(model_name=model)
    for name in names:
        values = [flight[name] for flight in flights]
        if name == "MES":
            tensor = request.inputs.add(name=name, datatype="INT64", shape=[len(flights)])
            tensor.contents.int64_contents.extend(values)
        else:
            tensor = request.inputs.add(name=name, datatype="BYTES", shape=[len(flights)])
            tensor.contents.bytes_contents.extend(value.encode() for value in values)
    return request


def outputs(result: triton.InferResult) -> tuple[list[int], np.ndarray]:
    labels = result.as_numpy("label")
    probabilities = result.as_numpy("proba")
    assert labels.dtype == np.int64
    assert probabilities.dtype == np.float32
    return labels.tolist(), probabilities


def status_of(call: Any) -> grpc.StatusCode:
    try:
        call()
    except InferenceServerException as error:
        return getattr(grpc.StatusCode, str(error.status()).removeprefix("StatusCode."))
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK


# --- the unmodified client ---------------------------------------------------------------------


def test_health_and_metadata_answer_like_rest(
    client: triton.InferenceServerClient, http: httpx.Client
) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    server = client.get_server_metadata(as_json=True)
    assert server == http.get("/v2").json()
    for name in MODELS:
        version = card(name)["version"]
        assert client.is_model_ready(name)
        assert client.is_model_ready(name, version)
        metadata = client.get_model_metadata(name, as_json=True)
        rest = http.get(f"/v2/models/{name}").json()
        assert metadata["versions"] == rest["versions"] == [version]
        assert metadata["platform"] == rest["platform"]
        for key in ("inputs", "outputs"):
            assert [
                (t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in metadata[key]
            ] == [(t["name"], t["datatype"], t["shape"]) for t in rest[key]]


@pytest.mark.parametrize("model", list(MODELS))
def test_raw_contents_round_trip_gives_rests_labels_and_probabilities(
    client: triton.InferenceServerClient, http: httpx.Client, model: str
) -> None:
    flights, names = MODELS[model]
    result = client.infer(model, raw_inputs(flights, names), request_id="round-trip-1")
    labels, probabilities = outputs(result)
    response = result.get_response(as_json=True)
    assert response["model_name"] == model
    assert response["model_version"] == card(model)["version"]
    assert response["id"] == "round-trip-1"
    rest = predict(http, flights)
    assert labels == rest["predict"]
    assert probabilities.tolist() == np.array(rest["proba"], dtype=np.float32).tolist()


@pytest.mark.parametrize("model", list(MODELS))
def test_typed_contents_give_the_same_answer_as_raw_contents(
    client: triton.InferenceServerClient,
    stub: pb_grpc.GRPCInferenceServiceStub,
    http: httpx.Client,
    model: str,
) -> None:
    flights, names = MODELS[model]
    typed = triton.InferResult(stub.ModelInfer(typed_request(model, flights, names), timeout=10))
    raw = client.infer(model, raw_inputs(flights, names))
    assert outputs(typed)[0] == outputs(raw)[0]
    assert outputs(typed)[1].tobytes() == outputs(raw)[1].tobytes()
    rest_oip = http.post(
        f"/v2/models/{model}/infer",
        json={
            "inputs": [
                {
                    "name": name,
                    "datatype": "INT64" if name == "MES" else "BYTES",
                    "shape": [len(flights)],
                    "data": [flight[name] for flight in flights],
                }
                for name in names
            ]
        },
    ).json()
    rest_labels, rest_proba = (output["data"] for output in rest_oip["outputs"])
    assert outputs(typed)[0] == rest_labels
    assert outputs(typed)[1].tolist() == np.array(rest_proba, dtype=np.float32).tolist()


def test_an_int32_month_gives_the_int64_answer_typed_or_raw(
    client: triton.InferenceServerClient, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    """MES may come as INT32, as over REST: in `int_contents` or as 4-byte raw elements."""
    flights, names = MODELS["delay-minimal"]
    expected = outputs(client.infer("delay-minimal", raw_inputs(flights, names)))
    typed = typed_request("delay-minimal", flights, names)
    month = next(tensor for tensor in typed.inputs if tensor.name == "MES")
    month.datatype = "INT32"
    month.contents.Clear()
    month.contents.int_contents.extend(flight["MES"] for flight in flights)
    raw = raw_inputs(flights, names)
    raw[names.index("MES")] = triton.InferInput("MES", [len(flights)], "INT32")
    raw[names.index("MES")].set_data_from_numpy(
        np.array([flight["MES"] for flight in flights], dtype=np.int32)
    )
    for result in (
        triton.InferResult(stub.ModelInfer(typed, timeout=10)),
        client.infer("delay-minimal", raw),
    ):
        labels, probabilities = outputs(result)
        assert labels == expected[0]
        assert probabilities.tobytes() == expected[1].tobytes()


@pytest.mark.parametrize("model", list(MODELS))
def test_a_full_batch_gives_rests_answer_typed_or_raw(
    client: triton.InferenceServerClient,
    stub: pb_grpc.GRPCInferenceServiceStub,
    http: httpx.Client,
    model: str,
) -> None:
    """MAX_FLIGHTS flights: enough for the raw BYTES tensors of equal-length elements (flight
    type, codes, dates) to be split by numpy, and for the column checks to see whole columns."""
    flights, names = MODELS[model]
    flights = (flights * MAX_FLIGHTS)[:MAX_FLIGHTS]
    rest = predict(http, flights)
    for result in (
        client.infer(model, raw_inputs(flights, names)),
        triton.InferResult(stub.ModelInfer(typed_request(model, flights, names), timeout=10)),
    ):
        labels, probabilities = outputs(result)
        assert labels == rest["predict"]
        assert probabilities.tolist() == np.array(rest["proba"], dtype=np.float32).tolist()


def test_requested_outputs_only_and_in_order(client: triton.InferenceServerClient) -> None:
    flights, names = MODELS["delay-minimal"]
    result = client.infer(
        "delay-minimal",
        raw_inputs(flights, names),
        outputs=[triton.InferRequestedOutput("proba")],
    )
    assert [output["name"] for output in result.get_response(as_json=True)["outputs"]] == ["proba"]
    assert result.as_numpy("label") is None


def test_the_version_rules_are_rests(client: triton.InferenceServerClient) -> None:
    flights, names = MODELS["delay-full"]
    version = card("delay-full")["version"]
    assert client.infer("delay-full", raw_inputs(flights, names), model_version=version)
    for call in (
        lambda: client.infer("delay-full", raw_inputs(flights, names), model_version="1"),
        lambda: client.get_model_metadata("delay-full", "1"),
        lambda: client.is_model_ready("delay-fullest"),
    ):
        assert status_of(call) == grpc.StatusCode.NOT_FOUND


# --- errors and limits ---------------------------------------------------------------------------


def payload_cases(name: str) -> list[Any]:
    cases: list[Any] = json.loads((PAYLOADS / name).read_text(encoding="utf-8"))
    return [pytest.param(case, id=case["id"]) for case in cases]


@pytest.mark.parametrize("case", payload_cases("grpc_infer_invalid.json"))
def test_hostile_requests_get_a_status_code_naming_the_problem(
    stub: pb_grpc.GRPCInferenceServiceStub, case: dict[str, Any]
) -> None:
    request = json_format.ParseDict(case["request"], pb.ModelInferRequest())
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(request, timeout=10)
    assert raised.value.code() == getattr(grpc.StatusCode, case["code"])
    assert case["match"] in raised.value.details()


def test_more_flights_than_the_limit_is_resource_exhausted(
    client: triton.InferenceServerClient,
) -> None:
    flights = [MINIMAL_FLIGHTS[0]] * (MAX_FLIGHTS + 1)
    with pytest.raises(InferenceServerException, match=f"the limit is {MAX_FLIGHTS}") as raised:
        client.infer("delay-minimal", raw_inputs(flights, MINIMAL_INPUTS))
    assert raised.value.status() == "StatusCode.RESOURCE_EXHAUSTED"


def test_a_message_over_the_body_limit_is_resource_exhausted(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    request = typed_request("delay-minimal", MINIMAL_FLIGHTS[:1], MINIMAL_INPUTS)
    request.inputs[0].contents.bytes_contents[0] = b"x" * 1_100_000  # MAX_BODY_BYTES: 1 MiB
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_connection_may_carry_max_streams_calls_at_once(served: GrpcServer) -> None:
    """The server's HTTP/2 SETTINGS frame, read off the wire, announces GRPC_MAX_STREAMS."""
    host, port = served.target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(PREFACE + EMPTY_SETTINGS)
        header = _read(sock, 9)
        length, kind = int.from_bytes(header[:3], "big"), header[3]
        assert kind == 4  # SETTINGS
        payload = _read(sock, length)
    settings = dict(struct.iter_unpack(">HI", payload))
    assert settings[0x3] == MAX_STREAMS  # SETTINGS_MAX_CONCURRENT_STREAMS


def test_a_ping_flood_is_answered_without_goaway(served: GrpcServer) -> None:
    """Found by an HTTP/2 probe: past grpcio's default two ping strikes the server sent GOAWAY
    (ENHANCE_YOUR_CALM) yet kept the connection open and read on, and stopped answering the
    pings, queueing each answer at a cost that grew with the queue: one connection's 20-s PING
    flood (~490,000 pings, its client reading the answers) left the worker burning a core for
    minutes after the client had gone, in 3 of 4 runs. Now every ping is answered, as cheap as
    any other frame."""
    host, port = served.target.rsplit(":", 1)
    ping = (8).to_bytes(3, "big") + bytes([6, 0]) + (0).to_bytes(4, "big") + b"12345678"
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(PREFACE + EMPTY_SETTINGS)
        for burst in range(3):  # grpcio's GOAWAY followed the first burst's answers
            sock.sendall(ping * 100)
            acks = 0
            while acks < 100:
                header = _read(sock, 9)
                kind, flags = header[3], header[4]
                _read(sock, int.from_bytes(header[:3], "big"))
                assert kind != 7, f"GOAWAY in burst {burst}, after {acks} ping answers"
                acks += kind == 6 and flags & 0x1  # PING, ACK


def test_a_connection_without_calls_is_closed_after_grpc_idle_seconds(tmp_path: Path) -> None:
    """Found by an HTTP/2 probe: a connection that finished its handshake and then sent nothing
    stayed open for ever (3,000 of them, 150 s), each a file descriptor of the worker's, until
    none was left for REST either. Now the server sends GOAWAY once it has been idle."""
    target = f"{HOST}:{free_port()}"
    running = spawn(tmp_path, GRPC_BIND=target, GRPC_IDLE_SECONDS="1")
    try:
        serving(running, target)
        host, port = target.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=15) as sock:
            sock.sendall(PREFACE + EMPTY_SETTINGS)
            started = time.monotonic()
            kinds: list[int] = []
            while 7 not in kinds:  # GOAWAY
                header = _read(sock, 9)
                kinds.append(header[3])
                _read(sock, int.from_bytes(header[:3], "big"))
            assert time.monotonic() - started < 10, kinds
    finally:
        stop(running)


def test_a_worker_holds_grpc_max_connections_and_its_files_are_lifted_to_the_hard_limit(
    tmp_path: Path,
) -> None:
    """Found by a descriptor probe: gRPC connections were bounded in time (GRPC_IDLE_SECONDS),
    not in number, and each is a file: 1,100 idle ones took all 1,024 files of a worker (the
    soft limit of a systemd service or a containerd 2 container) and its REST and metrics ports
    with them. Now a worker closes a connection past GRPC_MAX_CONNECTIONS as it accepts it, and
    the master lifts the soft limit to the hard one before it forks (app.descriptors)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 512:
        pytest.skip(f"the hard limit on files ({hard}) leaves nothing to lift")
    target = f"{HOST}:{free_port()}"
    running = spawn(
        tmp_path,
        preexec=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard)),
        GRPC_BIND=target,
        GRPC_MAX_CONNECTIONS="8",
    )
    host, port = target.rsplit(":", 1)
    try:
        serving(running, target)
        for worker in workers_of(running):
            (line,) = [
                line
                for line in Path(f"/proc/{worker}/limits").read_text().splitlines()
                if line.startswith("Max open files")
            ]
            assert line.split()[3:5] == [str(hard), str(hard)], line
        with contextlib.ExitStack() as held:
            sockets = []
            for _ in range(40):
                sock = held.enter_context(socket.create_connection((host, int(port)), timeout=5))
                sock.sendall(PREFACE + EMPTY_SETTINGS)
                sockets.append(sock)
            assert wait_for(
                lambda: sum(map(closed_by_server, sockets)) >= 40 - WORKERS * 8, timeout=10
            )
            assert sum(not closed_by_server(sock) for sock in sockets) <= WORKERS * 8
            with httpx.Client(base_url=running.url, timeout=10) as rest:
                assert predict(rest, MINIMAL_FLIGHTS)["predict"]
        channel = grpc.insecure_channel(target, options=FRESH)
        try:
            pb_grpc.GRPCInferenceServiceStub(channel).ServerReady(
                pb.ServerReadyRequest(), timeout=10, wait_for_ready=True
            )
        finally:
            channel.close()
    finally:
        stop(running)


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data


def test_no_hostile_request_crashed_or_logged_an_error(served: GrpcServer) -> None:
    log = served.http.log()
    assert "unhandled error" not in log
    assert "Traceback" not in log
    assert served.http.process.poll() is None


def test_before_the_workers_are_ready_calls_are_unavailable(served: GrpcServer) -> None:
    assert served.early_status == grpc.StatusCode.UNAVAILABLE


# --- grpc.health.v1 ------------------------------------------------------------------------------

HEALTH = "/grpc.health.v1.Health/"


def _health_call(channel: grpc.Channel, method: str, request: Any, answer: Any) -> Any:
    call = channel.unary_unary(
        HEALTH + method,
        request_serializer=type(request).SerializeToString,
        response_deserializer=answer.FromString,
    )
    return call(request, timeout=5)


def test_the_standard_health_service_answers_as_kubernetes_grpc_probes_ask(
    served: GrpcServer,
) -> None:
    """What a Kubernetes `grpc:` probe, grpc-health-probe or a gRPC-aware balancer sends: the
    method paths and messages are grpc-proto's (app/grpc/health.proto, vendored unchanged)."""
    from app.grpc import health_pb2 as health  # grpc.health.v1: no clash with tritonclient's

    serving = health.HealthCheckResponse.SERVING
    with grpc.insecure_channel(served.target, options=FRESH) as channel:
        for service in ("", "inference.GRPCInferenceService"):
            request = health.HealthCheckRequest(service=service)
            assert _health_call(channel, "Check", request, health.HealthCheckResponse).status == (
                serving
            )
        with pytest.raises(grpc.RpcError) as raised:
            _health_call(
                channel,
                "Check",
                health.HealthCheckRequest(service="nope"),
                health.HealthCheckResponse,
            )
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        listed = _health_call(
            channel, "List", health.HealthListRequest(), health.HealthListResponse
        )
        assert {name: answer.status for name, answer in listed.statuses.items()} == {
            "": serving,
            "inference.GRPCInferenceService": serving,
        }
        watch = channel.unary_stream(
            HEALTH + "Watch",
            request_serializer=health.HealthCheckRequest.SerializeToString,
            response_deserializer=health.HealthCheckResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as raised:
            next(iter(watch(health.HealthCheckRequest(), timeout=5)))
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED  # "not supported": no retry


# --- request IDs and metrics ---------------------------------------------------------------------


def test_the_callers_request_id_comes_back_and_a_bad_one_is_replaced(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    _, call = stub.ServerLive.with_call(
        pb.ServerLiveRequest(), metadata=(("x-request-id", "trace-42"),), timeout=5
    )
    assert ("x-request-id", "trace-42") in call.trailing_metadata()
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelMetadata(
            pb.ModelMetadataRequest(name="nope"), metadata=(("x-request-id", "no spaces"),)
        )
    ids = [value for key, value in raised.value.trailing_metadata() if key == "x-request-id"]
    assert len(ids) == 1
    assert ids[0] != "no spaces"


@pytest.mark.parametrize(("sent", "kept"), SEVERAL_REQUEST_IDS, ids=str)
def test_of_several_request_ids_the_first_is_judged_as_rest_judges_it(
    stub: pb_grpc.GRPCInferenceServiceStub, sent: list[str], kept: str | None
) -> None:
    metadata = tuple(("x-request-id", value) for value in sent)
    _, call = stub.ServerLive.with_call(pb.ServerLiveRequest(), metadata=metadata, timeout=5)
    (answered,) = [value for key, value in call.trailing_metadata() if key == "x-request-id"]
    assert answered == kept if kept is not None else answered not in sent


@pytest.mark.parametrize("sent", PADDED_REQUEST_IDS, ids=repr)
def test_spaces_around_a_request_id_are_no_part_of_it_as_over_rest(
    stub: pb_grpc.GRPCInferenceServiceStub, sent: str
) -> None:
    """HTTP/2 keeps them in the metadata's value; uvicorn's HTTP/1.1 parser drops them."""
    _, call = stub.ServerLive.with_call(
        pb.ServerLiveRequest(), metadata=(("x-request-id", sent),), timeout=5
    )
    assert ("x-request-id", "abc-1") in call.trailing_metadata()


def samples(http: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = http.get("/metrics").text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def grpc_count(metrics: dict[Any, float], method: str, status: str) -> float:
    labels = frozenset({("route", SERVICE + method), ("method", "GRPC"), ("status", status)})
    return metrics.get(("http_requests_total", labels), 0.0)


def flights_scored(metrics: dict[Any, float], model: str) -> float:
    """predictions_total of `model`, summed over its labels (and versions)."""
    return sum(
        value
        for (name, labels), value in metrics.items()
        if name == "predictions_total" and ("model", model) in labels
    )


def counted(http: httpx.Client) -> dict[Any, float]:
    """The gRPC calls and predictions counted so far, once two scrapes a flush apart agree (a
    worker adds its tallies to the shared files once a second, later on a loaded machine)."""

    def read() -> dict[Any, float]:
        return {
            key: value
            for key, value in samples(http).items()
            if key[0] == "predictions_total"
            or (key[0] == "http_requests_total" and ("method", "GRPC") in key[1])
        }

    previous = read()
    deadline = time.monotonic() + 30
    while True:
        time.sleep(FLUSH_SECONDS * 1.5)
        current = read()
        if current == previous or time.monotonic() > deadline:
            return current
        previous = current


def test_calls_are_counted_by_method_and_status_code(
    client: triton.InferenceServerClient, http: httpx.Client
) -> None:
    before = counted(http)
    flights, names = MODELS["delay-minimal"]
    for _ in range(5):
        client.infer("delay-minimal", raw_inputs(flights, names))
    for _ in range(3):
        status_of(
            lambda: client.infer("delay-minimal", raw_inputs([{**flights[0], "MES": 0}], names))
        )
    status_of(lambda: client.get_model_metadata("nope"))
    after = counted(http)

    def delta(method: str, status: str) -> float:
        return grpc_count(after, method, status) - grpc_count(before, method, status)

    assert delta("ModelInfer", "OK") == 5
    assert delta("ModelInfer", "INVALID_ARGUMENT") == 3
    assert delta("ModelMetadata", "NOT_FOUND") == 1
    predicted = flights_scored(after, "delay-minimal") - flights_scored(before, "delay-minimal")
    assert predicted == 5 * len(flights)
    duration = frozenset({("route", SERVICE + "ModelInfer"), ("method", "GRPC"), ("status", "OK")})
    assert samples(http)[("http_request_duration_seconds_count", duration)] >= 5


def in_flight(http: httpx.Client) -> dict[str, float]:
    """requests_in_flight by transport, as a scrape on the REST port reads it."""
    return {
        dict(labels)["transport"]: value
        for (name, labels), value in samples(http).items()
        if name == "requests_in_flight"
    }


def test_a_call_waiting_for_its_message_is_in_flight_and_the_scrape_is_not(
    served: GrpcServer, http: httpx.Client
) -> None:
    """A call whose message never comes holds a place of MAX_IN_FLIGHT until BODY_TIMEOUT: the
    gauge shows it, summed over both workers, and not the scrape that reads it."""
    release = threading.Event()

    def no_message() -> Iterator[bytes]:
        release.wait(20)
        yield from ()

    with grpc.insecure_channel(served.target) as channel:
        call = channel.stream_unary(SERVICE + "ModelInfer")
        waiting = call.future(no_message(), timeout=20)
        try:
            assert wait_for(lambda: in_flight(http) == {"rest": 0.0, "grpc": 1.0}, timeout=10), (
                in_flight(http)
            )
        finally:
            release.set()
            waiting.cancel()
    assert wait_for(lambda: in_flight(http) == {"rest": 0.0, "grpc": 0.0}, timeout=10)


# --- reload --------------------------------------------------------------------------------------


def workers_serving(http: httpx.Client, model: str) -> dict[str, float]:
    """`model_workers` of `model`: version -> live workers that loaded it."""
    return {
        dict(labels)["version"]: value
        for (name, labels), value in samples(http).items()
        if name == "model_workers" and ("model", model) in labels
    }


def fresh_answers(server: Server, target: str, model: str, times: int) -> set[str]:
    """The versions of `model` that `times` new connections of each transport were answered
    with ("" for a call that failed)."""
    seen = set()
    for _ in range(times):
        with grpc.insecure_channel(target, options=FRESH) as channel:  # a connection of its own
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            try:
                metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name=model), timeout=5)
                seen.add(metadata.versions[0])
            except grpc.RpcError:
                seen.add("")
        answer = httpx.get(f"{server.url}/v2/models/{model}", timeout=5)  # a new connection too
        seen.add(answer.json()["versions"][0] if answer.status_code == 200 else "")
    return seen


def test_a_sighup_reload_reaches_grpc(tmp_path: Path) -> None:
    """A reload has completed everywhere when /metrics counts only the new version's workers
    (docs/serving.md): from then on every new connection of either transport gets it."""
    releases = tmp_path / "releases"
    current = tmp_path / "current"
    current.symlink_to(MODELS_DIR)
    new_versions = retagged_release(MODELS_DIR, releases / "r2", "grpc r2")
    target = f"{HOST}:{free_port()}"
    server = spawn(tmp_path / "run", GRPC_BIND=target, MODELS_DIR=str(current))
    try:
        serving(server, target)
        model = "delay-full"
        old, new = card(model)["version"], new_versions[model]
        flights, names = MODELS[model]
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert workers_serving(http, model) == {old: WORKERS}
            assert fresh_answers(server, target, model, 4) == {old}
            assert predicted_by(http, flights) == f"{model}={old}"
            point(current, releases / "r2")
            os.kill(server.process.pid, signal.SIGHUP)
            assert wait_for(lambda: workers_serving(http, model) == {new: WORKERS}, 60), (
                workers_serving(http, model),
                server.log(),
            )
            assert predicted_by(http, flights) == f"{model}={new}"  # /predict's body cannot say
        assert fresh_answers(server, target, model, 10) == {new}
        with triton.InferenceServerClient(target) as fresh:
            result = fresh.infer(model, raw_inputs(flights, names), model_version=new)
        assert result.get_response(as_json=True)["model_version"] == new
    finally:
        stop(server)


def predicted_by(http: httpx.Client, flights: list[dict[str, Any]]) -> str:
    """The X-Model-Version of a /predict answer to `flights`."""
    answer = http.post("/predict", json={"flights": flights})
    assert answer.status_code == 200, answer.text
    return answer.headers["x-model-version"]


HANDED_OVER = 8
"""Seconds for a reload's old workers to exit: the new ones listen within ~1 s, and old workers
that missed them would wait for the hand-off's bound (9 s) instead."""


def fresh_calls(target: str, until: threading.Event) -> Counter[str]:
    """ServerLive calls, each on a new connection and without wait_for_ready, until `until` is
    set: the status codes they got."""
    codes: Counter[str] = Counter()
    while not until.is_set():
        codes[probe(target).name] += 1
    return codes


RELOAD_CLIENTS = 2


def migrates_queued_connections() -> bool:
    """Whether Linux hands the connections queued on a closing SO_REUSEPORT listener to another
    listener of its group (net.ipv4.tcp_migrate_req, Linux 5.14+) instead of resetting them."""
    try:
        return Path("/proc/sys/net/ipv4/tcp_migrate_req").read_text().strip() == "1"
    except OSError:
        return False


def handoff_markers(server: Server) -> set[str]:
    return {marker.name for marker in server.workdir.glob("latam-delay-run-*/handoff/ready-*")}


def children(pid: int) -> set[int]:
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def test_a_sighup_reload_refuses_no_new_grpc_connection(tmp_path: Path) -> None:
    """The old workers close their gRPC listeners only once the new ones listen
    (app.server.handoff): before, new connections were refused for 0.4-1 s of every reload
    (hundreds of these calls). A listener closes once nothing waits in its accept queue, but a
    connection the kernel queues in the instant it closes is reset (app.grpc.listeners), unless
    net.ipv4.tcp_migrate_req hands it to a listener that stays: each client has one connection
    pending at a time, so that costs at most one call per client per old worker (seen twice, 1
    of 691 and 1 of 738, in full test runs on a loaded machine).
    A SIGTERM after it stops at once: the workers of the newest generation await no one."""
    target = f"{HOST}:{free_port()}"
    server = spawn(tmp_path / "run", GRPC_BIND=target)
    try:
        serving(server, target)
        done = threading.Event()
        with ThreadPoolExecutor(RELOAD_CLIENTS) as clients:
            calls = [clients.submit(fresh_calls, target, done) for _ in range(RELOAD_CLIENTS)]
            time.sleep(0.3)
            os.kill(server.process.pid, signal.SIGHUP)
            reloaded = wait_for(
                lambda: (
                    server.log().count("gRPC serving on") >= 2 * WORKERS
                    and server.log().count("Finished server process") >= WORKERS
                ),
                HANDED_OVER,
            )
            time.sleep(0.3)
            done.set()
            codes = sum((call.result() for call in calls), Counter[str]())
        assert reloaded, server.log()
        assert codes["OK"] > 100, codes
        assert set(codes) <= {"OK", "UNAVAILABLE"}, codes
        reset_at_most = 0 if migrates_queued_connections() else RELOAD_CLIENTS * WORKERS
        assert codes["UNAVAILABLE"] <= reset_at_most, codes
        # the hand-off's markers name the listening workers only, a killed one's too
        listening = handoff_markers(server)
        assert listening == {f"ready-1-{pid}" for pid in children(server.process.pid)}
        os.kill(int(min(listening).rsplit("-", 1)[1]), signal.SIGKILL)
        assert wait_for(
            lambda: (
                len(handoff_markers(server) - listening) == 1
                and len(handoff_markers(server)) == WORKERS
            ),
            30,
        ), (handoff_markers(server), server.log())
        stopping = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
        assert time.monotonic() - stopping < 3
    finally:
        stop(server)


def test_new_workers_that_never_listen_hold_a_reloads_old_ones_for_the_bound_only(
    tmp_path: Path,
) -> None:
    """New workers stopped (SIGSTOP) before they listen, as if they hung booting: the old ones
    serve on for the hand-off's bound, half of uvicorn's graceful shutdown (here 2 s of 4: a
    graceful timeout of 6 s), then drain and exit as before."""
    target = f"{HOST}:{free_port()}"
    server = spawn(tmp_path / "run", GRPC_BIND=target, GUNICORN_CMD_ARGS="--graceful-timeout 6")
    master = server.process.pid
    stopped: set[int] = set()
    try:
        serving(server, target)
        old = children(master)
        reloaded_at = time.monotonic()
        os.kill(master, signal.SIGHUP)
        while len(stopped) < WORKERS and time.monotonic() - reloaded_at < 5:
            for pid in children(master) - old - stopped:
                os.kill(pid, signal.SIGSTOP)
                stopped.add(pid)
        assert len(stopped) == WORKERS
        assert handoff_markers(server) == {f"ready-0-{pid}" for pid in old}, "one listened first"
        time.sleep(1)
        assert probe(target) == grpc.StatusCode.OK  # the old workers serve on
        assert wait_for(lambda: not children(master) & old, 10, 0.01), server.log()
        assert 2 <= time.monotonic() - reloaded_at < 4
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        assert wait_for(lambda: server.log().count("gRPC serving on") >= 2 * WORKERS, 30)
        assert probe(target) == grpc.StatusCode.OK
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        stop(server)


def test_a_grpc_port_that_cannot_be_bound_stops_start_up(tmp_path: Path) -> None:
    with socket.socket() as taken:  # listening without SO_REUSEPORT: gRPC cannot share it
        taken.bind((HOST, 0))
        taken.listen()
        target = f"{HOST}:{taken.getsockname()[1]}"
        log = failed_start(spawn(tmp_path / "run", GRPC_BIND=target))
    assert f"latam-delay: cannot start: GRPC_BIND={target!r} is in use by another process" in log


def test_a_second_server_on_the_same_grpc_port_does_not_start(served: GrpcServer) -> None:
    """Found by an operator probe: every worker binds the gRPC port with SO_REUSEPORT, which a
    second server doing the same shared without a word, taking half of the first one's gRPC
    connections (15 of 30 calls answered by the other release). Its REST port was refused."""
    workdir = served.http.workdir / "second"
    log = failed_start(spawn(workdir, GRPC_BIND=served.target))
    assert f"GRPC_BIND={served.target!r} is in use by another process" in log
    assert "Booting worker" not in log
    assert probe(served.target) == grpc.StatusCode.OK


@pytest.mark.parametrize(("model", "answered"), [("delay-minimal", "OK"), ("nope", "NOT_FOUND")])
def test_h2load_calls_are_served_and_the_servers_counts_tell_their_status(
    served: GrpcServer, tmp_path: Path, model: str, answered: str
) -> None:
    """make compare-grpc's gRPC load: h2load posts one pre-built frame over h2c and takes every
    HTTP 200 for a success, so only the server's counters show a call that was not OK."""
    if shutil.which("h2load") is None:
        pytest.skip("h2load is not on PATH (apt-get install nghttp2-client)")
    flights, names = MODELS["delay-minimal"]
    frame = tmp_path / "frame"
    frame.write_bytes(
        grpc_load.grpc_frame(typed_request(model, flights, names).SerializeToString())
    )
    row = grpc_load.Row("h2load", "", "grpc", "", len(flights), connections=2, streams=4)
    args = argparse.Namespace(h2load="h2load", threads=1, duration=1, warmup=0)
    log = tmp_path / "requests.tsv"
    earlier = grpc_load.grpc_counts(served.http.url)
    done = subprocess.run(
        grpc_load.h2load_command(args, row, served.target, frame, log),
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    run = grpc_load.parse_h2load(done.stdout, log)
    time.sleep(FLUSH_SECONDS + 0.5)
    now = grpc_load.grpc_counts(served.http.url)
    counted = {code: now[code] - earlier.get(code, 0) for code in now}
    assert run.requests > 0
    assert run.failures == 0  # h2load saw nothing wrong either way
    assert counted[answered] >= run.requests
    problems = grpc_load.unexpected(counted, run.requests, row.in_flight)
    if answered == "OK":
        assert problems == []
    else:
        assert problems[0] == f"{counted[answered]:.0f} calls answered NOT_FOUND"


def test_a_message_that_does_not_parse_is_invalid_argument(served: GrpcServer) -> None:
    with grpc.insecure_channel(served.target) as channel:
        infer = channel.unary_unary(SERVICE + "ModelInfer")  # bytes in, bytes out
        with pytest.raises(grpc.RpcError) as raised:
            infer(b"\xff\xff\xff\xff", timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a ModelInferRequest" in raised.value.details()


def probe(target: str) -> grpc.StatusCode:
    """A ServerLive call on a new connection."""
    with grpc.insecure_channel(target, options=FRESH) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        return status_of(lambda: stub.ServerLive(pb.ServerLiveRequest(), timeout=5))


CALLS = 24
"""10,000-flight calls in flight on one connection when the SIGTERM test stops the server."""


def test_sigterm_lets_in_flight_grpc_calls_finish_and_takes_no_new_connection(
    tmp_path: Path,
) -> None:
    target = f"{HOST}:{free_port()}"
    server = spawn(tmp_path / "run", GRPC_BIND=target)
    try:
        serving(server, target)
        # 10,000 full-schedule flights a call (~0.7 MB): onnxruntime is busy for a while
        inputs = raw_inputs(FULL_FLIGHTS * 2500, FULL_INPUTS)
        ended: list[tuple[str, float]] = []
        some_ended = threading.Event()
        with triton.InferenceServerClient(target) as client:
            client.is_server_ready()  # the connection is up before the calls start

            def call() -> None:
                try:
                    client.infer("delay-full", inputs, client_timeout=60)
                    ended.append(("OK", time.monotonic()))
                except InferenceServerException as error:
                    ended.append((str(error.status()), time.monotonic()))
                if len(ended) >= 4:
                    some_ended.set()

            calls = [threading.Thread(target=call) for _ in range(CALLS)]
            for thread in calls:
                thread.start()
            # 4 answered: every call has reached the worker (one connection), the rest are
            # queued (a fixed 0.3 s wait once saw all 16 answered before it: ~0.03 s each; the
            # last of 16 ended 0.24-0.39 s after the probes in 6 runs, hence 24)
            assert some_ended.wait(timeout=60)
            stopped_at = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            # both workers stopping (uvicorn's line comes after the gRPC listener closed)
            assert wait_for(lambda: server.log().count("Shutting down") >= WORKERS, 10, 0.01)
            probes = [probe(target) for _ in range(4)]
            probed_at = time.monotonic()
            for thread in calls:
                thread.join(timeout=60)
        assert [status for status, _ in ended] == ["OK"] * CALLS, [
            (s, round(t - stopped_at, 3)) for s, t in ended
        ]
        assert any(at > probed_at for _, at in ended), [round(t - probed_at, 3) for _, t in ended]
        # new connections are refused while the calls in flight finish: the kernel gives a
        # stopping worker none (before, its listener stayed open until they had finished)
        assert probes == [grpc.StatusCode.UNAVAILABLE] * 4
        assert server.process.wait(timeout=30) == 0
    finally:
        stop(server)

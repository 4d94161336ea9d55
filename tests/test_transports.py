"""A differential test of the transports: the same random flights — both contracts, every
fallback of the full model (known flight number, unseen number, unseen route, unseen airline),
each written form of `Fecha-I` and `Vlo-I` (zero-padded too) — scored through every way into
the served models, by a real gunicorn with two workers: `/predict` in one batch and one flight a
request (concurrent, so that the workers merge them into shared onnxruntime calls), the Open
Inference Protocol over REST (JSON and binary tensors) and over gRPC (raw and typed contents,
batched and one flight a call). Each must give, for every flight, the label and the float32
probability that onnxruntime gives in this process for the same flight (the minimal model's
table included: the server answers from it, the reference does not); and the server's
`predictions_total` must have counted each flight once a transport, with that label.

This process never imports app.grpc (see tests/test_grpc_server.py)."""

from __future__ import annotations

import calendar
import random
import string
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import httpx2 as httpx
import numpy as np
import orjson
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from app.inference.flights import FlightValidator
from app.inference.model import ModelSet
from app.observability.metrics import FLUSH_SECONDS
from benchmarks.chaos import wait_for
from tests.conftest import MODELS_DIR
from tests.test_grpc_server import GrpcServer, outputs, raw_inputs, serving_grpc, typed_request
from tests.test_server import (
    FULL_INPUTS,
    HOST,
    MINIMAL_INPUTS,
    card,
    infer_inputs,
    scrape,
)

pytestmark = pytest.mark.server

FLIGHTS = 400
CONCURRENCY = 16
Answer = tuple[list[int], np.ndarray]
"""Labels and float32 probabilities, one each per flight in order."""


def random_flights(count: int, seed: int) -> list[dict[str, Any]]:
    """Half minimal, half full; the full ones drawn from the committed model's own flight, route
    and airline vocabularies (its card) and outside them, in equal shares."""
    rng = random.Random(seed)
    full_card = card("delay-full")
    operators = next(i["allowed"] for i in full_card["inputs"] if i["name"] == "OPERA")
    hierarchy = full_card["encoder"]["hierarchy"]
    numbers = [key.split(" ") for key in hierarchy["flight"]["logits"]]
    routes = [key.split(">") for key in hierarchy["route"]["logits"]]
    airlines = list(hierarchy["airline"]["logits"])

    def unseen(length: int, known: set[str]) -> str:
        while (code := "".join(rng.choices(string.ascii_uppercase, k=length))) in known:
            pass
        return code

    flights = []
    for index in range(count):
        month = rng.randint(1, 12)
        flight: dict[str, Any] = {
            "OPERA": rng.choice(operators),
            "TIPOVUELO": rng.choice("IN"),
            "MES": month,
        }
        if index % 2:
            flights.append(flight)
            continue
        airline, number = rng.choice(numbers)
        destination = rng.choice([d for a, d in routes if a == airline] or ["SCFA"])
        fallback = index // 2 % 4
        if fallback == 1:  # a route the model knows, a flight number it does not
            airline, destination = rng.choice(routes)
            number = str(rng.randint(1, 9999))
            if number in {n for a, n in numbers if a == airline}:
                number += "Z"
        elif fallback == 2:  # an airline the model knows, a route it does not
            destination = unseen(4, {d for a, d in routes if a == airline})
        elif fallback == 3:  # an airline the model has never seen
            airline = unseen(3, set(airlines))
        year = rng.randint(2016, 2030)
        day = rng.randint(1, calendar.monthrange(year, month)[1])
        flight |= {
            "Fecha-I": f"{year}-{month:02}-{day:02}{rng.choice(' T')}"
            f"{rng.randrange(24):02}:{rng.randrange(60):02}:{rng.randrange(60):02}",
            "Des-I": destination,
            "Emp-I": airline,
            "Vlo-I": rng.choice(written(number)),
        }
        flights.append(flight)
    return flights


def written(number: str) -> list[Any]:
    """The forms a flight number may be sent in: as text, padded to four digits (IATA SSIM's),
    and as a JSON integer when it is one."""
    digits = number.rstrip(string.ascii_uppercase)
    forms: list[Any] = [number, digits.zfill(4) + number[len(digits) :]]
    return [*forms, int(number)] if number.isdigit() else forms


@pytest.fixture(scope="module")
def flights() -> list[dict[str, Any]]:
    return random_flights(FLIGHTS, seed=20261205)


@pytest.fixture(scope="module")
def expected(flights: list[dict[str, Any]]) -> Answer:
    """onnxruntime in this process, the minimal model's table left out."""
    models = ModelSet.load(MODELS_DIR, tabulate_minimal=False)
    batch = FlightValidator(models.operators, FLIGHTS).decode(orjson.dumps({"flights": flights}))
    prediction = models.predict(batch)
    return [int(label) for label in prediction.labels], np.asarray(
        prediction.probabilities, dtype=np.float32
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServer]:
    with serving_grpc(tmp_path_factory.mktemp("transports")) as server:
        yield server


@pytest.fixture(scope="module")
def http(served: GrpcServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.http.url, timeout=30) as client:
        yield client


def model_of(flight: dict[str, Any]) -> str:
    return "delay-full" if "Fecha-I" in flight else "delay-minimal"


def names(model: str) -> tuple[str, ...]:
    return FULL_INPUTS if model == "delay-full" else MINIMAL_INPUTS


def textual(flight: dict[str, Any]) -> dict[str, Any]:
    """`flight` as tensors carry it: a BYTES `Vlo-I` is text, where JSON may give a number."""
    return flight | ({"Vlo-I": str(flight["Vlo-I"])} if "Vlo-I" in flight else {})


def by_model(flights: list[dict[str, Any]]) -> dict[str, tuple[list[int], list[dict[str, Any]]]]:
    """Each model's flights, as tensors carry them, with their places in `flights`."""
    parts: dict[str, tuple[list[int], list[dict[str, Any]]]] = {
        "delay-minimal": ([], []),
        "delay-full": ([], []),
    }
    for index, flight in enumerate(flights):
        rows, part = parts[model_of(flight)]
        rows.append(index)
        part.append(textual(flight))
    return parts


def per_model(flights: list[dict[str, Any]], infer: Callable[[str, Any], Answer]) -> Answer:
    """`infer(model, its flights)` for each model, put back in the order of `flights`."""
    labels = [0] * len(flights)
    probabilities = np.empty(len(flights), dtype=np.float32)
    for model, (rows, part) in by_model(flights).items():
        part_labels, part_probabilities = infer(model, part)
        for row, label in zip(rows, part_labels, strict=True):
            labels[row] = label
        probabilities[rows] = part_probabilities
    return labels, probabilities


def one_at_a_time(flights: list[dict[str, Any]], infer: Callable[[Any], Answer]) -> Answer:
    """`infer` for each flight alone, CONCURRENCY at once."""
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        answers = list(pool.map(infer, flights))
    labels = [label for answer in answers for label in answer[0]]
    return labels, np.concatenate([answer[1] for answer in answers])


def predict(http: httpx.Client, flights: list[dict[str, Any]]) -> Answer:
    response = http.post("/predict?proba=true", json={"flights": flights})
    assert response.status_code == 200, response.text
    body = response.json()
    return body["predict"], np.array(body["proba"], dtype=np.float32)


def oip_json(http: httpx.Client, model: str, flights: list[dict[str, Any]]) -> Answer:
    tensors = [
        {
            "name": name,
            "datatype": "INT64" if name == "MES" else "BYTES",
            "shape": [len(flights)],
            "data": [flight[name] for flight in flights],
        }
        for name in names(model)
    ]
    response = http.post(f"/v2/models/{model}/infer", json={"inputs": tensors})
    assert response.status_code == 200, response.text
    label, proba = response.json()["outputs"]
    return label["data"], np.array(proba["data"], dtype=np.float32)


def merged_requests(url: str) -> float:
    """Requests scored in a call with others: those in merged calls less one a call."""
    calls = {
        sample.name: sample.value
        for family in scrape(url)
        if family.name == "microbatch_call_requests"
        for sample in family.samples
        if sample.labels.get("model") == "delay-full" and not sample.name.endswith("_bucket")
    }
    return calls.get("microbatch_call_requests_sum", 0.0) - calls.get(
        "microbatch_call_requests_count", 0.0
    )


def predictions_by_label(url: str) -> dict[tuple[str, str], float]:
    """`predictions_total` of the server's workers, by model and label."""
    counts: dict[tuple[str, str], float] = {}
    for family in scrape(url):
        for sample in family.samples:
            if sample.name == "predictions_total":
                key = (sample.labels["model"], sample.labels["label"])
                counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def test_every_transport_gives_onnxruntimes_answer_for_every_flight(
    served: GrpcServer, http: httpx.Client, flights: list[dict[str, Any]], expected: Answer
) -> None:
    counted_before = predictions_by_label(served.http.url)
    rest_binary = triton_http.InferenceServerClient(f"{HOST}:{served.http.port}", concurrency=1)
    grpc_client = triton_grpc.InferenceServerClient(served.target)
    channel = grpc.insecure_channel(served.target)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)

    def grpc_alone(flight: dict[str, Any]) -> Answer:
        model = model_of(flight)
        return outputs(grpc_client.infer(model, raw_inputs([textual(flight)], names(model))))

    answers = {
        "/predict, one batch": predict(http, flights),
        "/predict, a flight a request": one_at_a_time(flights, lambda f: predict(http, [f])),
        "OIP REST, JSON": per_model(flights, lambda m, part: oip_json(http, m, part)),
        "OIP REST, binary": per_model(
            flights,
            lambda m, part: outputs(
                rest_binary.infer(m, infer_inputs(part, names(m), binary_data=True))
            ),
        ),
        "OIP gRPC, raw": per_model(
            flights,
            lambda m, part: outputs(grpc_client.infer(m, raw_inputs(part, names(m)))),
        ),
        "OIP gRPC, typed": per_model(
            flights,
            lambda m, part: outputs(
                triton_grpc.InferResult(
                    stub.ModelInfer(typed_request(m, part, names(m)), timeout=30)
                )
            ),
        ),
        "OIP gRPC, a flight a call": one_at_a_time(flights, grpc_alone),
    }
    rest_binary.close()
    grpc_client.close()
    channel.close()
    # the lone requests were merged into shared onnxruntime calls, some of them at least
    assert wait_for(lambda: merged_requests(served.http.url) > 0, timeout=5 * FLUSH_SECONDS)
    labels, probabilities = expected
    assert 0 < sum(labels) < len(labels)  # both labels among the flights
    # and the monitoring counted each flight once a transport, with the label it was given
    answered: dict[tuple[str, str], float] = {}
    for flight, label in zip(flights, labels, strict=True):
        key = (model_of(flight), str(label))
        answered[key] = answered.get(key, 0.0) + len(answers)

    def counted() -> dict[tuple[str, str], float]:
        after = predictions_by_label(served.http.url)
        deltas = {key: after[key] - counted_before.get(key, 0.0) for key in after}
        return {key: delta for key, delta in deltas.items() if delta}

    assert wait_for(lambda: counted() == answered, timeout=5 * FLUSH_SECONDS), (
        counted(),
        answered,
    )
    for transport, (got_labels, got_probabilities) in answers.items():
        wrong = [
            (i, flights[i], got_probabilities[i], probabilities[i])
            for i in range(len(flights))
            if got_labels[i] != labels[i] or got_probabilities[i] != probabilities[i]
        ]
        assert not wrong, f"{transport}: {len(wrong)} flights answered otherwise, first {wrong[:3]}"

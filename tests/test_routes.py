from __future__ import annotations

import re
import shlex
import struct
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from app.inference.flights import Columns, FlightValidator
from app.inference.model import MODEL_NAMES, ModelSet, OnnxModel
from app.main import create_app
from app.rest.routes import INFER_ROUTE, PREDICT_ROUTE
from app.settings import Settings
from tests.conftest import MODELS_DIR, ROOT, challenge_models, payload_cases, payload_request

MINIMAL = {"OPERA": "Aerolineas Argentinas", "TIPOVUELO": "N", "MES": 3}
FULL = {
    "OPERA": "Grupo LATAM",
    "TIPOVUELO": "N",
    "MES": 3,
    "Fecha-I": "2017-03-05 19:30:00",
    "Des-I": "SCFA",
    "Emp-I": "LAN",
    "Vlo-I": "100",
}


@pytest.mark.parametrize("case", payload_cases("predict_valid.json"))
def test_predict_answers_one_label_per_flight(client: TestClient, case: dict[str, Any]) -> None:
    response = client.post("/predict", json=case["body"])
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["predict"]
    assert len(body["predict"]) == case["count"]
    assert set(body["predict"]) <= {0, 1}


def test_predict_is_byte_compatible_with_the_challenge(
    client: TestClient, onnxruntime_minimal: OnnxModel
) -> None:
    """The challenge's exact shape, with the label onnxruntime gives (not a table, not a guess)."""
    response = client.post("/predict", json={"flights": [MINIMAL]})
    assert response.headers["content-type"] == "application/json"
    label = int(onnxruntime_minimal.predict(columns([MINIMAL])).labels[0])
    assert response.content == b'{"predict":[%d]}' % label


@pytest.fixture(scope="module")
def onnxruntime_minimal() -> OnnxModel:
    """The minimal model answering through onnxruntime, not through its table."""
    models = ModelSet.load(MODELS_DIR, tabulate_minimal=False)
    return models.minimal


def columns(flights: list[dict[str, Any]]) -> Columns:
    batch = FlightValidator(ModelSet.load(MODELS_DIR).operators, 10_000).decode(
        orjson.dumps({"flights": flights})
    )
    assert batch.minimal is not None
    return batch.minimal


def test_single_flight_answers_from_the_table_equal_onnxruntime(
    client: TestClient, onnxruntime_minimal: OnnxModel
) -> None:
    """Every flight of the minimal model's 552-flight domain, each in its own request (the table
    answers them), against onnxruntime scoring the same flights: same label, same probability."""
    domain = [
        {"OPERA": operator, "TIPOVUELO": kind, "MES": month}
        for operator in onnxruntime_minimal.card.operators
        for kind in ("I", "N")
        for month in range(1, 13)
    ]
    expected = onnxruntime_minimal.predict(columns(domain))
    for flight, label, probability in zip(
        domain, expected.labels, expected.probabilities, strict=True
    ):
        body = client.post("/predict?proba=true", json={"flights": [flight]}).json()
        assert body == {"predict": [int(label)], "proba": [float(str(probability))]}, flight


EXAMPLE_DOCUMENTS = ("README.md", "docs/api.md", "docs/observability.md")
"""The documents that show `$ curl` examples with their answers: README.md's summary and the
topic documents moved out of it."""


def readme_examples(document: str | None = None) -> list[Any]:
    """Each `$ curl` of the console blocks of EXAMPLE_DOCUMENTS (or of `document` alone) with the
    output shown under it (those piped into grep show a filtered server-wide view and are left
    out)."""
    examples = []
    for name in EXAMPLE_DOCUMENTS if document is None else (document,):
        examples += document_examples(name)
    return examples


def document_examples(name: str) -> list[Any]:
    text = (ROOT / name).read_text(encoding="utf-8")
    examples = []
    for block in re.findall(r"```console\n(.*?)```", text, re.DOTALL):
        command: str | None = None
        output: list[str] = []
        for line in [*block.splitlines(), "$ end"]:
            if line.startswith("$ ") or (command is not None and command.endswith("\\")):
                if command is not None and command.endswith("\\"):
                    command = command[:-1] + " " + line.strip()
                    continue
                if command is not None and "|" not in shlex.split(command):
                    examples.append(
                        pytest.param(command, "\n".join(output), id=f"{name}: {command[:60]}")
                    )
                command, output = line[2:], []
            else:
                output.append(line)
    return examples


README_EXAMPLES = readme_examples()


def test_the_readme_shows_examples() -> None:
    assert len(README_EXAMPLES) >= 5
    for name in EXAMPLE_DOCUMENTS:  # each document listed shows at least one
        assert readme_examples(name), name


@pytest.mark.parametrize(("command", "shown"), README_EXAMPLES)
def test_readme_example_answers_as_shown(client: TestClient, command: str, shown: str) -> None:
    """The curl examples of the README and the docs, run in-process: the answer is the one shown,
    byte for byte, so that neither the documents nor the behaviour can drift from the other. They
    show the answers of the models exported from the challenge's file: models/ exported from
    newer data (the retrain workflow's) answer otherwise, until the documents are updated."""
    if not challenge_models():
        pytest.skip("models/ are not the challenge data's models whose answers the docs show")
    arguments = shlex.split(command)
    assert arguments[0] == "curl"
    method, headers, data, url = "GET", {}, None, ""
    words = iter(arguments[1:])
    for word in words:
        if word == "-X":
            method = next(words)
        elif word == "-H":
            name, _, value = next(words).partition(":")
            headers[name.strip()] = value.strip()
        elif word == "-d":
            data = next(words)
            method = "POST" if method == "GET" else method
        elif not word.startswith("-"):
            url = word
    path = "/" + url.split("/", 1)[1]
    response = client.request(method, path, content=data, headers=headers)
    if "-i" not in arguments:
        assert response.text == shown
        return
    # -i: the status line and the headers shown (but the date) as well as the body
    head, _, body = shown.partition("\n\n")
    status_line, *header_lines = head.splitlines()
    assert int(status_line.split()[1]) == response.status_code
    for line in header_lines:
        name, _, value = line.partition(": ")
        if name.lower() != "date":
            assert response.headers.get(name) == value, line
    assert response.text == body


@pytest.mark.parametrize("case", payload_cases("predict_invalid.json"))
def test_predict_refuses_bad_input_with_a_clear_error(
    client: TestClient, case: dict[str, Any]
) -> None:
    url, content, headers = payload_request(case)
    response = client.post(url, content=content, headers=headers)
    assert response.status_code == case["status"]
    body = response.json()
    assert isinstance(body["error"], str)
    assert "Traceback" not in response.text
    if "field" in case:
        assert body["detail"]["field"] == case["field"]
        assert body["detail"]["index"] == case.get("index", 0)
        assert case["field"] in body["error"]
        assert body["detail"].get("allowed"), "every refused flight names what is allowed (README)"
    if "value" in case:
        assert body["detail"]["value"] == case["value"]
    if "allowed" in case:
        assert body["detail"]["allowed"] == case["allowed"]
    if "error" in case:
        assert case["error"] in body["error"]


def test_unknown_opera_error_lists_the_allowed_airlines(client: TestClient) -> None:
    body = client.post("/predict", json={"flights": [MINIMAL | {"OPERA": "Nope"}]}).json()
    assert "Aerolineas Argentinas" in body["detail"]["allowed"]
    assert "Grupo LATAM" in body["detail"]["allowed"]


def test_predict_with_proba_adds_probabilities_consistent_with_labels(client: TestClient) -> None:
    flights = [MINIMAL, MINIMAL | {"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 7}]
    body = client.post("/predict?proba=true", json={"flights": flights}).json()
    threshold = orjson.loads((MODELS_DIR / "delay-minimal.json").read_bytes())["threshold"]
    assert body["predict"] == [int(p >= threshold) for p in body["proba"]]
    assert all(0.0 < p < 1.0 for p in body["proba"])
    assert client.post("/predict?proba=false", json={"flights": flights}).json().keys() == {
        "predict"
    }


@pytest.mark.parametrize(
    ("query", "keys"),
    [
        ("proba=1", {"predict", "proba"}),
        ("proba=TRUE", {"predict", "proba"}),
        ("proba=0", {"predict"}),
        ("other=1", {"predict"}),  # no proba among other parameters: not a 500
        ("other=1&proba=true", {"predict", "proba"}),
    ],
)
def test_the_proba_flag_reads_one_and_zero_and_other_parameters_leave_it_off(
    client: TestClient, query: str, keys: set[str]
) -> None:
    response = client.post(f"/predict?{query}", json={"flights": [MINIMAL]})
    assert (response.status_code, response.json().keys()) == (200, keys)


def test_mixed_batch_scores_each_flight_with_its_own_model(client: TestClient) -> None:
    alone = [
        client.post("/predict?proba=true", json={"flights": [f]}).json()["proba"][0]
        for f in (MINIMAL, FULL)
    ]
    together = client.post("/predict?proba=true", json={"flights": [MINIMAL, FULL]}).json()["proba"]
    assert together == pytest.approx(alone, abs=1e-7)
    assert alone[0] != pytest.approx(alone[1], abs=1e-4)


def test_a_predict_answer_names_the_model_versions_that_scored_it(
    both_paths: tuple[TestClient, TestClient],
) -> None:
    """Its body is the challenge's contract and cannot say which release answered it; across a
    reload the workers of two releases answer at once, so the X-Model-Version header does, on
    either path. An error, scored by no model, names none."""
    for client, prefix in zip(both_paths, ("", "/api"), strict=True):
        version = {
            name: client.get(f"{prefix}/v2/models/{name}").json()["versions"][0]
            for name in MODEL_NAMES
        }
        minimal, full = (f"{name}={version[name]}" for name in MODEL_NAMES)
        for flights, named in (
            ([MINIMAL], minimal),
            ([FULL, FULL], full),
            ([FULL, MINIMAL], f"{minimal}, {full}"),
        ):
            for query in ("", "?proba=true"):
                answer = client.post(f"{prefix}/predict{query}", json={"flights": flights})
                assert answer.status_code == 200
                assert answer.headers["x-model-version"] == named
        refused = client.post(f"{prefix}/predict", json={"flights": [{**MINIMAL, "MES": 13}]})
        assert refused.status_code == 400
        assert "x-model-version" not in refused.headers


def test_a_zero_padded_flight_number_is_scored_as_the_flight_not_as_an_unseen_number(
    client: TestClient,
) -> None:
    """`0801` (a schedule padded to four digits) is LAN 801, whose own delay rate the model
    knows; before, an unseen number scored by the route's rate."""
    padded = FULL | {"Vlo-I": "0801", "Emp-I": "LAN", "Des-I": "SCFA"}

    def probability(flight: dict[str, Any]) -> float:
        body = client.post("/predict?proba=true", json={"flights": [flight]}).json()
        return float(body["proba"][0])

    known = probability(padded | {"Vlo-I": "801"})
    assert probability(padded) == probability(padded | {"Vlo-I": 801}) == known
    assert known != probability(padded | {"Vlo-I": "9801"})  # unseen: its route's rate


def test_body_over_the_limit_is_413_before_reading_it() -> None:
    app = create_app(Settings(models_dir=MODELS_DIR, max_body_bytes=200))
    with TestClient(app) as small:
        big = orjson.dumps({"flights": [MINIMAL] * 10})
        response = small.post("/predict", content=big, headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert "200-byte limit" in response.json()["error"]

        def chunks() -> Any:  # no Content-Length: the limit applies while streaming
            yield big[:150]
            yield big[150:]

        streamed = small.post(
            "/predict", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413


def test_batch_over_the_limit_is_413(client: TestClient) -> None:
    response = client.post("/predict", json={"flights": [MINIMAL] * 1001})
    assert response.status_code == 413
    assert response.json()["detail"] == {"limit": 1000}
    assert client.post("/predict", json={"flights": [MINIMAL] * 1000}).status_code == 200


def test_health_routes(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "OK"}
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


def test_the_openapi_document_before_the_models_load_has_the_configured_flight_limit() -> None:
    """No validator yet (no operators to list), but the batch limit is the settings', not
    FlightValidator's default."""
    client = TestClient(create_app(Settings(models_dir=MODELS_DIR, max_flights=5)))  # no lifespan
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["PredictRequest"]["properties"]["flights"]["maxItems"] == 5


def test_not_ready_before_models_load() -> None:
    client = TestClient(create_app(Settings(models_dir=MODELS_DIR)))  # no lifespan: nothing loaded
    assert client.get("/v2/health/live").status_code == 200
    ready = client.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (503, {"ready": False})
    response = client.post("/predict", json={"flights": [MINIMAL]})
    assert response.status_code == 503


LONG = "x" * 12_000


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", f"/{LONG}", {}, 404),
        ("POST", f"/predict?proba={LONG}", {}, 400),
        ("POST", f"/v2/models/{LONG}/infer", {}, 404),
        ("POST", f"/v2/models/delay-full/versions/{LONG}/infer", {}, 404),
        ("POST", "/v2/models/delay-full/infer", {"content-type": f"text/{LONG}"}, 415),
        ("POST", "/predict", {"content-encoding": f"x{LONG}"}, 415),
        ("DELETE", f"/v2/models/{LONG}/ready", {}, 405),
        ("POST", "/predict", {"content-type": f"application/json; charset={LONG}"}, 415),
    ],
    ids=[
        "path",
        "query",
        "model-name",
        "model-version",
        "content-type",
        "content-encoding",
        "not-allowed",
        "charset",
    ],
)
def test_an_error_quotes_a_long_client_string_cut_short(
    client: TestClient, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    """errors.shown's rule (at most SHOWN_CHARS of a client's string) holds for what comes in the
    URL and the headers too: before, each of these echoed all 12,000 characters."""
    headers = {"content-type": "application/json", **headers}
    body = orjson.dumps({"flights": [MINIMAL]})
    response = client.request(method, path, content=body, headers=headers)
    assert response.status_code == status
    assert len(response.content) < 1_000, response.content[:200]
    assert "x" * 60 in response.json()["error"]
    assert "…" in response.json()["error"]


def test_unknown_route_and_wrong_method_are_json(client: TestClient) -> None:
    missing = client.get("/nowhere")
    assert (missing.status_code, missing.json()["error"]) == (404, "no route for GET /nowhere")
    wrong = client.get("/predict")
    assert wrong.status_code == 405
    assert wrong.json()["error"] == "GET is not allowed on /predict"
    for path in ("/predict/", "/v2/models/delay-full/infer/"):
        # Starlette's bodiless 307 to a URL built from the client's Host header, before
        slashed = client.post(
            path, json={}, headers={"host": "elsewhere:1"}, follow_redirects=False
        )
        assert (slashed.status_code, slashed.json()) == (
            404,
            {"error": f"no route for POST {path}"},
        )


def test_server_and_model_metadata(client: TestClient) -> None:
    server = client.get("/v2").json()
    assert server["name"] == "latam-delay"
    assert "binary_tensor_data" in server["extensions"]
    for name, inputs in (("delay-minimal", 3), ("delay-full", 7)):
        metadata = client.get(f"/v2/models/{name}").json()
        assert metadata["name"] == name
        assert len(metadata["inputs"]) == inputs
        assert {o["name"]: o["datatype"] for o in metadata["outputs"]} == {
            "label": "INT64",
            "proba": "FP32",
        }
        version = metadata["versions"][0]
        for path in (f"/v2/models/{name}/ready", f"/v2/models/{name}/versions/{version}/ready"):
            ready = client.get(path)
            assert (ready.status_code, ready.json()) == (200, {"name": name, "ready": True})
    assert client.get("/v2/models/nope").status_code == 404
    assert client.get("/v2/models/delay-minimal/versions/0/ready").status_code == 404


def test_infer_json_matches_predict(client: TestClient) -> None:
    flights = [MINIMAL, {"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 7}]
    request = {
        "id": "r1",
        "inputs": [
            {
                "name": "OPERA",
                "datatype": "BYTES",
                "shape": [2],
                "data": [f["OPERA"] for f in flights],
            },
            {"name": "TIPOVUELO", "datatype": "BYTES", "shape": [2, 1], "data": [["N"], ["I"]]},
            {"name": "MES", "datatype": "INT64", "shape": [2], "data": [3, 7]},
        ],
    }
    body = client.post("/v2/models/delay-minimal/infer", json=request).json()
    predicted = client.post("/predict?proba=true", json={"flights": flights}).json()
    outputs = {output["name"]: output for output in body["outputs"]}
    assert body["id"] == "r1"
    assert outputs["label"]["data"] == predicted["predict"]
    assert outputs["proba"]["data"] == pytest.approx(predicted["proba"], abs=1e-7)


def test_infer_errors_are_json_with_an_error_key(client: TestClient) -> None:
    bad_month = {
        "inputs": [
            {"name": "OPERA", "datatype": "BYTES", "shape": [1], "data": ["Grupo LATAM"]},
            {"name": "TIPOVUELO", "datatype": "BYTES", "shape": [1], "data": ["N"]},
            {"name": "MES", "datatype": "INT64", "shape": [1], "data": [13]},
        ]
    }
    response = client.post("/v2/models/delay-minimal/infer", json=bad_month)
    assert response.status_code == 400
    assert "MES" in response.json()["error"]
    schedule_on_minimal = {
        "inputs": [
            *bad_month["inputs"],
            {"name": "Des-I", "datatype": "BYTES", "shape": [1], "data": ["SCFA"]},
        ]
    }
    response = client.post("/v2/models/delay-minimal/infer", json=schedule_on_minimal)
    assert response.status_code == 400
    assert "unknown input 'Des-I'" in response.json()["error"]
    response = client.post(
        "/v2/models/delay-minimal/infer", content=b"x", headers={"content-type": "text/csv"}
    )
    assert response.status_code == 415


@pytest.mark.parametrize("path", ["/predict", "/v2/models/delay-minimal/infer"])
def test_a_json_body_in_a_charset_other_than_utf8_is_a_415_naming_it(
    client: TestClient, path: str
) -> None:
    """JSON is UTF-8 (RFC 8259): a Latin-1 body read as UTF-8 was a 400 'malformed JSON' at a
    position with nothing wrong; `charset=utf-8` (any case, quoted or not) is served."""
    inputs = [
        {"name": "OPERA", "datatype": "BYTES", "shape": [1], "data": [MINIMAL["OPERA"]]},
        {"name": "TIPOVUELO", "datatype": "BYTES", "shape": [1], "data": ["N"]},
        {"name": "MES", "datatype": "INT64", "shape": [1], "data": [3]},
    ]
    body = orjson.dumps({"flights": [MINIMAL]} if path == "/predict" else {"inputs": inputs})
    for charset in ("utf-8", "UTF8", '"utf-8"'):
        headers = {"content-type": f"application/json; charset={charset}"}
        assert client.post(path, content=body, headers=headers).status_code == 200
    latin = {"content-type": "application/json;charset=latin-1"}
    refused = client.post(path, content=body, headers=latin)
    assert refused.status_code == 415
    assert refused.json()["error"] == (
        "charset 'latin-1' is not supported: send the JSON body in UTF-8"
    )


def test_a_header_that_decides_how_the_body_is_read_sent_twice_differently_is_a_400(
    client: TestClient,
) -> None:
    """Content-Type on both routes, and the binary extension's header length: the first was read,
    whatever the second said. The same value twice is as once."""
    oip_body = orjson.dumps(
        {
            "inputs": [
                {"name": name, "datatype": datatype, "shape": [1], "data": [value]}
                for (name, value), datatype in zip(
                    MINIMAL.items(), ("BYTES", "BYTES", "INT64"), strict=True
                )
            ]
        }
    )
    json_type = [(b"content-type", b"application/json")]
    binary = [
        (b"content-type", b"application/octet-stream"),
        (b"inference-header-content-length", str(len(oip_body)).encode()),
    ]
    other_type = (b"content-type", b"a/b")
    cases = [
        ("/predict", orjson.dumps({"flights": [MINIMAL]}), json_type, other_type),
        ("/v2/models/delay-minimal/infer", oip_body, json_type, other_type),
        (
            "/v2/models/delay-minimal/infer",
            oip_body,
            binary,
            (b"inference-header-content-length", b"3"),
        ),
    ]
    for path, body, headers, conflicting in cases:
        response = client.post(path, content=body, headers=[*headers, conflicting])
        assert response.status_code == 400, (path, response.text)
        assert " is sent twice, " in response.json()["error"]
        assert client.post(path, content=body, headers=headers + headers).status_code == 200, path


def test_a_gzipped_body_is_a_415_naming_its_coding_on_both_routes(client: TestClient) -> None:
    import gzip

    body = gzip.compress(orjson.dumps({"flights": [MINIMAL]}))
    for path in ("/predict", "/v2/models/delay-minimal/infer"):
        response = client.post(
            path,
            content=body,
            headers={"content-type": "application/json", "content-encoding": "gzip"},
        )
        assert response.status_code == 415, (path, response.text)
        assert response.json()["error"].startswith("Content-Encoding 'gzip' is not supported")


@pytest.mark.parametrize(
    ("transfer", "status"), [("chunked", 200), ("gzip, chunked", 415), ("GZIP,chunked", 415)]
)
def test_a_transfer_coding_other_than_chunked_is_a_415_naming_it(
    client: TestClient, transfer: str, status: int
) -> None:
    """The server undoes chunked, not a gzip before it: read as JSON, the body was only called
    malformed."""
    inputs = [
        {"name": name, "datatype": "INT64" if name == "MES" else "BYTES", "shape": [1],
         "data": [value]}
        for name, value in MINIMAL.items()
    ]  # fmt: skip
    bodies = {
        "/predict": {"flights": [MINIMAL]},
        "/v2/models/delay-minimal/infer": {"inputs": inputs},
    }
    for path, body in bodies.items():
        response = client.post(
            path,
            content=orjson.dumps(body),
            headers={"content-type": "application/json", "transfer-encoding": transfer},
        )
        assert response.status_code == status, (path, response.text)
        if status == 415:
            assert response.json()["error"].startswith(
                f"Transfer-Encoding '{transfer.lower().replace(',c', ', c')}' is not supported"
            )


def test_a_client_leaving_before_its_body_is_a_499_not_a_500(client: TestClient) -> None:
    import asyncio

    app = client.app
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
             "root_path": "", "headers": [(b"content-type", b"application/json"),
                                          (b"content-length", b"100")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000), "state": {}, "app": app}  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 499


def test_predict_is_served_ahead_of_the_router() -> None:
    """PredictFirst answers `POST /predict` even with the router's own route gone; any other
    request, here `GET /predict`, still goes to the router."""
    app = create_app(Settings(models_dir=MODELS_DIR))
    app.router.routes.remove(PREDICT_ROUTE)
    with TestClient(app) as client:
        assert client.post("/predict", json={"flights": [MINIMAL]}).status_code == 200
        assert client.get("/predict").status_code == 404  # the router no longer knows /predict


@pytest.fixture(scope="module")
def both_paths() -> Iterator[tuple[TestClient, TestClient]]:
    """One app, requested straight and under a root path: the router then serves /predict."""
    app = create_app(Settings(models_dir=MODELS_DIR, max_flights=1000))
    with TestClient(app) as direct, TestClient(app, root_path="/api") as routed:
        yield direct, routed


def _answer(client: TestClient, url: str, content: bytes, headers: dict[str, str]) -> Any:
    response = client.post(url, content=content, headers=headers)
    shown = {k: v for k, v in response.headers.items() if k not in ("x-request-id", "date")}
    return response.status_code, shown, response.content


@pytest.mark.parametrize(
    "case", payload_cases("predict_invalid.json") + payload_cases("predict_valid.json")
)
def test_predict_answers_alike_ahead_of_the_router_and_through_it(
    both_paths: tuple[TestClient, TestClient], case: dict[str, Any]
) -> None:
    """Status, headers and body: the errors PredictFirst maps (app.rest.http.send_error) are the
    ones Starlette's error middleware maps on the router's path."""
    direct, routed = both_paths
    url, content, headers = payload_request(case)
    assert _answer(direct, url, content, headers) == _answer(routed, "/api" + url, content, headers)


def test_infer_is_served_ahead_of_the_router() -> None:
    """PredictFirst answers each model's unversioned infer route even with the router's own
    route gone; the versioned route and unknown models still go to the router."""
    app = create_app(Settings(models_dir=MODELS_DIR))
    app.router.routes.remove(INFER_ROUTE)
    with TestClient(app) as client:
        request = _oip_request(MINIMAL)
        assert client.post("/v2/models/delay-minimal/infer", json=request).status_code == 200
        version = client.get("/v2/models/delay-minimal").json()["versions"][0]
        versioned = f"/v2/models/delay-minimal/versions/{version}/infer"
        assert client.post(versioned, json=request).status_code == 200
        assert client.post("/v2/models/nope/infer", json=request).status_code == 404


def _oip_request(flight: dict[str, Any], **extra: Any) -> dict[str, Any]:
    inputs = [
        {"name": name, "datatype": "INT64" if name == "MES" else "BYTES", "shape": [1],
         "data": [value]}
        for name, value in flight.items()
    ]  # fmt: skip
    return {"inputs": inputs, **extra}


_BINARY_OUTPUTS = {"outputs": [{"name": "label", "parameters": {"binary_data": True}}]}
_OIP_CASES = {
    "json": (orjson.dumps(_oip_request(MINIMAL, id="a")), {"content-type": "application/json"}),
    "binary outputs": (
        orjson.dumps(_oip_request(MINIMAL, **_BINARY_OUTPUTS)),
        {"content-type": "application/json"},
    ),
    "full schedule": (orjson.dumps(_oip_request(FULL)), {}),
    "bad content type": (orjson.dumps(_oip_request(MINIMAL)), {"content-type": "text/plain"}),
    "not JSON": (b"{", {"content-type": "application/json"}),
    "bad header length": (
        orjson.dumps(_oip_request(MINIMAL)),
        {"inference-header-content-length": "x"},
    ),
    "bad month": (orjson.dumps(_oip_request({**MINIMAL, "MES": 13})), {}),
}


@pytest.mark.parametrize("case", list(_OIP_CASES), ids=list(_OIP_CASES))
@pytest.mark.parametrize("model", ["delay-minimal", "delay-full"])
def test_infer_answers_alike_ahead_of_the_router_and_through_it(
    both_paths: tuple[TestClient, TestClient], case: str, model: str
) -> None:
    """Status, headers and body, answers and errors, as for /predict above."""
    direct, routed = both_paths
    content, headers = _OIP_CASES[case]
    url = f"/v2/models/{model}/infer"
    answer = _answer(direct, url, content, headers)
    assert answer == _answer(routed, "/api" + url, content, headers)
    assert answer[0] in (200, 400, 415)


def test_an_unexpected_error_is_a_500_and_raised_again_on_both_paths() -> None:
    """A 500 in the JSON shape, then the error raised again for the server to log, as Starlette's
    ServerErrorMiddleware does on the router's path."""

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected fault")

    app = create_app(Settings(models_dir=MODELS_DIR))
    body = {"flights": [MINIMAL]}
    for root_path in ("", "/api"):
        with TestClient(app, root_path=root_path, raise_server_exceptions=False) as client:
            app.state.models.predict = broken
            response = client.post(root_path + "/predict", json=body)
            assert (response.status_code, response.json()) == (500, {"error": "internal error"})
        with TestClient(app, root_path=root_path) as client:
            app.state.models.predict = broken
            with pytest.raises(RuntimeError, match="injected fault"):
                client.post(root_path + "/predict", json=body)


def _binary_infer_body(flight: dict[str, Any]) -> tuple[bytes, int]:
    """`flight` as an OIP request of binary inputs (the binary tensor data extension), asking
    for both outputs as binary data; and the length of its JSON header."""
    inputs, data = [], b""
    for name, value in flight.items():
        raw = (
            struct.pack("<q", value)
            if name == "MES"
            else struct.pack("<I", len(value.encode())) + value.encode()
        )
        inputs.append(
            {
                "name": name,
                "datatype": "INT64" if name == "MES" else "BYTES",
                "shape": [1],
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        data += raw
    header = orjson.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}})
    return header + data, len(header)


@pytest.mark.parametrize("model", ["delay-minimal", "delay-full"])
@pytest.mark.parametrize(
    "content_type", ["application/octet-stream", "application/octet-stream; charset=latin-1"]
)
def test_binary_infer_is_answered_in_binary_with_its_lengths(
    both_paths: tuple[TestClient, TestClient], model: str, content_type: str
) -> None:
    """A body of binary inputs is sent as application/octet-stream (a charset is a JSON body's
    concern only); binary outputs come back after the JSON header, whose length
    Inference-Header-Content-Length gives, and the answer's Content-Length is the whole body's.
    Ahead of the router and through it."""
    flight = FULL if model == "delay-full" else MINIMAL
    body, header_length = _binary_infer_body(flight)
    headers = {
        "content-type": content_type,
        "inference-header-content-length": str(header_length),
    }
    answers = []
    for client, prefix in zip(both_paths, ("", "/api"), strict=True):
        response = client.post(f"{prefix}/v2/models/{model}/infer", content=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.headers["content-length"] == str(len(response.content))
        length = int(response.headers["inference-header-content-length"])
        answer = orjson.loads(response.content[:length])
        assert [o["name"] for o in answer["outputs"]] == ["label", "proba"]
        label_size, proba_size = (o["parameters"]["binary_data_size"] for o in answer["outputs"])
        assert (label_size, proba_size) == (8, 4)
        label = struct.unpack("<q", response.content[length : length + 8])[0]
        predicted = client.post(f"{prefix}/predict", json={"flights": [flight]}).json()
        assert label == predicted["predict"][0]
        answers.append(response.content)
    assert answers[0] == answers[1]

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
from starlette.routing import Route
from starlette.testclient import TestClient

from app.inference.flights import ALLOWED_FIELDS, INVALID_EXAMPLE, SCHEDULE_FIELDS_DECLARED
from app.main import create_app
from app.rest.openapi import main, published, render
from app.rest.routes import ROUTES
from app.settings import Settings
from tests.conftest import MODELS_DIR, ROOT

PUBLISHED = ROOT / "docs" / "openapi.json"


def _document(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def test_every_route_is_documented_with_its_methods(client: TestClient) -> None:
    paths = _document(client)["paths"]
    for route in ROUTES:
        assert isinstance(route, Route)
        assert route.path in paths, f"{route.path} is not in openapi.json"
        documented = {method.upper() for method in paths[route.path] if method != "parameters"}
        assert documented == set(route.methods or ()) - {"HEAD"}, route.path
    assert len(paths) == len(ROUTES)


def test_every_ref_resolves(client: TestClient) -> None:
    document = _document(client)
    schemas = document["components"]["schemas"]
    refs = re.findall(r'"\$ref": ?"#/components/schemas/([^"]+)"', str(document).replace("'", '"'))
    assert refs
    assert set(refs) <= set(schemas)


def test_documented_examples_get_the_documented_answers(client: TestClient) -> None:
    paths = _document(client)["paths"]
    predict = paths["/predict"]["post"]
    example = predict["requestBody"]["content"]["application/json"]["example"]
    response = client.post("/predict", json=example)
    assert str(response.status_code) in predict["responses"]
    assert response.status_code == 200
    assert len(response.json()["predict"]) == len(example["flights"])

    infer = paths["/v2/models/{name}/infer"]["post"]
    example = infer["requestBody"]["content"]["application/json"]["example"]
    response = client.post("/v2/models/delay-minimal/infer", json=example)
    assert response.status_code == 200
    assert {output["name"] for output in response.json()["outputs"]} == {"label", "proba"}

    for path in ("/health", "/v2/health/live", "/v2/health/ready"):
        documented = paths[path]["get"]["responses"]["200"]["content"]["application/json"][
            "example"
        ]
        assert client.get(path).json() == documented


def test_flight_schema_lists_the_served_airlines(client: TestClient) -> None:
    flight = _document(client)["components"]["schemas"]["Flight"]
    assert "Grupo LATAM" in flight["properties"]["OPERA"]["enum"]
    assert flight["additionalProperties"] is False


def test_the_documented_400_is_the_servers_answer(client: TestClient) -> None:
    """The example comes from the validator, so it cannot drift from what clients get."""
    documented = _document(client)["paths"]["/predict"]["post"]["responses"]["400"]
    example = documented["content"]["application/json"]["example"]
    response = client.post("/predict", json={"flights": [INVALID_EXAMPLE]})
    assert response.status_code == 400
    assert response.json() == example
    assert example["error"] == "flights[0].MES: not a month"


def test_the_month_schema_says_what_its_type_cannot(client: TestClient) -> None:
    """JSON Schema's `integer` admits `3.0` and the server refuses it (msgspec's strict int), so
    a client that validates against the document before sending learns it from the
    description only (found by a contract-consumer audit)."""
    import jsonschema_rs

    month = _document(client)["components"]["schemas"]["Flight"]["properties"]["MES"]
    assert jsonschema_rs.validator_for(month).is_valid(3.0)
    assert "`3.0` is refused" in month["description"]
    flight = {"OPERA": "Aerolineas Argentinas", "TIPOVUELO": "N", "MES": 3.0}
    response = client.post("/predict", json={"flights": [flight]})
    assert response.status_code == 400
    assert response.json()["detail"]["field"] == "MES"


def test_the_flight_schema_is_the_validators_declaration(client: TestClient) -> None:
    """Each declared field is documented with its constraints, and each field's documented
    example is accepted by the server in a flight."""
    schemas = _document(client)["components"]["schemas"]
    flight = schemas["Flight"]
    assert list(flight["properties"]) == list(ALLOWED_FIELDS)
    assert flight["required"] == ["OPERA", "TIPOVUELO", "MES"]
    assert (
        flight["properties"]["MES"] | {"minimum": 1, "maximum": 12} == flight["properties"]["MES"]
    )
    patterns = {
        name: next(  # its own, or its string branch's (Vlo-I's anyOf)
            (s.get("pattern") for s in [schema, *schema.get("anyOf", [])] if "pattern" in s), None
        )
        for name, schema in flight["properties"].items()
    }
    assert patterns == {"OPERA": None, "TIPOVUELO": None, "MES": None} | {
        field.name: f"^{field.pattern}$" for field in SCHEDULE_FIELDS_DECLARED
    }  # what the validator checks in its one regex pass, never given to msgspec
    limit = client.app.state.settings.max_flights  # type: ignore[attr-defined]
    assert schemas["PredictRequest"]["properties"]["flights"]["maxItems"] == limit
    example = {name: schema["examples"][0] for name, schema in flight["properties"].items()}
    example["MES"] = int(example["Fecha-I"][5:7])
    response = client.post("/predict", json={"flights": [example]})
    assert response.status_code == 200, response.json()


def test_server_answers_of_the_guarded_protocol_are_documented(client: TestClient) -> None:
    """408, 429 and 431 come from app.server.protocol, not from a route: documented all the same,
    with a body of the documented Error shape (the 429's description with the protocol's bound,
    which app.rest does not import: the Lambda bundle has no HTTP server)."""
    import json

    from app.server.protocol import MAX_PIPELINED, _response

    paths = _document(client)["paths"]
    for path in ("/predict", "/v2/models/{name}/infer"):
        responses = paths[path]["post"]["responses"]
        assert {"408", "429", "431"} <= set(responses)
        assert f", {MAX_PIPELINED} (" in responses["429"]["description"]
    for status, reason in (
        (408, "Request Timeout"),
        (429, "Too Many Requests"),
        (431, "Request Header Fields Too Large"),
    ):
        head, body = _response(status, reason, "why", b"id-1").split(b"\r\n\r\n", 1)
        assert json.loads(body) == {"error": "why"}
        assert b"\r\nx-request-id: id-1" in head


def test_every_operation_but_the_probes_documents_the_shed_503_with_retry_after(
    client: TestClient,
) -> None:
    """app.server.protocol sheds any request past MAX_IN_FLIGHT but the probes' and the scrape's:
    every other operation lists that 503, its Retry-After header, and a schema the shed body
    (app.server.overload's) fits; those four do not."""
    import json

    import jsonschema_rs

    from app.server.overload import UNSHED_PATHS, shed_response

    document = _document(client)
    head, body = shed_response(b"id-1", False).split(b"\r\n\r\n", 1)
    assert b"\r\nretry-after: 1\r\n" in head
    operations = [
        (path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method != "parameters"
    ]
    assert len(operations) == 13
    assert set(document["paths"]) >= UNSHED_PATHS
    for path, operation in operations:
        if path in UNSHED_PATHS:
            assert (
                "MAX_IN_FLIGHT"
                not in operation["responses"].get("503", {"description": ""})["description"]
            ), path
            continue
        answer = operation["responses"]["503"]
        assert "MAX_IN_FLIGHT" in answer["description"], path
        assert set(answer["headers"]) == {"Retry-After", "X-Request-ID", "traceparent"}, path
        schema = answer["content"]["application/json"]["schema"]
        validator = jsonschema_rs.validator_for({**schema, "components": document["components"]})
        assert validator.is_valid(json.loads(body)), path


def _schemas(node: Any) -> Iterator[dict[str, Any]]:
    """Every object of the document (a schema or not: the checks below read schema keywords)."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _schemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from _schemas(value)


def test_every_array_and_object_schema_says_what_it_holds(client: TestClient) -> None:
    """A client generated from the document needs it: an array without `items` made
    openapi-python-client drop ModelMetadata, InferenceRequest and InferenceResponse (their
    operations then raised UnexpectedStatus on a 200) and orval's zod output fail to import; an
    object without `properties` or `additionalProperties` is `Record<string, never>` to
    openapi-typescript, so a typed TS client could not ask for `outputs: [{name: "proba"}]` nor
    read an error's `detail`."""
    document = _document(client)
    for schema in _schemas(document):
        if schema.get("type") == "array":
            assert "items" in schema or "prefixItems" in schema, schema
        if schema.get("type") == "object":
            assert "properties" in schema or "additionalProperties" in schema, schema


def test_a_pattern_sits_in_a_string_schema(client: TestClient) -> None:
    """`pattern` beside an `anyOf` of integer and string (Vlo-I's) is valid JSON Schema, but
    orval's zod output called `.regex` on the union and failed to import: the pattern belongs in
    the string branch, where it means the same."""
    for schema in _schemas(_document(client)):
        if "pattern" in schema:
            assert schema.get("type") == "string", schema


_UNDECLARED_HEADERS = {"content-type", "content-length", "date", "server", "connection"}
"""HTTP's own headers, which no operation declares."""


def _answer_is_declared(
    document: dict[str, Any], method: str, path: str, response: httpx.Response
) -> None:
    """What openapi-core's response validation checks: the status, media type, body schema and
    every header of a real answer declared by the operation."""
    import jsonschema_rs

    operation = document["paths"][path][method]
    declared = operation["responses"].get(str(response.status_code))
    assert declared is not None, (method, path, response.status_code, response.text)
    media_type = response.headers["content-type"].split(";")[0]
    assert media_type in declared["content"], (method, path, media_type)
    if media_type == "application/json":
        schema = declared["content"][media_type]["schema"]
        validator = jsonschema_rs.validator_for({**schema, "components": document["components"]})
        errors = [error.message for error in validator.iter_errors(response.json())]
        assert not errors, (method, path, errors)
    headers = {name.lower() for name in declared.get("headers", {})}
    assert set(response.headers) - _UNDECLARED_HEADERS <= headers, (method, path)


_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_the_servers_answers_are_declared(client: TestClient) -> None:
    """The API's examples (docs/api.md) and wrong requests to every operation, JSON and binary
    tensor data: each answer is one its operation declares (a generated client parses only those;
    found by a client generated from the document, whose binary infer answer was undeclared).
    Every request carries a valid traceparent, which the answers echo."""
    document = _document(client)
    minimal = {"OPERA": "Aerolineas Argentinas", "TIPOVUELO": "N", "MES": 3}
    tensors = [
        {"name": "OPERA", "datatype": "BYTES", "shape": [1], "data": ["Grupo LATAM"]},
        {"name": "TIPOVUELO", "datatype": "BYTES", "shape": [1], "data": ["N"]},
        {"name": "MES", "datatype": "INT64", "shape": [1], "data": [7]},
    ]
    strings = [struct.pack("<I", len(value)) + value for value in (b"Grupo LATAM", b"N")]
    month = struct.pack("<q", 7)
    header = orjson.dumps(
        {
            "inputs": [
                tensor | {"parameters": {"binary_data_size": len(raw)}}
                for tensor, raw in zip(
                    [{k: v for k, v in t.items() if k != "data"} for t in tensors],
                    [*strings, month],
                    strict=True,
                )
            ],
            "outputs": [{"name": "label", "parameters": {"binary_data": True}}, {"name": "proba"}],
        }
    )
    binary = header + b"".join([*strings, month])
    infer = "/v2/models/{name}/infer"
    versioned = "/v2/models/{name}/versions/{version}"
    json_header = {"content-type": "application/json"}
    requests: list[tuple[str, str, str, dict[str, Any]]] = [
        ("get", "/health", "/health", {}),
        ("get", "/v2/health/live", "/v2/health/live", {}),
        ("get", "/v2/health/ready", "/v2/health/ready", {}),
        ("get", "/v2", "/v2", {}),
        ("get", "/openapi.json", "/openapi.json", {}),
        ("get", "/metrics", "/metrics", {}),
        ("post", "/predict", "/predict?proba=true", {"json": {"flights": [minimal]}}),
        ("post", "/predict", "/predict", {"json": {"flights": [INVALID_EXAMPLE]}}),
        ("post", "/predict", "/predict?proba=maybe", {"json": {"flights": [minimal]}}),
        ("post", "/predict", "/predict", {"json": {"flights": [minimal] * 1001}}),
        ("post", "/predict", "/predict", {"content": b"{}", "headers": {"content-type": "a/b"}}),
        ("get", "/v2/models/{name}", "/v2/models/delay-full", {}),
        ("get", "/v2/models/{name}", "/v2/models/nope", {}),
        ("get", "/v2/models/{name}/ready", "/v2/models/delay-full/ready", {}),
        ("get", versioned, "/v2/models/delay-full/versions/cd7ce795573b", {}),
        ("get", versioned, "/v2/models/delay-full/versions/0", {}),
        ("get", versioned + "/ready", "/v2/models/delay-full/versions/cd7ce795573b/ready", {}),
        ("post", infer, "/v2/models/delay-minimal/infer", {"json": {"inputs": tensors}}),
        (
            "post",
            infer,
            "/v2/models/delay-minimal/infer",
            {"json": {"id": "a", "inputs": tensors, "outputs": [{"name": "proba"}]}},
        ),
        ("post", infer, "/v2/models/delay-minimal/infer", {"json": {"inputs": tensors[:2]}}),
        ("post", infer, "/v2/models/delay-full/infer", {"json": {"inputs": tensors}}),
        (
            "post",
            infer,
            "/v2/models/delay-minimal/infer",
            {
                "content": binary,
                "headers": {
                    "content-type": "application/octet-stream",
                    "inference-header-content-length": str(len(header)),
                },
            },
        ),
        (
            "post",
            versioned + "/infer",
            "/v2/models/delay-minimal/versions/0/infer",
            {"json": {"inputs": tensors}},
        ),
    ]
    seen = set()
    for method, path, url, arguments in requests:
        arguments.setdefault("headers", json_header if "json" in arguments else {})
        arguments["headers"] = arguments["headers"] | {"traceparent": _TRACEPARENT}
        response = client.request(method, url, **arguments)
        assert response.headers["traceparent"] == _TRACEPARENT, (method, url)
        _answer_is_declared(document, method, path, response)
        seen.add((path, response.headers["content-type"].split(";")[0]))
    assert (infer, "application/octet-stream") in seen


def test_the_published_contract_is_what_a_default_server_serves() -> None:
    """docs/openapi.json, which clients generate code from, is the document `make serve` serves
    for the committed models: a change to the contract fails here until `make openapi` writes
    it again, so that it shows in review as a diff of that file."""
    with TestClient(create_app(Settings(models_dir=MODELS_DIR))) as default_server:
        served = _document(default_server)
    published_file = orjson.loads(PUBLISHED.read_bytes())
    assert published_file == served, "the API contract changed: run `make openapi`, review the diff"
    assert PUBLISHED.read_bytes() == render(published(MODELS_DIR)), "run `make openapi`"


def test_the_published_contract_names_the_models_operators_and_years(tmp_path: Path) -> None:
    document = published(MODELS_DIR)
    flight = document["components"]["schemas"]["Flight"]
    assert "Grupo LATAM" in flight["properties"]["OPERA"]["enum"]
    assert "2016" in flight["properties"]["Fecha-I"]["description"]
    assert main([str(tmp_path / "no-models")]) == 1

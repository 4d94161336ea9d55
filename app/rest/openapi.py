"""The OpenAPI 3.1 description of every route, kept true by tests/test_openapi.py (each route
documented, each example answered as documented).

The `/predict` request (`PredictRequest`, `Flight`) is not written here: its schema is generated
from the same msgspec declaration that decodes and validates it (`app.inference.flights.Field`), and
its 400 example is the error the validator gives for `app.inference.flights.INVALID_EXAMPLE`. The
rest of the document (responses, the inference protocol's shapes) is written by hand.

`python -m app.rest.openapi [MODELS_DIR]` prints the document a server with the default settings
serves for those models: `make openapi` writes it to docs/openapi.json, the published contract
that client code is generated from, which tests/test_openapi.py holds to the served one.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import orjson

from app.errors import ModelLoadError, ServiceError
from app.inference.flights import FULL_EXAMPLE, INVALID_EXAMPLE, MINIMAL_EXAMPLE, FlightValidator
from app.inference.model import ModelSet
from app.observability.request_id import MAX_LENGTH
from app.server.overload import RETRY_AFTER, SHED_ERROR, UNSHED_PATHS
from app.settings import Settings
from app.tensors import OUTPUTS

_REF_TEMPLATE = "#/components/schemas/{name}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], example: Any = None) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {"content": {"application/json": content}}


def _response(description: str, schema: str, example: Any = None) -> dict[str, Any]:
    return {"description": description} | _json(_ref(schema), example)


def _errors(invalid: dict[str, Any]) -> dict[str, Any]:
    """The error answers of a route that validates flights; `invalid` is the 400 example."""
    return {
        "400": _response(
            "Invalid input: the body names the flight, field, value and what is allowed",
            "Error",
            invalid,
        ),
        "408": _response(
            "The request head or body was not received within HEAD_TIMEOUT or BODY_TIMEOUT "
            "(answered by the server; the connection is then closed)",
            "Error",
        ),
        "413": _response("Body or batch over its limit", "Error"),
        "415": _response(
            "Content-Type not accepted, or a compressed body (Content-Encoding)", "Error"
        ),
        "429": _response(
            "More requests pipelined on the connection before their answers were read than "
            "the server queues, 32 (answered by the server in the request's turn; the connection "
            "is then closed)",
            "Error",
        ),
        "431": _response(
            "Request line and headers over MAX_HEAD_BYTES (answered by the server; the "
            "connection is then closed)",
            "Error",
        ),
        "503": _response("Models not loaded yet", "Error"),
    }


def _sheddable(paths: dict[str, Any]) -> dict[str, Any]:
    """`paths` with app.server.overload's 503 on every operation but the probes' and the
    scrape's (UNSHED_PATHS): the server gives it to any other request whose head completes while
    MAX_IN_FLIGHT requests of its worker are unfinished, or that comes too soon after one on the
    same connection (held, app.server.overload)."""
    shed = "Overloaded: MAX_IN_FLIGHT requests unfinished in this worker, CROWDED_IN_FLIGHT"
    shed += " while it has more than CROWDED_CONNECTIONS busy connections (answered by the server"
    shed += f" at once, with `Retry-After: {RETRY_AFTER}`; a request sent on the same connection"
    shed += " before that Retry-After has elapsed is held and answered 503 once it has)"
    retry_after = {
        "description": "Seconds to wait before retrying (overload only)",
        "schema": {"type": "integer"},
    }
    for path, item in paths.items():
        if path in UNSHED_PATHS:
            continue
        for method, operation in item.items():
            if method == "parameters":
                continue
            own = operation["responses"].get("503")
            answer = _response(shed, "Error", SHED_ERROR.to_json())
            if own is not None:  # not ready, or overloaded
                schemas = [own["content"]["application/json"]["schema"], _ref("Error")]
                answer = {"description": f"{own['description']}; or {shed}"} | _json(
                    schemas[0] if schemas[0] == schemas[1] else {"anyOf": schemas}
                )
            operation["responses"]["503"] = answer | {"headers": {"Retry-After": retry_after}}
    return paths


def invalid_example(validator: FlightValidator) -> dict[str, Any]:
    """What the validator answers to the documented invalid flight."""
    try:
        validator.request({"flights": [INVALID_EXAMPLE]})
    except ServiceError as error:
        return error.to_json()
    raise AssertionError(f"{INVALID_EXAMPLE} is valid")  # a broken declaration, not a request


_MODEL_VERSION = {
    "description": "`name=version` of each model that scored the flights, comma-separated "
    "(`delay-minimal=4e45033c956b, delay-full=cd7ce795573b` for a batch of both contracts): "
    "the body cannot say which release answered",
    "schema": {"type": "string"},
}
"""A /predict answer's version header (app.rest.routes.MODEL_VERSION_HEADER)."""


_REQUEST_ID = (
    f"The request's ID, in the service's log lines (1-{MAX_LENGTH} characters of "
    "`A-Z a-z 0-9 . _ : + / = -`)"
)

_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "enum": ["delay-minimal", "delay-full"]},
}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}


_BINARY_HEADER = {
    "name": "Inference-Header-Content-Length",
    "description": "With binary tensor data (`application/octet-stream`): the bytes of the JSON "
    "header before the tensors' bytes",
    "schema": {"type": "integer", "minimum": 1},
}
"""The binary tensor data extension's header, on a request and on an answer
(app.rest.inference_protocol.HEADER_LENGTH)."""


def _infer_answer() -> dict[str, Any]:
    """An infer route's 200: JSON, or with binary outputs the binary tensor data extension's body
    and header (a new dict each time: `_identified` adds to its headers)."""
    return {
        "description": "Outputs `label` (INT64) and `proba` (FP32); `application/octet-stream` "
        "when an output is asked for as binary data (a JSON header of "
        "`Inference-Header-Content-Length` bytes followed by the outputs' bytes)",
        "content": {
            "application/json": {"schema": _ref("InferenceResponse")},
            "application/octet-stream": {},  # OpenAPI 3.1's binary content: no schema
        },
        "headers": {
            "Inference-Header-Content-Length": {
                key: _BINARY_HEADER[key] for key in ("description", "schema")
            }
        },
    }


_TRACEPARENT = (
    "W3C trace context (https://www.w3.org/TR/trace-context/): its trace ID tags the "
    "request's log lines"
)


def _identified(paths: dict[str, Any]) -> dict[str, Any]:
    """`paths` with the `X-Request-ID` and `traceparent` headers (app.observability.request_id)
    on every operation and every answer: the server honours the caller's request ID and returns
    one on every answer, its own errors and shed 503s included, and echoes a valid traceparent,
    so a generated client can send and read both (a response validator refuses an undeclared
    header)."""
    for item in paths.values():
        for method, operation in item.items():
            if method == "parameters":
                continue
            operation["parameters"] = [
                *operation.get("parameters", []),
                {"$ref": "#/components/parameters/X-Request-ID"},
                {"$ref": "#/components/parameters/traceparent"},
            ]
            for answer in operation["responses"].values():
                answer["headers"] = answer.get("headers", {}) | {
                    "X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"},
                    "traceparent": {"$ref": "#/components/headers/traceparent"},
                }
    return paths


def _binary_size(tensor: str) -> dict[str, Any]:
    """A request input's or a response output's `parameters` (`tensor`: which): the binary tensor
    data extension's size of it."""
    return {
        "type": "object",
        "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
        "additionalProperties": True,
        "description": f"`binary_data_size`: the {tensor}'s bytes in the binary data after the "
        "JSON (then no `data`)",
    }


def _get(summary: str, schema: str, example: Any = None, **responses: Any) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "responses": {"200": _response("OK", schema, example)} | responses,
        }
    }


def _model_paths(
    prefix: str, parameters: list[dict[str, Any]], errors: dict[str, Any]
) -> dict[str, Any]:
    not_found = {"404": _response("No such model or version", "Error")}
    return {
        prefix: {"parameters": parameters}
        | _get("Model metadata (Open Inference Protocol)", "ModelMetadata", **not_found),
        prefix + "/ready": {"parameters": parameters}
        | _get(
            "Model readiness",
            "ModelReady",
            {"name": "delay-minimal", "ready": True},
            **not_found,
            **{"503": _response("Not ready", "ModelReady")},
        ),
        prefix + "/infer": {
            "parameters": parameters,
            "post": {
                "summary": "Inference (Open Inference Protocol, JSON or binary tensor data)",
                "description": "With the binary extension the body is a JSON header of "
                "`Inference-Header-Content-Length` bytes followed by the tensors' bytes.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": _ref("InferenceRequest"),
                            "example": {
                                "inputs": [
                                    {
                                        "name": "OPERA",
                                        "datatype": "BYTES",
                                        "shape": [1],
                                        "data": ["Grupo LATAM"],
                                    },
                                    {
                                        "name": "TIPOVUELO",
                                        "datatype": "BYTES",
                                        "shape": [1],
                                        "data": ["N"],
                                    },
                                    {"name": "MES", "datatype": "INT64", "shape": [1], "data": [7]},
                                ]
                            },
                        },
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        },
                    },
                },
                "parameters": [_BINARY_HEADER | {"in": "header", "required": False}],
                "responses": {"200": _infer_answer()} | not_found | errors,
            },
        },
    }


def openapi_document(
    validator: FlightValidator | None = None, metrics: bool = True
) -> dict[str, Any]:
    """The document for the flights `validator` accepts (its operators, its batch limit); by
    default, the contract before any model is loaded: any operator, the default limit.
    `metrics`: whether this port serves /metrics (not when METRICS_BIND gives it its own)."""
    validator = validator or FlightValidator((), Settings.max_flights)
    errors = _errors(invalid_example(validator))
    _, declared = msgspec.json.schema_components(
        [validator.request_type], ref_template=_REF_TEMPLATE
    )
    datatype = {"type": "string", "description": "BYTES, INT64, FP32, ... (the model's metadata)"}
    shape = {"type": "array", "items": {"type": "integer"}}
    value = {"anyOf": [{"type": "string"}, {"type": "number"}]}
    schemas = {
        **declared,
        "PredictResponse": {
            "type": "object",
            "required": ["predict"],
            "properties": {
                "predict": {"type": "array", "items": {"type": "integer", "enum": [0, 1]}},
                "proba": {"type": "array", "items": {"type": "number"}},
            },
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {"type": "string"},
                "detail": {
                    "type": "object",
                    "additionalProperties": True,
                    "description": "a bad flight's `index`, `field`, `value` and `allowed`; "
                    "else what was received or is served (`received`, `models`, `versions`)",
                },
            },
        },
        "Status": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string"}},
        },
        "Live": {
            "type": "object",
            "required": ["live"],
            "properties": {"live": {"type": "boolean"}},
        },
        "Ready": {
            "type": "object",
            "required": ["ready"],
            "properties": {"ready": {"type": "boolean"}},
        },
        "ModelReady": {
            "type": "object",
            "required": ["name", "ready"],
            "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
        },
        "ServerMetadata": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "ModelMetadata": {
            "type": "object",
            "required": ["name", "versions", "platform", "inputs", "outputs"],
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": _ref("MetadataTensor")},
                "outputs": {"type": "array", "items": _ref("MetadataTensor")},
                "card": {
                    "type": "object",
                    "additionalProperties": True,
                    "description": "the model's card",
                },
            },
        },
        "MetadataTensor": {
            "type": "object",
            "required": ["name", "datatype", "shape"],
            "properties": {
                "name": {"type": "string"},
                "datatype": datatype,
                "shape": shape | {"description": "-1: any size"},
            },
        },
        "RequestInput": {
            "type": "object",
            "required": ["name", "datatype", "shape"],
            "properties": {
                "name": {"type": "string"},
                "datatype": datatype,
                "shape": shape,
                "parameters": _binary_size("input"),
                "data": {
                    "type": "array",
                    "items": {"anyOf": [*value["anyOf"], {"type": "array", "items": value}]},
                    "description": "flat, or under a shape [N, 1] its N rows of one value",
                },
            },
        },
        "RequestOutput": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "enum": list(OUTPUTS)},
                "parameters": {
                    "type": "object",
                    "properties": {"binary_data": {"type": "boolean"}},
                    "additionalProperties": True,
                },
            },
        },
        "ResponseOutput": {
            "type": "object",
            "required": ["name", "datatype", "shape"],
            "properties": {
                "name": {"type": "string"},
                "datatype": datatype,
                "shape": shape,
                "parameters": _binary_size("output"),
                "data": {"type": "array", "items": {"type": "number"}},
            },
        },
        "InferenceRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {
                    "type": "object",
                    "properties": {"binary_data_output": {"type": "boolean"}},
                    "additionalProperties": True,
                    "description": "`binary_data_output`: every output as binary data unless "
                    "its own `binary_data` says otherwise",
                },
                "inputs": {"type": "array", "items": _ref("RequestInput")},
                "outputs": {
                    "type": "array",
                    "items": _ref("RequestOutput"),
                    "description": "the outputs wanted; none or an empty list: every output",
                },
            },
        },
        "InferenceResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {"type": "array", "items": _ref("ResponseOutput")},
            },
        },
    }
    paths = {
        "/predict": {
            "post": {
                "summary": "Predict delays over 15 minutes (the challenge's contract)",
                "parameters": [
                    {
                        "name": "proba",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "boolean"},
                        "description": (
                            "true (or 1): add `proba`; false (or 0), the default: leave it out; "
                            "at most once"
                        ),
                    }
                ],
                "requestBody": {"required": True}
                | _json(_ref("PredictRequest"), {"flights": [MINIMAL_EXAMPLE, FULL_EXAMPLE]}),
                "responses": {
                    "200": _response(
                        "One label per flight, in order", "PredictResponse", {"predict": [0, 1]}
                    )
                    | {"headers": {"X-Model-Version": _MODEL_VERSION}}
                }
                | errors,
            }
        },
        "/health": _get("Liveness (the challenge's)", "Status", {"status": "OK"}),
        "/v2/health/live": _get("Liveness", "Live", {"live": True}),
        "/v2/health/ready": _get(
            "Readiness: every model loaded and warmed",
            "Ready",
            {"ready": True},
            **{"503": _response("Not ready", "Ready")},
        ),
        "/v2": _get("Server metadata (Open Inference Protocol)", "ServerMetadata"),
        **_model_paths("/v2/models/{name}", [_NAME], errors),
        **_model_paths("/v2/models/{name}/versions/{version}", [_NAME, _VERSION], errors),
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {
                            "application/json": {
                                "schema": {"type": "object", "additionalProperties": True}
                            }
                        },
                    }
                },
            }
        },
    }
    if metrics:
        paths["/metrics"] = {
            "get": {
                "summary": "Prometheus metrics of all workers",
                "responses": {
                    "200": {
                        "description": "text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "SCL flight-delay prediction",
            "version": "1.0.0",
            "description": "Predicts whether a flight leaving Santiago (SCL) is delayed by more "
            "than 15 minutes.",
        },
        "paths": _identified(_sheddable(paths)),
        "components": {
            "schemas": schemas,
            "parameters": {
                "X-Request-ID": {
                    "name": "X-Request-ID",
                    "in": "header",
                    "required": False,
                    "description": _REQUEST_ID + "; kept if sane, else replaced",
                    "schema": {"type": "string"},
                },
                "traceparent": {
                    "name": "traceparent",
                    "in": "header",
                    "required": False,
                    "description": _TRACEPARENT + "; an invalid one, or two, is ignored",
                    "schema": {"type": "string"},
                },
            },
            "headers": {
                "X-Request-ID": {
                    "description": _REQUEST_ID + ": the caller's, or a new one",
                    "schema": {"type": "string"},
                },
                "traceparent": {
                    "description": _TRACEPARENT + ": the caller's, echoed when valid (not on a "
                    "503 shed before the app)",
                    "schema": {"type": "string"},
                },
            },
        },
    }


def published(models_dir: Path) -> dict[str, Any]:
    """The document a server with the default settings serves for the models in `models_dir`
    (their operators and calendar years; /metrics on the public port)."""
    models = ModelSet.load(models_dir.resolve(), tabulate_minimal=False)
    return openapi_document(models.validator(Settings.max_flights))


def render(document: dict[str, Any]) -> bytes:
    """The published file's bytes: sorted keys, two-space indents, a final newline."""
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    models_dir = Path(args[0]) if args else Settings.models_dir
    try:
        sys.stdout.buffer.write(render(published(models_dir)))
    except ModelLoadError as error:
        print(f"openapi: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The OpenAPI 3.1 description of every route, written by hand and kept true by
tests/test_openapi.py (each route documented, each example answered as documented)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.flights import FLIGHT_TYPES

MINIMAL_EXAMPLE = {"OPERA": "Aerolineas Argentinas", "TIPOVUELO": "N", "MES": 3}
FULL_EXAMPLE = {
    "OPERA": "Grupo LATAM",
    "TIPOVUELO": "I",
    "MES": 1,
    "Fecha-I": "2017-01-01 23:30:00",
    "Des-I": "KMIA",
    "Emp-I": "LAN",
    "Vlo-I": "226",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], example: Any = None) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {"content": {"application/json": content}}


def _response(description: str, schema: str, example: Any = None) -> dict[str, Any]:
    return {"description": description} | _json(_ref(schema), example)


_ERRORS = {
    "400": _response(
        "Invalid input: the body names the flight, field, value and what is allowed",
        "Error",
        {
            "error": "flights[0].MES: value not allowed",
            "detail": {
                "index": 0,
                "field": "MES",
                "value": 13,
                "allowed": "an integer from 1 to 12",
            },
        },
    ),
    "408": _response(
        "The request head or body was not received within HEAD_TIMEOUT or BODY_TIMEOUT "
        "(answered by the server; the connection is then closed)",
        "Error",
    ),
    "413": _response("Body or batch over its limit", "Error"),
    "415": _response("Content-Type not accepted", "Error"),
    "431": _response(
        "Request line and headers over MAX_HEAD_BYTES (answered by the server; the connection "
        "is then closed)",
        "Error",
    ),
    "503": _response("Models not loaded yet", "Error"),
}
_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "enum": ["delay-minimal", "delay-full"]},
}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}


def _get(summary: str, schema: str, example: Any = None, **responses: Any) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "responses": {"200": _response("OK", schema, example)} | responses,
        }
    }


def _model_paths(prefix: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
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
                "responses": {
                    "200": _response(
                        "Outputs `label` (INT64) and `proba` (FP32)", "InferenceResponse"
                    )
                }
                | not_found
                | _ERRORS,
            },
        },
    }


def openapi_document(operators: Sequence[str] = ()) -> dict[str, Any]:
    operator_schema: dict[str, Any] = {"type": "string", "description": "operating airline"}
    if operators:
        operator_schema["enum"] = list(operators)
    flight = {
        "type": "object",
        "description": "The minimal contract is OPERA, TIPOVUELO, MES. Adding all four scheduled "
        "fields selects the full-schedule model. Any other field is refused (400).",
        "required": ["OPERA", "TIPOVUELO", "MES"],
        "additionalProperties": False,
        "properties": {
            "OPERA": operator_schema,
            "TIPOVUELO": {"type": "string", "enum": list(FLIGHT_TYPES)},
            "MES": {"type": "integer", "minimum": 1, "maximum": 12},
            "Fecha-I": {
                "type": "string",
                "pattern": r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}$",
                "description": "scheduled departure, local time; month must equal MES",
            },
            "Des-I": {"type": "string", "pattern": "^[A-Z]{4}$"},
            "Emp-I": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "Vlo-I": {
                "oneOf": [
                    {"type": "string", "pattern": "^[0-9]{1,4}[A-Z]?$"},
                    {"type": "integer", "minimum": 0, "maximum": 9999},
                ]
            },
        },
    }
    tensor = {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "data": {"type": "array"},
            "parameters": {"type": "object"},
        },
    }
    schemas = {
        "Flight": flight,
        "PredictRequest": {
            "type": "object",
            "required": ["flights"],
            "additionalProperties": False,
            "properties": {"flights": {"type": "array", "minItems": 1, "items": _ref("Flight")}},
        },
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
            "properties": {"error": {"type": "string"}, "detail": {"type": "object"}},
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
                "inputs": {"type": "array", "items": tensor},
                "outputs": {"type": "array", "items": tensor},
                "card": {"type": "object"},
            },
        },
        "InferenceRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "inputs": {"type": "array", "items": tensor},
                "outputs": {"type": "array", "items": {"type": "object"}},
            },
        },
        "InferenceResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {"type": "array", "items": tensor},
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
                        "description": "add `proba`",
                    }
                ],
                "requestBody": {"required": True}
                | _json(_ref("PredictRequest"), {"flights": [MINIMAL_EXAMPLE, FULL_EXAMPLE]}),
                "responses": {
                    "200": _response(
                        "One label per flight, in order", "PredictResponse", {"predict": [0, 1]}
                    )
                }
                | _ERRORS,
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
        **_model_paths("/v2/models/{name}", [_NAME]),
        **_model_paths("/v2/models/{name}/versions/{version}", [_NAME, _VERSION]),
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics of all workers",
                "responses": {
                    "200": {
                        "description": "text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "SCL flight-delay prediction",
            "version": "1.0.0",
            "description": "Predicts whether a flight leaving Santiago (SCL) is delayed by more "
            "than 15 minutes.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }

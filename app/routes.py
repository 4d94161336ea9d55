"""Endpoints: parse, call the model, serialize. Nothing else happens here."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from starlette.datastructures import QueryParams, State
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app import inference_protocol as oip
from app.errors import BadRequest, NotFound, NotReady, UnsupportedMediaType
from app.flights import FlightValidator
from app.http import JSONResponse, read_body, read_json, send_json
from app.metrics import exposition
from app.model import ModelSet, OnnxModel
from app.openapi import openapi_document
from app.settings import Settings

SERVER_NAME = "latam-delay"
_OIP_CONTENT_TYPES = {"", "application/json", "application/octet-stream"}
_TRUE, _FALSE = ("true", "1"), ("false", "0")


def _models(state: State) -> ModelSet:
    models: ModelSet | None = getattr(state, "models", None)
    if models is None or not models.ready:
        raise NotReady("models are not loaded yet")
    return models


class Predict:
    """`POST /predict` as a bare ASGI app: Starlette still routes it and maps its errors, but
    builds no Request, Response or per-route wrapper for the hottest route (a function endpoint
    would get all three; docs/performance.md)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state: State = scope["app"].state
        models = _models(state)
        settings: Settings = state.settings
        validator: FlightValidator = state.validator
        with_proba = _flag(scope, "proba")
        flights = validator.request(await read_json(scope, receive, settings.max_body_bytes))
        prediction = models.predict(flights)
        body: dict[str, Any] = {"predict": prediction.labels}
        if with_proba:
            body["proba"] = prediction.probabilities
        await send_json(send, body)


async def health(request: Request) -> Response:
    return JSONResponse({"status": "OK"})


async def live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def ready(request: Request) -> Response:
    models: ModelSet | None = getattr(request.app.state, "models", None)
    is_ready = models is not None and models.ready
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


async def server_metadata(request: Request) -> Response:
    return JSONResponse(
        {"name": SERVER_NAME, "version": version(SERVER_NAME), "extensions": ["binary_tensor_data"]}
    )


async def model_metadata(request: Request) -> Response:
    model = _model(request)
    return JSONResponse(
        {
            "name": model.name,
            "versions": [model.version],
            "platform": "onnxruntime_onnx",
            "inputs": [
                {"name": name, "datatype": datatype, "shape": [-1]}
                for name, datatype in model.input_types.items()
            ],
            "outputs": oip.output_metadata(),
            "card": model.card.raw,
        }
    )


async def model_ready(request: Request) -> Response:
    model = _model(request)
    return JSONResponse(
        {"name": model.name, "ready": model.ready}, status_code=200 if model.ready else 503
    )


async def infer(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    validator: FlightValidator = request.app.state.validator
    model = _model(request)
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type not in _OIP_CONTENT_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {content_type!r} is not JSON nor binary tensor data"
        )
    body = await read_body(request.scope, request.receive, settings.max_body_bytes)
    inference = oip.decode_request(body, request.headers.get(oip.HEADER_LENGTH), model.input_types)
    flights = validator.flights(inference.rows())
    prediction = _models(request.app.state).predict_with(model, flights)
    content, headers = oip.encode_response(model.name, model.version, inference, prediction)
    return Response(content, headers=headers)


async def metrics(request: Request) -> Response:
    content, content_type = exposition()
    return Response(content, media_type=content_type)


async def openapi(request: Request) -> Response:
    models: ModelSet | None = getattr(request.app.state, "models", None)
    return JSONResponse(openapi_document(models.operators if models else ()))


def _model(request: Request) -> OnnxModel:
    name = request.path_params["name"]
    models = _models(request.app.state)
    model = models.by_name.get(name)
    if model is None:
        raise NotFound(f"no model named {name!r}", models=sorted(models.by_name))
    wanted = request.path_params.get("version")
    if wanted is not None and wanted != model.version:
        raise NotFound(f"model {name!r} has no version {wanted!r}", versions=[model.version])
    return model


def _flag(scope: Scope, name: str) -> bool:
    query = scope["query_string"]
    if not query:  # the usual case: skip parsing an empty query
        return False
    value = QueryParams(query).get(name)
    if value is None or value.lower() in _FALSE:
        return False
    if value.lower() in _TRUE:
        return True
    raise BadRequest(f"query parameter {name}={value!r} must be true or false")


def _model_routes(prefix: str) -> list[Route]:
    return [
        Route(prefix, model_metadata, methods=["GET"]),
        Route(prefix + "/ready", model_ready, methods=["GET"]),
        Route(prefix + "/infer", infer, methods=["POST"]),
    ]


ROUTES = [
    Route("/predict", Predict(), methods=["POST"]),
    Route("/health", health, methods=["GET"]),
    Route("/v2/health/live", live, methods=["GET"]),
    Route("/v2/health/ready", ready, methods=["GET"]),
    Route("/v2", server_metadata, methods=["GET"]),
    *_model_routes("/v2/models/{name}"),
    *_model_routes("/v2/models/{name}/versions/{version}"),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]

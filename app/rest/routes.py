"""Endpoints: parse, call the model, serialize. Nothing else happens here."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers, QueryParams, State
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from app.dataplane import DataPlane
from app.errors import BadRequest, UnsupportedMediaType, quoted
from app.inference.flights import Batch, FlightValidator
from app.inference.microbatch import Scorer
from app.inference.model import MODEL_NAMES, ModelSet, OnnxModel, Prediction
from app.observability.metrics import exposition
from app.rest import inference_protocol as oip
from app.rest.http import (
    JSON_TYPE,
    JSONResponse,
    dumps,
    read_body,
    read_json_body,
    refuse_charset,
    request_content_type,
    send_body,
    send_error,
    send_json_body,
    single,
)
from app.rest.openapi import openapi_document
from app.settings import Settings

_OIP_CONTENT_TYPES = {"", "application/json", "application/octet-stream"}
MODEL_VERSION_HEADER = b"x-model-version"
"""On a /predict answer: `name=version` of each model that scored it (ModelSet.scored_by)."""
_TRUE, _FALSE = ("true", "1"), ("false", "0")


class Predict:
    """`POST /predict` as a bare ASGI app: Starlette still routes it and maps its errors, but
    builds no Request, Response or per-route wrapper for the hottest route (a function endpoint
    would get all three; docs/performance.md)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.send(send, *await self.body(scope, receive))

    async def body(self, scope: Scope, receive: Receive) -> tuple[bytes, bytes]:
        """The answer's JSON and the models that scored it (`ModelSet.scored_by`: the body cannot
        say which release answered); any error raised is what the request is answered instead."""
        models, batch = await self.request(scope, receive)
        with_proba = self.with_proba(scope)  # a bad flag is a 400 before any scoring
        scorer: Scorer = scope["app"].state.scorer
        prediction = await scorer.predict(models, batch)
        return dumps(self.answer(prediction, with_proba)), models.scored_by(batch)

    @staticmethod
    async def send(send: Send, body: bytes, scored_by: bytes) -> None:
        """The 200 of `body`, its X-Model-Version header naming `scored_by`."""
        await send_json_body(send, body, extra=((MODEL_VERSION_HEADER, scored_by),))

    @staticmethod
    async def request(scope: Scope, receive: Receive) -> tuple[ModelSet, Batch]:
        """The models (503 before they are loaded) and the body's validated flights."""
        state: State = scope["app"].state
        dataplane: DataPlane = state.dataplane
        models = dataplane.models()
        settings: Settings = state.settings
        validator: FlightValidator = state.validator
        return models, validator.decode(
            await read_json_body(scope, receive, settings.max_body_bytes)
        )

    @staticmethod
    def with_proba(scope: Scope) -> bool:
        """`?proba=true`: the probabilities too."""
        return _flag(scope, "proba")

    @staticmethod
    def answer(prediction: Prediction, with_proba: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"predict": prediction.labels}
        if with_proba:
            body["proba"] = prediction.probabilities
        return body


class PredictFirst:
    """The innermost layer of the service's own middleware (app.main): `POST /predict` and each
    model's unversioned OIP infer route served ahead of Starlette's error middleware and router,
    every other request passed to them.

    Under the server those layers cost the hottest route more than in-process: its Python runs
    on caches the previous response's loopback write has just cooled, so every frame and object
    a request touches counts (docs/performance.md). Skipping them for this one route: x0.88 the
    server CPU a request (development A/B over HTTP, table path). Nothing else changes: the routes
    still own 405s, unknown models' 404s and the OpenAPI document, its errors go to the same handlers
    (app.rest.http.send_error), and the metrics, request-ID and access-log layers stay outside."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope.get("root_path")  # Starlette's router knows what to strip
        ):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == PREDICT_ROUTE.path:
            scope["route"] = PREDICT_ROUTE  # as the router sets it: the metrics', logs', traces'
            try:
                predicted = await PREDICT.body(scope, receive)
            except Exception as error:
                await send_error(scope, receive, send, error)
                return
            await PREDICT.send(send, *predicted)
            return
        name = INFER_PATHS.get(path)
        if name is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = INFER_ROUTE
        scope["path_params"] = {"name": name}
        try:
            answer = await INFER.answer(scope, receive)
        except Exception as error:
            await send_error(scope, receive, send, error)
            return
        await send_body(send, *answer)


async def health(request: Request) -> Response:
    return JSONResponse({"status": "OK"})


async def live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def ready(request: Request) -> Response:
    is_ready = _dataplane(request).ready()
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


async def server_metadata(request: Request) -> Response:
    return JSONResponse(_dataplane(request).server_metadata())


async def model_metadata(request: Request) -> Response:
    dataplane = _dataplane(request)
    return JSONResponse(dataplane.model_metadata(_model(request, dataplane)))


async def model_ready(request: Request) -> Response:
    model = _model(request, _dataplane(request))
    return JSONResponse(
        {"name": model.name, "ready": model.ready}, status_code=200 if model.ready else 503
    )


class Infer:
    """`POST /v2/models/{name}[/versions/{version}]/infer` as a bare ASGI app, as `Predict` is,
    and served ahead of Starlette's error middleware and router like it for each model's
    unversioned route (`PredictFirst`): a function endpoint's Request, Response and wrappers
    were about a third of an OIP request's own time in-process (docs/performance.md)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_body(send, *await self.answer(scope, receive))

    async def answer(self, scope: Scope, receive: Receive) -> tuple[bytes, dict[str, str]]:
        """The answer's body and headers; any error raised is what the request is answered
        instead."""
        state: State = scope["app"].state
        dataplane: DataPlane = state.dataplane
        params = scope["path_params"]
        model = dataplane.model(params["name"], params.get("version"))
        headers = Headers(scope=scope)
        media_type, _, parameters = request_content_type(scope).partition(";")
        content_type = media_type.strip().lower()
        if content_type not in _OIP_CONTENT_TYPES:
            raise UnsupportedMediaType(
                f"Content-Type {quoted(content_type)} is not JSON nor binary tensor data"
            )
        if parameters and content_type == JSON_TYPE:
            refuse_charset(parameters)
        settings: Settings = state.settings
        body = await read_body(scope, receive, settings.max_body_bytes)
        inference = await dataplane.decode(
            len(body),
            oip.decode_request,
            body,
            single(headers, oip.HEADER_LENGTH),
            model.input_types,
        )
        prediction = await dataplane.infer(model, inference)
        return oip.encode_response(model.name, model.version, inference, prediction)


async def metrics(request: Request) -> Response:
    content, content_type = exposition()
    return Response(content, media_type=content_type)


async def openapi(request: Request) -> Response:
    state = request.app.state
    validator: FlightValidator | None = getattr(state, "validator", None)
    if validator is None:  # models not loaded yet: the contract without its operators
        validator = FlightValidator((), state.settings.max_flights)
    return JSONResponse(openapi_document(validator, metrics=state.settings.metrics_port is None))


def _dataplane(request: Request) -> DataPlane:
    dataplane: DataPlane = request.app.state.dataplane
    return dataplane


def _model(request: Request, dataplane: DataPlane) -> OnnxModel:
    return dataplane.model(request.path_params["name"], request.path_params.get("version"))


def _flag(scope: Scope, name: str) -> bool:
    query = scope["query_string"]
    if not query:  # the usual case: skip parsing an empty query
        return False
    values = QueryParams(query).getlist(name)
    if len(values) > 1:  # Starlette's get() keeps the last: `proba=true&proba=false` was false
        raise BadRequest(f"query parameter {name} is given {len(values)} times: give it once")
    value = values[0] if values else None
    if value is None or value.lower() in _FALSE:
        return False
    if value.lower() in _TRUE:
        return True
    raise BadRequest(f"query parameter {name}={quoted(value)} must be true or false")


def _model_routes(prefix: str) -> list[Route]:
    return [
        Route(prefix, model_metadata, methods=["GET"]),
        Route(prefix + "/ready", model_ready, methods=["GET"]),
        INFER_ROUTE
        if prefix == MODEL_PREFIX
        else Route(prefix + "/infer", INFER, methods=["POST"]),
    ]


PREDICT = Predict()
PREDICT_ROUTE = Route("/predict", PREDICT, methods=["POST"])
INFER = Infer()
MODEL_PREFIX = "/v2/models/{name}"
INFER_ROUTE = Route(MODEL_PREFIX + "/infer", INFER, methods=["POST"])
INFER_PATHS = {f"/v2/models/{name}/infer": name for name in MODEL_NAMES}
"""Each model's unversioned infer path, and its name (the router's path parameter)."""
ROUTES = [
    PREDICT_ROUTE,
    Route("/health", health, methods=["GET"]),
    Route("/v2/health/live", live, methods=["GET"]),
    Route("/v2/health/ready", ready, methods=["GET"]),
    Route("/v2", server_metadata, methods=["GET"]),
    *_model_routes(MODEL_PREFIX),
    *_model_routes("/v2/models/{name}/versions/{version}"),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]

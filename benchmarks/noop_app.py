"""The framework ceiling: the same Starlette + uvicorn + gunicorn stack, answering /predict with
a constant after reading the body. Nothing the service does can be faster than this."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_ANSWER = b'{"predict":[0]}'


async def predict(request: Request) -> Response:
    await request.body()
    return Response(_ANSWER, media_type="application/json")


async def ready(request: Request) -> Response:
    return Response(b'{"ready":true}', media_type="application/json")


def create_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/predict", predict, methods=["POST"]),
            Route("/v2/health/ready", ready, methods=["GET"]),
        ]
    )

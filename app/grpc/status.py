"""The service's errors as gRPC status codes: what an HTTP status is to REST."""

from __future__ import annotations

import grpc
import orjson

from app.errors import ServiceError

_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    408: grpc.StatusCode.CANCELLED,  # the client's doing, as REST's 408: no server error
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    499: grpc.StatusCode.CANCELLED,
    503: grpc.StatusCode.UNAVAILABLE,
}


def status_of(error: ServiceError) -> grpc.StatusCode:
    return _CODES.get(error.status_code, grpc.StatusCode.INTERNAL)


def details_of(error: ServiceError) -> str:
    """The REST error's message, followed by its JSON detail when it has one."""
    if not error.detail:
        return error.message
    return f"{error.message} {orjson.dumps(error.detail).decode()}"

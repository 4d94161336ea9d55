"""One gRPC call of the service, around its method: what REST's middleware and error handler do.

Each method reads its request's bytes itself (`rpc` parses them), so that a message that does
not parse is an INVALID_ARGUMENT the metrics count, like REST's malformed JSON, rather than
grpcio's INTERNAL before any handler runs.

Every call is timed and counted in the HTTP metrics (route = the gRPC method's path, method
`GRPC`, status = the status code's name), runs under the caller's `x-request-id` metadata (or
a new ID) so its log lines carry it, and returns that ID as trailing metadata. A ServiceError
becomes its status code (app.grpc.status); anything else is logged and is INTERNAL. A call
grpcio cancels is counted DEADLINE_EXCEEDED if its deadline has passed, CANCELLED otherwise.

A call that arrives while its servicer's `max_in_flight` calls are unanswered is UNAVAILABLE at
once, its message not parsed: REST's in-flight bound (app.server.overload), which gRPC lacked.
grpcio hands every call to its handler as soon as its message is in (GRPC_MAX_STREAMS bounds a
connection, nothing the connections), and each waiting call holds its decoded tensors: 5
connections keeping 90 10,000-flight calls each in flight took a worker from 88 MB to 2 GB.

Free of the generated messages (see app/grpc/__init__.py), so its tests run beside
tritonclient's.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeAlias, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from app.errors import BadRequest, Overloaded, ServiceError
from app.grpc.status import details_of, status_of
from app.observability.metrics import observe_latency
from app.observability.request_id import HEADER, REQUEST_ID, caller_id
from app.server.overload import SHED_ERROR

SERVICE = "inference.GRPCInferenceService"
METHOD_LABEL = "GRPC"
_HEADER = HEADER.decode("ascii")
logger = logging.getLogger("app")

Request = TypeVar("Request", bound=Message)
Response = TypeVar("Response", bound=Message)
Context: TypeAlias = grpc.aio.ServicerContext
Method = Callable[[Any, Request, Context], Awaitable[Response]]
Handler = Callable[[Any, bytes, Context], Awaitable[Response]]


def rpc(request_type: type[Request]) -> Callable[[Method[Request, Response]], Handler[Response]]:
    """A method of the service (`method(self, request, context)`) as grpcio calls it: on the
    request's bytes, timed, counted, under its request ID, its errors as status codes, and
    UNAVAILABLE past the servicer's `max_in_flight` calls unanswered."""

    def wrap(method: Method[Request, Response]) -> Handler[Response]:
        route = f"/{SERVICE}/{method.__name__}"

        @functools.wraps(method)
        async def call(self: Any, data: bytes, context: Context) -> Response:
            start = time.perf_counter()
            request_id = _request_id(context)
            REQUEST_ID.set(request_id)  # each call runs in its own task: no reset needed
            trailer = ((_HEADER, request_id.decode("ascii")),)
            context.set_trailing_metadata(trailer)
            code = grpc.StatusCode.OK
            self.in_flight += 1
            try:
                if self.in_flight > self.max_in_flight:
                    # a new error each time: raising one instance again adds this frame (and its
                    # message) to the traceback it keeps, 730 KB a refused call, never freed
                    raise Overloaded(SHED_ERROR.message)
                return await method(self, _parse(request_type, data), context)
            except ServiceError as error:
                code = status_of(error)
                await _abort(context, code, details_of(error), trailer)
            except asyncio.CancelledError:
                code = _cancelled_code(context)
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                logger.exception("unhandled error in %s", route)
                await _abort(context, code, "internal error", trailer)
            finally:
                self.in_flight -= 1
                observe_latency(route, METHOD_LABEL, code.name, time.perf_counter() - start)

        return call

    return wrap


def _cancelled_code(context: Context) -> grpc.StatusCode:
    """grpcio cancels a call whose client deadline has passed as it cancels one the client
    abandoned: the first is DEADLINE_EXCEEDED, as the client sees it and the alerts count it
    (the service slower than its callers allow); counted CANCELLED, it was a client's doing."""
    return (
        grpc.StatusCode.DEADLINE_EXCEEDED
        if context.time_remaining() == 0
        else grpc.StatusCode.CANCELLED
    )


def _parse(request_type: type[Request], data: bytes) -> Request:
    try:
        parsed: Request = request_type.FromString(data)
    except DecodeError:
        raise BadRequest(f"the message is not a {request_type.__name__}") from None
    return parsed


async def _abort(
    context: Context, code: grpc.StatusCode, details: str, trailer: tuple[tuple[str, str], ...]
) -> NoReturn:
    """`context.abort`, typed as what it does (grpcio ships no type hints): it raises."""
    await context.abort(code, details, trailer)
    raise AssertionError("grpc.aio's abort returned")


def _request_id(context: Context) -> bytes:
    """The metadata's `x-request-id` judged as the header is (`caller_id`: the first, if sane)."""
    return caller_id(
        (HEADER, value.encode("utf-8") if isinstance(value, str) else bytes(value))
        for key, value in context.invocation_metadata() or ()
        if key == _HEADER
    )

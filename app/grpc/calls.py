"""One gRPC call of the service, around its method: what REST's middleware and error handler do.

Each method reads its request's bytes itself (`rpc` parses them), so that a message that does
not parse is an INVALID_ARGUMENT the metrics count, like REST's malformed JSON, rather than
grpcio's INTERNAL before any handler runs.

Every call is timed and counted in the HTTP metrics (route = the gRPC method's path, method
`GRPC`, status = the status code's name), runs under the caller's `x-request-id` metadata (or
a new ID) so its log lines carry it, and returns that ID as trailing metadata. A ServiceError
becomes its status code (app.grpc.status); anything else is logged and is INTERNAL. A call
grpcio cancels is counted DEADLINE_EXCEEDED if its deadline has passed (or is within
DEADLINE_SLACK), CANCELLED otherwise.

A call that arrives while its servicer's `max_in_flight` calls are unanswered is UNAVAILABLE at
once, its message not read, with REST's Retry-After as `grpc-retry-pushback-ms`: REST's
in-flight bound (app.server.overload), which gRPC lacked.
grpcio hands every call to its handler as soon as its message is in (GRPC_MAX_STREAMS bounds a
connection, nothing the connections), and each waiting call holds its decoded tensors: 5
connections keeping 90 10,000-flight calls each in flight took a worker from 88 MB to 2 GB.

So that the bound also holds the calls whose message is still coming, every method is served
as grpcio serves a client-streaming one (`handler`): the method runs from the call's headers
and reads its one message itself, within the servicer's `message_timeout` (REST's
BODY_TIMEOUT; CANCELLED after it, a client's error as REST's 408 is). As a unary method,
grpcio buffered each call's message until it was whole, up to MAX_BODY_BYTES, for as long as
its connection lived (GRPC_MAX_AGE_SECONDS and its grace): 4 connections of 100 calls each
sent all but their message's last byte took a worker from 82 MB to 484 MB for 330 s, and such
calls were in no metric. A call's time counted runs from its headers, as REST's from its head.
A call is in flight until grpcio has sent its answer (`_leave`), not until its method returns.

Free of the generated messages (see app/grpc/__init__.py), so its tests run beside
tritonclient's.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any, NoReturn, TypeAlias, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from app.errors import BadRequest, Overloaded, RequestTimeout, ServiceError
from app.grpc.status import details_of, status_of
from app.observability.metrics import observe_latency
from app.observability.request_id import HEADER, REQUEST_ID, caller_id
from app.server.overload import RETRY_AFTER, SHED_ERROR

SERVICE = "inference.GRPCInferenceService"
METHOD_LABEL = "GRPC"
_HEADER = HEADER.decode("ascii")
logger = logging.getLogger("app")
MESSAGE_BYTES: ContextVar[int] = ContextVar("MESSAGE_BYTES", default=0)
"""The size of the call's message, as it came: ModelInfer decodes a large one's tensors off the
event loop (app.dataplane), and a parsed message's ByteSize would cost the loop a serialisation
(1.5 ms for a 1-MiB one of empty strings)."""

PUSHBACK = (("grpc-retry-pushback-ms", str(RETRY_AFTER * 1000)),)
"""A shed call's trailer beside its request ID: REST's `Retry-After` in gRPC's terms (its retry
design, A6), which a client whose retry policy takes UNAVAILABLE waits for, rather than coming
back into the same full worker after its own backoff of a few ms."""

Request = TypeVar("Request", bound=Message)
Response = TypeVar("Response", bound=Message)
Context: TypeAlias = grpc.aio.ServicerContext
Method = Callable[[Any, Request, Context], Awaitable[Response]]
Handler = Callable[[Any, AsyncIterator[bytes], Context], Awaitable[Response]]


def rpc(
    request_type: type[Request], *, service: str = SERVICE, shed: bool = True
) -> Callable[[Method[Request, Response]], Handler[Response]]:
    """A method of `service` (`method(self, request, context)`) as `handler` serves it: from
    the call's headers, timed, counted, under its request ID, its errors as status codes,
    UNAVAILABLE past the servicer's `max_in_flight` calls unanswered (unless not `shed`: the
    probes, as REST's UNSHED_PATHS), and its one message read within the servicer's
    `message_timeout` seconds."""

    def wrap(method: Method[Request, Response]) -> Handler[Response]:
        route = f"/{service}/{method.__name__}"

        @functools.wraps(method)
        async def call(self: Any, messages: AsyncIterator[bytes], context: Context) -> Response:
            start = time.perf_counter()
            request_id = _request_id(context)
            REQUEST_ID.set(request_id)  # each call runs in its own task: no reset needed
            trailer = ((_HEADER, request_id.decode("ascii")),)
            context.set_trailing_metadata(trailer)
            code = grpc.StatusCode.OK
            self.in_flight += 1
            context.add_done_callback(functools.partial(_leave, self))
            try:
                if shed and self.in_flight > self.max_in_flight:
                    # a new error each time: raising one instance again adds this frame (and its
                    # message) to the traceback it keeps, 730 KB a refused call, never freed
                    raise Overloaded(SHED_ERROR.message)
                data = await _message(context, self.message_timeout)
                MESSAGE_BYTES.set(len(data))  # each call runs in its own task, as for REQUEST_ID
                return await method(self, _parse(request_type, data), context)
            except ServiceError as error:
                code = status_of(error)
                pushback = PUSHBACK if isinstance(error, Overloaded) else ()
                await _abort(context, code, details_of(error), trailer + pushback)
            except asyncio.CancelledError:
                code = _cancelled_code(context)
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                logger.exception("unhandled error in %s", route)
                await _abort(context, code, "internal error", trailer)
            finally:
                observe_latency(route, METHOD_LABEL, code.name, time.perf_counter() - start)

        return call

    return wrap


def _leave(servicer: Any, context: Context) -> None:
    """A call leaves its servicer's `in_flight` when grpcio is done with it, its answer sent:
    grpcio sends a method's answer after the method returns, and holds it until the client's
    HTTP/2 window lets it go, so counted until the method returned, calls whose client never
    read their answers were bounded by nothing but GRPC_MAX_STREAMS a connection."""
    servicer.in_flight -= 1


def handler(method: Callable[[AsyncIterator[bytes], Context], Awaitable[Message]]) -> Any:
    """grpcio's handler of a method `rpc` wrapped (bound to its servicer): a client-streaming
    one, so that the method runs before its message is in, its answer serialised by protobuf.
    On the wire a unary call is a client-streaming call of one message: clients see no
    difference."""
    return grpc.stream_unary_rpc_method_handler(method, response_serializer=_serialize)


async def _message(context: Context, timeout: float) -> bytes:
    """The call's first message: a unary method's client sends no other (one that did would
    have the rest left unread, the call ending with its answer)."""
    try:
        async with asyncio.timeout(timeout):
            message = await context.read()
    except TimeoutError:
        raise RequestTimeout(f"the request message did not arrive within {timeout:g} s") from None
    if message is grpc.aio.EOF:
        # grpcio's read ends so too for a call it is cancelling (its deadline passed, its client
        # cancelled it), the cancel coming a moment later: counted INVALID_ARGUMENT, as a call
        # without a message, such a deadline was hidden from the alerts. Given that moment,
        # `rpc` counts the call as its client saw it.
        await asyncio.sleep(CANCEL_SETTLE)
        raise BadRequest("the call carried no request message")
    data: bytes = message
    return data


def _serialize(message: Message) -> bytes:
    data: bytes = message.SerializeToString()
    return data


DEADLINE_SLACK = 0.05
"""Seconds: a cancel this close to the server's deadline is the client's deadline passing."""
CANCEL_SETTLE = 0.05
"""Seconds a call whose read ended without a message waits for grpcio's cancel, if it is being
cancelled, before it is answered INVALID_ARGUMENT (`_message`)."""


def _cancelled_code(context: Context) -> grpc.StatusCode:
    """grpcio cancels a call whose client deadline has passed as it cancels one the client
    abandoned: the first is DEADLINE_EXCEEDED, as the client sees it and the alerts count it
    (the service slower than its callers allow); counted CANCELLED, it was a client's doing.
    The server's deadline runs late by the call's transit (grpc-timeout counts from the
    client's send), and the client's cancel at its own deadline can arrive first: within
    DEADLINE_SLACK of the deadline, a cancel is counted as the deadline."""
    remaining = context.time_remaining()
    return (
        grpc.StatusCode.DEADLINE_EXCEEDED
        if remaining is not None and remaining <= DEADLINE_SLACK
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

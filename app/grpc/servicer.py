"""`GRPCInferenceService`: each call translated to the data plane and back.

Every call is timed and counted in the HTTP metrics (route = the gRPC method's path, method
`GRPC`, status = the status code's name), runs under the caller's `x-request-id` metadata (or
a new ID) so its log lines carry it, and returns that ID as trailing metadata. A ServiceError
becomes its status code (app.grpc.status); anything else is logged and is INTERNAL.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeAlias, TypeVar

import grpc

from app.dataplane import DataPlane
from app.errors import ServiceError
from app.grpc import codec
from app.grpc import grpc_predict_v2_pb2 as pb
from app.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceServicer
from app.grpc.status import details_of, status_of
from app.metrics import observe_latency
from app.request_id import HEADER, REQUEST_ID, accepted, new_id

SERVICE = "inference.GRPCInferenceService"
METHOD_LABEL = "GRPC"
_HEADER = HEADER.decode("ascii")
logger = logging.getLogger("app")

Request = TypeVar("Request")
Response = TypeVar("Response")
Context: TypeAlias = grpc.aio.ServicerContext
Method = Callable[[Any, Request, Context], Awaitable[Response]]


def _rpc(method: Method[Request, Response]) -> Method[Request, Response]:
    route = f"/{SERVICE}/{method.__name__}"

    @functools.wraps(method)
    async def call(self: Any, request: Request, context: Context) -> Response:
        start = time.perf_counter()
        request_id = _request_id(context)
        REQUEST_ID.set(request_id)  # each call runs in its own task: no reset needed
        trailer = ((_HEADER, request_id.decode("ascii")),)
        context.set_trailing_metadata(trailer)
        code = grpc.StatusCode.OK
        try:
            return await method(self, request, context)
        except ServiceError as error:
            code = status_of(error)
            await _abort(context, code, details_of(error), trailer)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            logger.exception("unhandled error in %s", route)
            await _abort(context, code, "internal error", trailer)
        finally:
            observe_latency(route, METHOD_LABEL, code.name, time.perf_counter() - start)

    return call


async def _abort(
    context: Context, code: grpc.StatusCode, details: str, trailer: tuple[tuple[str, str], ...]
) -> NoReturn:
    """`context.abort`, typed as what it does (grpcio ships no type hints): it raises."""
    await context.abort(code, details, trailer)
    raise AssertionError("grpc.aio's abort returned")


def _request_id(context: Context) -> bytes:
    for key, value in context.invocation_metadata() or ():
        if key == _HEADER:
            raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
            if accepted(raw):
                return raw
            break
    return new_id()


class InferenceServicer(GRPCInferenceServiceServicer):
    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    @_rpc
    async def ServerLive(  # noqa: N802 (the proto's method names)
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @_rpc
    async def ServerReady(  # noqa: N802
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.dataplane.ready())

    @_rpc
    async def ModelReady(  # noqa: N802
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        model = self.dataplane.model(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=model.ready)

    @_rpc
    async def ServerMetadata(  # noqa: N802
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**self.dataplane.server_metadata())

    @_rpc
    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        model = self.dataplane.model(request.name, request.version or None)
        return codec.model_metadata(self.dataplane.model_metadata(model))

    @_rpc
    async def ModelInfer(  # noqa: N802
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        model = self.dataplane.model(request.model_name, request.model_version or None)
        inference = codec.decode_request(request, model.input_types)
        prediction = self.dataplane.infer(model, inference)
        return codec.encode_response(model, inference, prediction)

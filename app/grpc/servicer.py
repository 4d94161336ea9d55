"""`GRPCInferenceService`: each call translated to the data plane and back (app.grpc.calls
times, counts and maps the errors of every call)."""

from __future__ import annotations

import grpc

from app.dataplane import DataPlane
from app.grpc import codec
from app.grpc import grpc_predict_v2_pb2 as pb
from app.grpc.calls import MESSAGE_BYTES, SERVICE, Context, handler, rpc

METHODS = (
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelInfer",
)


class InferenceServicer:
    def __init__(self, dataplane: DataPlane, max_in_flight: int, message_timeout: float) -> None:
        self.dataplane = dataplane
        self.in_flight = 0
        """Calls started and not answered yet (app.grpc.server drains on it)."""
        self.max_in_flight = max_in_flight
        """Past this many calls in flight a new one is UNAVAILABLE at once (app.grpc.calls):
        MAX_IN_FLIGHT, REST's bound, counted apart from REST's requests."""
        self.message_timeout = message_timeout
        """Seconds a call's message may take to arrive in full (BODY_TIMEOUT, as a REST body)."""

    @rpc(pb.ServerLiveRequest, shed=False)  # a probe, as app.grpc.health's
    async def ServerLive(  # noqa: N802 (the proto's method names)
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @rpc(pb.ServerReadyRequest, shed=False)
    async def ServerReady(  # noqa: N802
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.dataplane.ready())

    @rpc(pb.ModelReadyRequest)
    async def ModelReady(  # noqa: N802
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        model = self.dataplane.model(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=model.ready)

    @rpc(pb.ServerMetadataRequest)
    async def ServerMetadata(  # noqa: N802
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**self.dataplane.server_metadata())

    @rpc(pb.ModelMetadataRequest)
    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        model = self.dataplane.model(request.name, request.version or None)
        return codec.model_metadata(self.dataplane.model_metadata(model))

    @rpc(pb.ModelInferRequest)
    async def ModelInfer(  # noqa: N802
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        model = self.dataplane.model(request.model_name, request.model_version or None)
        inference = await self.dataplane.decode(
            MESSAGE_BYTES.get(), codec.decode_request, request, model.input_types
        )
        prediction = await self.dataplane.infer(model, inference)
        return codec.encode_response(model, inference, prediction)


def generic_handler(servicer: InferenceServicer) -> grpc.GenericRpcHandler:
    """The service's methods, each reading and parsing its own request (app.grpc.calls)."""
    return grpc.method_handlers_generic_handler(
        SERVICE, {name: handler(getattr(servicer, name)) for name in METHODS}
    )

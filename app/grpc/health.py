"""gRPC's standard health service, `grpc.health.v1.Health`
(https://github.com/grpc/grpc/blob/master/doc/health-checking.md): what Kubernetes' gRPC
probes, grpc-health-probe and gRPC-aware load balancers ask a gRPC port, which know nothing of
the Open Inference Protocol's own ServerReady. It says what ServerReady says: SERVING once the
worker's models are loaded.

`Check` and `List` are served, timed and counted as every call (app.grpc.calls), and never shed
past MAX_IN_FLIGHT, as REST's probes are not (app.server.overload.UNSHED_PATHS): shed, they told
an orchestrator that an overloaded worker was unready. `Watch` is not: its call ends
UNIMPLEMENTED, which the protocol tells clients to read as "not supported, do not retry"
(gRPC's client-side health checking then takes the server as healthy); a stream per watcher,
open for as long as its client, would hold every worker's stop to its full grace (grpcio's
`stop` waits for the calls still open).
"""

from __future__ import annotations

import grpc

from app.dataplane import DataPlane
from app.errors import NotFound, quoted
from app.grpc import health_pb2 as pb
from app.grpc.calls import SERVICE, Context, handler, rpc

HEALTH = "grpc.health.v1.Health"
SERVICES = ("", SERVICE)
"""What `Check` knows: the server as a whole (""), and the inference service."""


class HealthServicer:
    def __init__(self, dataplane: DataPlane, message_timeout: float) -> None:
        self.dataplane = dataplane
        self.in_flight = 0
        self.max_in_flight = 0
        """Not read: no method here is shed (`rpc(..., shed=False)`)."""
        self.message_timeout = message_timeout

    def status(self) -> pb.HealthCheckResponse.ServingStatus:
        if self.dataplane.ready():
            return pb.HealthCheckResponse.SERVING
        return pb.HealthCheckResponse.NOT_SERVING

    @rpc(pb.HealthCheckRequest, service=HEALTH, shed=False)
    async def Check(  # noqa: N802 (the proto's method names)
        self, request: pb.HealthCheckRequest, context: Context
    ) -> pb.HealthCheckResponse:
        if request.service not in SERVICES:  # NOT_FOUND, as the protocol asks
            raise NotFound(f"unknown service {quoted(request.service)}; this server has {SERVICES}")
        return pb.HealthCheckResponse(status=self.status())

    @rpc(pb.HealthListRequest, service=HEALTH, shed=False)
    async def List(  # noqa: N802
        self, request: pb.HealthListRequest, context: Context
    ) -> pb.HealthListResponse:
        status = pb.HealthCheckResponse(status=self.status())
        return pb.HealthListResponse(statuses=dict.fromkeys(SERVICES, status))


def health_handler(servicer: HealthServicer) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        HEALTH, {"Check": handler(servicer.Check), "List": handler(servicer.List)}
    )

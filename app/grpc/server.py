"""The gRPC server a worker runs beside uvicorn, on the worker's own event loop.

Every worker binds GRPC_BIND itself: gRPC sets SO_REUSEPORT on Linux, so the kernel spreads
connections over the workers as gunicorn's shared socket does for HTTP. A worker that begins to
stop (a shutdown; a reload's old worker once the new ones listen: app.server.handoff) leaves
that group first (`stop_accepting`, app.grpc.listeners), so new connections reach only the
workers that keep serving, then drains its own. The limits mirror
REST's: a message over MAX_BODY_BYTES is RESOURCE_EXHAUSTED before it is read, MAX_FLIGHTS
applies through the data plane, one connection may carry GRPC_MAX_STREAMS calls at once, a call
past MAX_IN_FLIGHT unanswered ones of the worker is UNAVAILABLE (but the probes: ServerLive,
ServerReady, app.grpc.health's), and a call's message must
arrive within BODY_TIMEOUT (app.grpc.calls).
A worker holds at most GRPC_MAX_CONNECTIONS connections (one more is closed as it is accepted:
app.descriptors), and a connection is closed after GRPC_IDLE_SECONDS without a call, and after
GRPC_MAX_AGE_SECONDS in any case (its calls given AGE_GRACE_SECONDS), as a REST connection is
after its keep-alive.
Pings are answered however many come (`grpc.http2.max_ping_strikes` 0): past grpcio's third
ping too early it sent GOAWAY but kept the connection and stopped answering them, queueing each
answer at a cost that grows with the queue, so that one connection's 20-s PING flood (~490,000
pings) left its worker burning a core for minutes after the client had gone.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from app.dataplane import DataPlane
from app.grpc.health import HealthServicer, health_handler
from app.grpc.listeners import close_listeners
from app.grpc.servicer import InferenceServicer, generic_handler
from app.observability.metrics import keep_flushing, sample_in_flight
from app.settings import Settings

HANDOVER_SECONDS = 0.2
"""Serving time before the drain looks at the calls in flight: calls already received reach
the servicer."""
POLL_SECONDS = 0.05
AGE_GRACE_SECONDS = 30
"""What the calls in flight on a connection closed for its age still get (GRPC_MAX_AGE_SECONDS)."""


class GrpcServer:
    """grpcio's server, with a drain that waits for the servicer's calls first."""

    def __init__(self, server: grpc.aio.Server, servicer: InferenceServicer, port: int) -> None:
        self.server = server
        self.servicer = servicer
        self.port = port

    async def stop_accepting(self) -> None:
        """Closes the listening socket now, while the calls in flight go on: grpcio closes it only
        in `stop`, which must wait for them, and until then the kernel kept handing this worker
        new connections (a reload's old worker answered them with the old models, seconds after
        the new workers served): app.grpc.listeners."""
        await close_listeners(self.port)

    async def stop(self, grace: float) -> None:
        """After `stop_accepting`. grpcio's stop cancels calls its servicer is still working on
        (a batch queued for the batch thread), so serve on until none is in flight, for at most
        half of `grace`, then stop with the other half (tests/test_grpc_server.py sends SIGTERM
        with 20 batches in flight). A client still sending on its connection meanwhile keeps the
        drain waiting: what is in flight at the deadline is cancelled."""
        deadline = time.monotonic() + grace / 2
        await asyncio.sleep(HANDOVER_SECONDS)
        while self.servicer.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
        await self.server.stop(grace / 2)


async def start(settings: Settings, dataplane: DataPlane) -> GrpcServer:
    """Serving on `settings.grpc_bind` when it returns; raises RuntimeError if it cannot bind."""
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_concurrent_streams", settings.grpc_max_streams),
            ("grpc.max_allowed_incoming_connections", settings.grpc_max_connections),
            ("grpc.max_connection_idle_ms", settings.grpc_idle_seconds * 1000),
            ("grpc.max_connection_age_ms", settings.grpc_max_age_seconds * 1000),
            ("grpc.max_connection_age_grace_ms", AGE_GRACE_SECONDS * 1000),
            ("grpc.http2.max_ping_strikes", 0),
        ]
    )
    servicer = InferenceServicer(dataplane, settings.max_in_flight, settings.body_timeout)
    health = HealthServicer(dataplane, settings.body_timeout)
    server.add_generic_rpc_handlers((generic_handler(servicer), health_handler(health)))
    port = server.add_insecure_port(settings.grpc_bind)
    await server.start()
    keep_flushing()
    sample_in_flight("grpc", lambda: servicer.in_flight)
    return GrpcServer(server, servicer, port)

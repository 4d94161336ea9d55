"""The gRPC server a worker runs beside uvicorn, on the worker's own event loop.

Every worker binds GRPC_BIND itself: gRPC sets SO_REUSEPORT on Linux, so the kernel spreads
connections over the workers as gunicorn's shared socket does for HTTP. The limits mirror
REST's: a message over MAX_BODY_BYTES is RESOURCE_EXHAUSTED before it is read, MAX_FLIGHTS
applies through the data plane, and one connection may carry GRPC_MAX_STREAMS calls at once.
"""

from __future__ import annotations

import grpc

from app.dataplane import DataPlane
from app.grpc.servicer import InferenceServicer, generic_handler
from app.metrics import keep_flushing
from app.settings import Settings


async def start(settings: Settings, dataplane: DataPlane) -> grpc.aio.Server:
    """Serving on `settings.grpc_bind` when it returns; raises RuntimeError if it cannot bind."""
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_concurrent_streams", settings.grpc_max_streams),
        ]
    )
    server.add_generic_rpc_handlers((generic_handler(InferenceServicer(dataplane)),))
    server.add_insecure_port(settings.grpc_bind)
    await server.start()
    keep_flushing()
    return server

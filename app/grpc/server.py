"""The gRPC server a worker runs beside uvicorn, on the worker's own event loop.

Every worker binds GRPC_BIND itself: gRPC sets SO_REUSEPORT on Linux, so the kernel spreads
connections over the workers as gunicorn's shared socket does for HTTP. A worker that begins to
stop (a reload's old worker, a shutdown) leaves that group at once (`stop_accepting`), so new
connections reach only the workers that keep serving, then drains its own. The limits mirror
REST's: a message over MAX_BODY_BYTES is RESOURCE_EXHAUSTED before it is read, MAX_FLIGHTS
applies through the data plane, and one connection may carry GRPC_MAX_STREAMS calls at once.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import time

import grpc

from app.dataplane import DataPlane
from app.grpc.servicer import InferenceServicer, generic_handler
from app.observability.metrics import keep_flushing
from app.settings import Settings

HANDOVER_SECONDS = 0.2
"""Serving time before the drain looks at the calls in flight: calls already received reach
the servicer."""
POLL_SECONDS = 0.05


class GrpcServer:
    """grpcio's server, with a drain that waits for the servicer's calls first."""

    def __init__(self, server: grpc.aio.Server, servicer: InferenceServicer, port: int) -> None:
        self.server = server
        self.servicer = servicer
        self.port = port

    def stop_accepting(self) -> None:
        """Closes the listening socket now, while the calls in flight go on: grpcio closes it only
        in `stop`, which must wait for them, and until then the kernel kept handing this worker
        new connections (a reload's old worker answered them with the old models, seconds after
        the new workers served). grpcio has no call that closes a port alone, so each descriptor
        of its listener is pointed (dup2) at a stand-in socket: the listener itself closes,
        leaving the SO_REUSEPORT group and grpcio's poller, and `stop` later closes the
        stand-in where it would have closed the listener (tests/test_grpc_server.py)."""
        stand_in, peer = socket.socketpair()
        with stand_in, peer:
            for descriptor in listening_descriptors(self.port):
                os.dup2(stand_in.fileno(), descriptor)

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
        ]
    )
    servicer = InferenceServicer(dataplane)
    server.add_generic_rpc_handlers((generic_handler(servicer),))
    port = server.add_insecure_port(settings.grpc_bind)
    await server.start()
    keep_flushing()
    return GrpcServer(server, servicer, port)


def listening_descriptors(port: int) -> list[int]:
    """This process's descriptors of TCP sockets listening on `port` (Linux's /proc/self/fd;
    none elsewhere, where a stopping worker then accepts until grpcio's stop, as before)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return []
    found = []
    for name in names:
        descriptor = int(name)
        try:
            if not stat.S_ISSOCK(os.fstat(descriptor).st_mode):
                continue
            probe = socket.socket(fileno=os.dup(descriptor))
        except OSError:  # closed since the listing (the listing's own descriptor among them)
            continue
        with probe:
            if (
                probe.family in (socket.AF_INET, socket.AF_INET6)
                and probe.type == socket.SOCK_STREAM
                and probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                and probe.getsockname()[1] == port
            ):
                found.append(descriptor)
    return found

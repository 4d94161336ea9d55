"""Closing grpcio's listening socket alone, while its server goes on serving the calls in flight.

grpcio has no call that closes a port alone: it closes its listener only in `stop`, which must
wait for the calls in flight. So each descriptor of the listener is pointed (dup2) at a stand-in
socket: the listener itself closes, leaving the SO_REUSEPORT group and grpcio's poller, and
grpcio's `stop` later closes the stand-in where it would have closed the listener.

A listener that closes takes with it the connections the kernel has queued on it and grpcio has
not accepted yet: the kernel resets them (unless net.ipv4.tcp_migrate_req moves them to another
listener of the group), and their clients see UNAVAILABLE. grpcio accepts within a moment, so a
listener is closed at a moment its queue is empty, once one comes within ACCEPTED_SECONDS.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import struct
import time

ACCEPTED_SECONDS = 0.1
"""How long a listener that is to close waits for grpcio to accept what the kernel queued."""
POLL_SECONDS = 0.001


def check_unclaimed(bind: str) -> None:
    """Raises OSError if a process listens on `bind` (HOST:PORT) already. Every worker binds the
    gRPC port with SO_REUSEPORT, which shares it with any process doing the same: a second
    server on the same GRPC_BIND (two `make serve`, say) started without a word and got half of
    the first one's gRPC connections. A socket bound without SO_REUSEPORT is refused by any
    listener; the gunicorn master binds one for a moment before its workers start."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT connections
        try:
            probe.bind((host, int(port)))
        except OSError as error:
            raise OSError(f"GRPC_BIND={bind!r} is in use by another process: {error}") from None


async def close_listeners(port: int, accepted: float = ACCEPTED_SECONDS) -> None:
    """Closes this process's listeners on `port`, each once nothing is queued on it or after
    `accepted` seconds."""
    stand_in, peer = socket.socketpair()
    with stand_in, peer:
        for descriptor in listening_descriptors(port):
            deadline = time.monotonic() + accepted
            while queued(descriptor) and time.monotonic() < deadline:
                await asyncio.sleep(POLL_SECONDS)
            os.dup2(stand_in.fileno(), descriptor)  # in the same step as the look at its queue


def queued(descriptor: int) -> int:
    """Connections queued on the listener `descriptor` and not accepted yet: Linux's TCP_INFO
    gives a listener's accept queue as `tcpi_unacked` (0 where it cannot tell)."""
    try:
        with socket.socket(fileno=os.dup(descriptor)) as listener:
            info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32)
    except (OSError, AttributeError):  # AttributeError: no TCP_INFO on this platform
        return 0
    unacked: int = struct.unpack_from("I", info, 24)[0]
    return unacked


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

"""app.grpc.listeners: a listener closes alone, once nothing is queued on it; what is queued when
it closes anyway is reset. tests/test_grpc_server.py closes grpcio's listener in a real server."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from app.grpc.listeners import close_listeners, listening_descriptors, queued


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock


def connections(listener: socket.socket, count: int) -> list[socket.socket]:
    return [socket.create_connection(listener.getsockname(), timeout=5) for _ in range(count)]


def test_the_queue_counts_connections_not_accepted_yet(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    assert listening_descriptors(port) == [listener.fileno()]
    clients = connections(listener, 3)
    assert queued(listener.fileno()) == 3
    accepted, _ = listener.accept()
    assert queued(listener.fileno()) == 2
    for sock in [accepted, *clients]:
        sock.close()


def test_a_listener_closes_once_what_was_queued_is_accepted(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    clients = connections(listener, 2)

    async def close_while_accepting() -> list[socket.socket]:
        closing = asyncio.create_task(close_listeners(port, accepted=5))
        await asyncio.sleep(0.1)
        assert not closing.done()  # two connections queued
        accepted = [listener.accept()[0] for _ in clients]
        await asyncio.wait_for(closing, 1)
        return accepted

    accepted = asyncio.run(close_while_accepting())
    for client, server_side in zip(clients, accepted, strict=True):
        client.sendall(b"ping")
        assert server_side.recv(4) == b"ping"  # not reset
        client.close()
        server_side.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


def test_what_is_still_queued_after_the_wait_is_reset(listener: socket.socket) -> None:
    """Why close_listeners waits: the kernel resets the connections of a closed listener."""
    port = listener.getsockname()[1]
    (client,) = connections(listener, 1)
    started = time.monotonic()
    asyncio.run(close_listeners(port, accepted=0.2))
    assert 0.2 <= time.monotonic() - started < 1
    with client, pytest.raises(ConnectionResetError):
        client.recv(1)

"""app.server.acceptor: every waiting connection is taken in one turn (up to BURST), handed to the
protocol; closing stops accepting; an accept error is a log line, not an exception."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Iterator
from typing import ClassVar

import pytest

from app.server import acceptor
from app.server.acceptor import Acceptor


class Counting(asyncio.Protocol):
    made: ClassVar[list[asyncio.BaseTransport]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        Counting.made.append(transport)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.create_server(("127.0.0.1", 0), backlog=64)
    Counting.made = []
    yield sock
    sock.close()


def connect(listener: socket.socket, count: int) -> list[socket.socket]:
    """`count` connections the kernel has completed and queued, none accepted yet."""
    return [socket.create_connection(listener.getsockname()) for _ in range(count)]


async def turns(count: int = 5) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def accepting_by_hand(
    listener: socket.socket, waiting: int, counts: list[int], share: int = 1
) -> None:
    """`waiting` queued connections; one explicit `accept()` per entry of `counts`, each
    followed by the connections handed over so far."""
    clients: list[socket.socket] = []

    async def main() -> None:
        taker = Acceptor(asyncio.get_running_loop(), listener, Counting, share)
        taker.close()  # only the explicit calls below accept
        clients.extend(connect(listener, waiting))
        for expected in counts:
            taker.accept()
            await turns()
            assert len(Counting.made) == expected
        for transport in Counting.made:
            transport.close()

    asyncio.run(main())
    for client in clients:
        client.close()


def test_one_turn_accepts_every_waiting_connection(listener: socket.socket) -> None:
    accepting_by_hand(listener, 20, [20])


def test_the_kernel_says_how_many_connections_wait(listener: socket.socket) -> None:
    clients = connect(listener, 7)
    assert acceptor.waiting(listener) == 7
    for client in clients:
        client.close()


def test_a_turn_takes_its_share_of_the_queue(listener: socket.socket) -> None:
    # 20 waiting, share 4: a quarter of what waits, rounded up, each turn (5, then 4 of 15, 3 of 11)
    accepting_by_hand(listener, 20, [5, 9, 12], share=4)


def test_a_turn_accepts_at_most_a_burst(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acceptor, "BURST", 3)
    accepting_by_hand(listener, 5, [3, 5])


def test_the_loop_accepts_while_watching_and_not_after_close(listener: socket.socket) -> None:
    async def main() -> None:
        taker = Acceptor(asyncio.get_running_loop(), listener, Counting)
        first = connect(listener, 2)
        for _ in range(50):
            if len(Counting.made) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(Counting.made) == 2
        taker.close()
        await taker.wait_closed()
        later = connect(listener, 1)
        await asyncio.sleep(0.1)
        assert len(Counting.made) == 2  # queued in the kernel, not taken
        for transport in Counting.made:
            transport.close()
        for client in first + later:
            client.close()

    asyncio.run(main())


class Exhausted:
    """A listener whose accept() fails as a process out of descriptors does."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real

    def fileno(self) -> int:
        return self.real.fileno()

    def setblocking(self, flag: bool) -> None:
        self.real.setblocking(flag)

    def accept(self) -> tuple[socket.socket, object]:
        raise OSError(errno.EMFILE, "Too many open files")


def test_an_accept_error_is_one_log_line_a_pause_then_accepting_again(
    listener: socket.socket, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acceptor, "PAUSE", 0.3)
    client = connect(listener, 1)  # keeps the listener readable: every turn would retry

    async def main() -> None:
        taker = Acceptor(asyncio.get_running_loop(), Exhausted(listener), Counting)  # type: ignore[arg-type]
        with caplog.at_level(logging.ERROR, logger="app"):
            await asyncio.sleep(0.2)
        errors = [r for r in caplog.records if "cannot accept a connection" in r.getMessage()]
        assert len(errors) == 1  # paused, not spinning on the readable listener
        assert Counting.made == []
        taker.listener = listener  # the descriptors are back
        for _ in range(100):
            if Counting.made:
                break
            await asyncio.sleep(0.01)
        assert len(Counting.made) == 1  # accepting resumed after the pause
        taker.close()
        Counting.made[0].close()

    asyncio.run(main())
    client[0].close()


def test_close_during_a_pause_keeps_the_acceptor_closed(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acceptor, "PAUSE", 0.05)
    client = connect(listener, 1)

    async def main() -> None:
        taker = Acceptor(asyncio.get_running_loop(), Exhausted(listener), Counting)  # type: ignore[arg-type]
        await turns()
        taker.close()
        taker.listener = listener
        await asyncio.sleep(0.2)
        assert Counting.made == []  # the pause's end did not start watching again

    asyncio.run(main())
    client[0].close()


def test_closing_takes_the_connections_queued_at_that_moment(listener: socket.socket) -> None:
    """The last process to close a listener makes the kernel reset what is still queued."""
    clients = connect(listener, 4)

    async def main() -> None:
        taker = Acceptor(asyncio.get_running_loop(), listener, Counting)
        taker.close()  # before the loop ran its reader once
        await turns()
        assert len(Counting.made) == 4
        for transport in Counting.made:
            transport.close()

    asyncio.run(main())
    for client in clients:
        client.close()


def test_closing_takes_every_queued_connection_even_past_a_burst(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn takes at most BURST; the last one, at close, must not leave the rest to be reset
    (a SIGTERM while a 1,024-connection load reconnects can queue more than BURST)."""
    monkeypatch.setattr(acceptor, "BURST", 3)
    clients = connect(listener, 7)

    async def main() -> None:
        taker = Acceptor(asyncio.get_running_loop(), listener, Counting)
        taker.close()
        await turns()
        assert len(Counting.made) == 7
        assert acceptor.waiting(listener) == 0
        for transport in Counting.made:
            transport.close()

    asyncio.run(main())
    for client in clients:
        client.close()

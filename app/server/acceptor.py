"""Accepting every waiting connection each event-loop turn, instead of uvloop's one.

libuv (under uvloop) accepts one connection per event-loop turn since 1.45 (libuv PR #3696,
"don't accept() connections in a loop"; uvloop 0.23 bundles 1.52). A turn of a worker serving
hundreds of connections takes 100-300 ms on this machine, so at 1,024 connections opened at
once 200-400 of them waited seconds in the kernel's accept queue, draining at about 30 a second
(`ss`, strace: one accept4 per epoll_pwait): their first requests were wrk's 2-s timeouts,
with and without the in-flight bound (reports/reliability.md §10). `Acceptor` watches a
listening socket with `add_reader` and hands up to `BURST` connections a turn to the event loop
(`connect_accepted_socket`: uvloop's own TCP transport, TCP_NODELAY set), as asyncio's own
loop does. app.server.worker puts one in uvicorn's place for each of gunicorn's sockets; it has the
two methods uvicorn's shutdown calls on a server.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
from collections.abc import Callable

BURST = 128
"""Connections accepted per turn at most: a worker takes its share of a burst of connects in a
few turns, and a loop serving requests is not held up by accepting alone."""
_RETRY = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ECONNABORTED}
PAUSE = 1.0
"""Seconds without accepting after any other error (EMFILE and the like), as asyncio's own
loop does: the waiting connection keeps the listener readable, so accepting again at once would
spin the loop and write the same log line every turn."""
logger = logging.getLogger("app")
_TCPI_UNACKED = 24
"""Offset of `tcpi_unacked` in Linux's `struct tcp_info`: on a listening socket, the number of
connections waiting in its accept queue."""


def waiting(listener: socket.socket) -> int | None:
    """Connections queued on `listener` (Linux TCP), or None where the kernel cannot say."""
    try:
        info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except (AttributeError, OSError):  # no TCP_INFO (not Linux), or not a TCP socket
        return None
    return int(struct.unpack_from("I", info, _TCPI_UNACKED)[0])


class Acceptor:
    """Takes, each turn, a share of the queue: `1/share` of the connections waiting (at least
    one, at most BURST). The workers share one listener and all wake when it is readable; one
    that took the whole queue would get every connection of a pool opened at once (measured: 61
    of 64 wrk connections on one worker, 64 of 64 in one run, where uvloop's one-a-turn split them
    about evenly), while one a turn leaves a long queue waiting seconds. With `share` twice the
    workers, each wakeup of each worker takes a small slice and the slices alternate."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listener: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
        share: int = 1,
    ) -> None:
        self.loop = loop
        self.share = share
        self.listener = listener
        self.protocol_factory = protocol_factory
        self._fd = listener.fileno()
        self._connecting: set[asyncio.Task[object]] = set()
        self._closed = False
        self._resume: asyncio.TimerHandle | None = None
        listener.setblocking(False)
        loop.add_reader(self._fd, self.accept)

    def accept(self, every: bool = False) -> None:
        """A turn's share of the queue; `every` (at close): all of it, even past BURST."""
        queued = waiting(self.listener)
        if queued is None:
            take = BURST
        elif every:
            take = max(BURST, queued)
        else:
            take = min(BURST, max(1, -(-queued // self.share)))
        for _ in range(take):
            try:
                connection, _ = self.listener.accept()
            except OSError as error:
                if error.errno not in _RETRY:  # EMFILE and the like
                    logger.error(
                        "cannot accept a connection: %s; accepting again in %s s", error, PAUSE
                    )
                    self._pause()
                return
            task = self.loop.create_task(
                self.loop.connect_accepted_socket(self.protocol_factory, connection)
            )
            self._connecting.add(task)  # held until connected: the loop keeps weak references
            task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[object]) -> None:
        self._connecting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("accepted connection lost at once: %s", task.exception())

    def _pause(self) -> None:
        self.loop.remove_reader(self._fd)
        self._resume = self.loop.call_later(PAUSE, self._watch)

    def _watch(self) -> None:
        self._resume = None
        if not self._closed:
            self.loop.add_reader(self._fd, self.accept)

    def close(self) -> None:
        """Stops accepting, after taking all the connections queued now, past BURST too (they
        drain like the others): once the last process holding the listener closes it, the
        kernel resets every connection still queued, requests sent on them included (SIGTERM).
        The listening socket itself is gunicorn's (uvicorn closes it)."""
        if not self._closed and self._resume is None:
            self.accept(every=True)  # an error here pauses: the timer is cancelled below
        self._closed = True
        if self._resume is not None:
            self._resume.cancel()
        self.loop.remove_reader(self._fd)

    async def wait_closed(self) -> None:
        """Nothing to wait for: the connections are uvicorn's to drain."""

"""A response's head and body in one write: one send, one packet, where uvicorn makes two.

uvicorn's cycle (`RequestResponseCycle.send`) writes the status line and headers to the
transport as soon as the app starts its response, and the body with a second write when the
app sends it; on loopback each write is a send syscall the kernel charges to the worker
(py-spy under wrk: 44 % of a worker's samples in that `send`, the no-op's requests too). The
guarded protocol (app.server.protocol) hands each cycle this transport instead of its own: the head
of a response with a Content-Length and a body to come is held, and written with the body's
first bytes. Every other write passes at once, in order: a `100 Continue`, the head of a
chunked response, of a HEAD request's answer or of one with no body (Content-Length 0, as a
204 or a 304), and the chunks that follow. A head still held when the cycle closes the
connection (the app failed or stopped halfway) is written first, as uvicorn would have; a
connection already lost drops it, as uvicorn's writes are.

A write once the connection is closing is dropped, as uvicorn drops the writes of a cycle it
knows is disconnected. It does not always know: uvicorn (0.55) marks only the last cycle of a
connection disconnected when the connection is lost, so a request still being answered with a
pipelined one queued behind it writes on a closed transport when the connection ends under it
(uvicorn's 400 for bytes that follow, the client's half-close), and uvloop raises there: an
"Exception in ASGI application" traceback a request, which any client could send in a loop
(found by a raw-socket fuzz, 2026-12-04; stock uvicorn on uvloop does the same).

A close, the cycle's or the protocol's after its own answer, is staged (`LINGER`): the sending
side at once, the whole connection once the client has closed its side or `LINGER` s later (the
protocol's once-a-second sweep: a timer for each connection cost clients that make a connection
per request 7 % and 14 % of their requests/s at 16 and 64 connections, medians of 4 alternating
rounds, where the sweep's cost was within the noise), or, on a stop, once the drain's budget is
spent (app.server.protocol's `_drain_linger`); the connection is closing from the first stage on,
so nothing more is written or parsed on it.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

LINGER = 2.0
"""Seconds a connection is still read after the answer that closes it, what comes dropped, unless
its client closes first (RFC 9112 §9.6's staged close; up to a second more: the sweep closes
it). Closed at once, bytes the client sent after its request (the rest of a body answered early,
as a `413`; a stray CRLF after a POST body) made the kernel reset the connection, and the
client lost the answer it had not read yet: 165 of 200 `Connection: close` uploads over
MAX_BODY_BYTES read a reset instead of their `413`, and 230 of 2,000 requests followed by a CRLF
1 ms later (reports/reliability.md §28)."""


class CoalescingTransport(asyncio.Transport):
    """One per connection, wrapping its transport; `serve` gives it each cycle in turn."""

    __slots__ = ("_awaiting_head", "_closed", "_cycle", "_head", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__()
        self._transport = transport
        self._cycle: RequestResponseCycle | None = None
        self._head = b""
        """The held head ("" when none)."""
        self._awaiting_head = False
        """Whether the current cycle's head is yet to be written."""
        self._closed = False
        """Whether `close` has begun (the sending side closed, the rest within `LINGER` s)."""

    def serve(self, cycle: RequestResponseCycle) -> None:
        """`cycle`, about to run, writes through this transport. A connection runs its cycles
        one at a time (uvicorn queues pipelined ones until the previous response is complete,
        and a complete response has no head held)."""
        self._cycle, self._head, self._awaiting_head = cycle, b"", True
        cycle.transport = self

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.is_closing():  # closed under a running cycle: see the module's doc
            self._head = b""
            return
        if self._head:
            head, self._head = self._head, b""
            self._transport.write(head + data)
            return
        cycle = self._cycle
        if self._awaiting_head and cycle is not None and cycle.response_started:
            # uvicorn's cycle writes the head once the response has started, having read the
            # Content-Length (or chunked encoding) from the headers it writes
            self._awaiting_head = False
            if (
                cycle.chunked_encoding is False
                and cycle.expected_content_length > 0
                and cycle.scope["method"] != "HEAD"
            ):
                self._head = bytes(data)
                return
        self._transport.write(data)

    def close(self) -> None:
        """A held head written first; then closed in stages (`LINGER`), or at once where the
        transport cannot half-close (TLS's)."""
        if self.is_closing():
            self._head = b""
            return
        transport, self._closed = self._transport, True
        if self._head:
            transport.write(self._head)
            self._head = b""
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()  # the rest: app.server.protocol's sweep, once LINGER s have passed

    def is_closing(self) -> bool:
        return self._closed or self._transport.is_closing()

"""The body of a request whose `Upgrade` is ignored, which uvicorn's httptools protocol loses.

Clients offer to turn a cleartext HTTP/1.1 connection into HTTP/2 with `Connection: Upgrade` and
`Upgrade: h2c`: `curl --http2`, Java's HttpClient (HTTP/2 by default) and Spring's RestClient do
so on a POST too. RFC 9110 §7.8 lets a server ignore the offer and answer in HTTP/1.1, as uvicorn
means to, but httptools stops at the end of such a request's head, taking everything after it
for the new protocol: the app read an empty body (every such `/predict` was a `400 the request
body is empty`), the body's bytes were dropped, and nothing more on the connection was parsed
(uvicorn#2722 and httptools#124, open for uvicorn 0.55 and httptools 0.9). The guarded protocol
(app.server.protocol) hands what follows such a head to a fresh httptools parser, first fed a
made-up head of the request's framing fields alone (`framing_head`), whose callbacks are dropped
(`AfterIgnoredUpgrade`): the body is framed by the same parser, with the same rules, as every
other request's, and the requests after it are parsed on. Framed by h11 before, such a body was
read more leniently than any other: a chunk size with trailing whitespace, any byte in a chunk
extension, a trailer section ended by bare LFs (reports/reliability.md §26).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

FRAMING = (b"content-length", b"transfer-encoding")
"""The headers that say where a request body ends."""


class Callbacks(Protocol):
    """The parser callbacks of uvicorn's protocol (app.server.protocol's)."""

    def on_message_begin(self) -> None: ...
    def on_url(self, url: bytes) -> None: ...
    def on_header(self, name: bytes, value: bytes) -> None: ...
    def on_headers_complete(self) -> None: ...
    def on_body(self, body: bytes) -> None: ...
    def on_message_complete(self) -> None: ...
    def on_chunk_header(self) -> None: ...


def framing_head(headers: Iterable[tuple[bytes, bytes]], keep_alive: bool) -> bytes:
    """A request head with the framing fields of `headers` (lower-case names, as uvicorn keeps
    them) alone, and `Connection: close` unless `keep_alive`: after a closing request's body
    nothing more is parsed, as after any other."""
    framing = b"".join(name + b": " + value + b"\r\n" for name, value in headers
                       if name in FRAMING)  # fmt: skip
    closing = b"" if keep_alive else b"Connection: close\r\n"
    return b"POST / HTTP/1.1\r\nHost: _\r\n" + closing + framing + b"\r\n"


class AfterIgnoredUpgrade:
    """The callbacks of the parser that reads on after an ignored `Upgrade`: those of the
    made-up head it is fed first are dropped (its request is made already); from its body on,
    each is `protocol`'s."""

    __slots__ = ("_head", "_protocol")

    def __init__(self, protocol: Callbacks) -> None:
        self._protocol = protocol
        self._head = True

    def on_message_begin(self) -> None:
        if not self._head:
            self._protocol.on_message_begin()

    def on_url(self, url: bytes) -> None:
        if not self._head:
            self._protocol.on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._head:
            self._protocol.on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._head:
            self._head = False
        else:
            self._protocol.on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._protocol.on_body(body)

    def on_message_complete(self) -> None:
        self._protocol.on_message_complete()

    def on_chunk_header(self) -> None:
        self._protocol.on_chunk_header()

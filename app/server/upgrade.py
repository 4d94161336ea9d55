"""The body of a request whose `Upgrade` is ignored, which uvicorn's httptools protocol loses.

Clients offer to turn a cleartext HTTP/1.1 connection into HTTP/2 with `Connection: Upgrade` and
`Upgrade: h2c`: `curl --http2`, Java's HttpClient (HTTP/2 by default) and Spring's RestClient do
so on a POST too. RFC 9110 §7.8 lets a server ignore the offer and answer in HTTP/1.1, as uvicorn
means to, but httptools stops at the end of such a request's head, taking everything after it
for the new protocol: the app read an empty body (every such `/predict` was a `400 the request
body is empty`), the body's bytes were dropped, and nothing more on the connection was parsed
(uvicorn#2722 and httptools#124, open for uvicorn 0.55 and httptools 0.9). The guarded protocol
(app.server.protocol) hands what follows such a head to an `IgnoredUpgradeBody`, which frames
the body with h11 (uvicorn's own dependency, pure Python: the path is rare, and h11 checks a
chunked body as carefully as httptools would), and then parses on with a fresh httptools
parser.
"""

from __future__ import annotations

from collections.abc import Iterable

import h11

FRAMING = (b"content-length", b"transfer-encoding")
"""The headers that say where a request body ends."""


class IgnoredUpgradeBody:
    """One request body, framed as the request's `headers` say (none of them: no body)."""

    __slots__ = ("_parser",)

    def __init__(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        framing = b"".join(name + b": " + value + b"\r\n" for name, value in headers
                           if name.lower() in FRAMING)  # fmt: skip
        self._parser = h11.Connection(h11.SERVER)
        self._parser.receive_data(b"POST / HTTP/1.1\r\nhost: _\r\n" + framing + b"\r\n")
        self._parser.next_event()  # the request's head, already parsed by httptools

    def feed(self, data: bytes) -> tuple[list[bytes], bytes | None]:
        """The body's pieces in `data`, and, once the body is complete, the bytes that follow it
        (None while more is to come). Raises h11.RemoteProtocolError if the body is malformed."""
        self._parser.receive_data(data)
        pieces: list[bytes] = []
        while True:
            event = self._parser.next_event()
            if event is h11.NEED_DATA:
                return pieces, None
            if isinstance(event, h11.Data):
                pieces.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return pieces, self._parser.trailing_data[0]

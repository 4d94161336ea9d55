"""The HTTP edge: bounded body reading, JSON responses, and the one place errors become JSON."""

from __future__ import annotations

import gc
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.errors import (
    BadRequest,
    ClientClosedRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    UnsupportedMediaType,
    loggable,
    quoted,
    shown,
)

JSON_TYPE = "application/json"
logger = logging.getLogger("app")


class JSONResponse(Response):
    """orjson-encoded, numpy arrays included (no per-element Python conversion)."""

    media_type = JSON_TYPE

    def render(self, content: Any) -> bytes:
        return dumps(content)


def dumps(content: Any) -> bytes:
    """JSON bytes, numpy arrays included."""
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


async def read_body(scope: Scope, receive: Receive, max_bytes: int) -> bytes:
    """The whole body, refused as soon as it is known to exceed `max_bytes`: from the
    Content-Length header before reading anything, or while streaming a chunked body; a
    compressed one (Content-Encoding, or a Transfer-Encoding other than chunked) is a 415, since
    nothing here decompresses it."""
    _, declared, encoding, transfer = _content_headers(scope)
    if encoding or transfer:
        _refuse_encoded(encoding, transfer)
    return await _read_body(receive, declared, max_bytes)


async def read_json_body(scope: Scope, receive: Receive, max_bytes: int) -> bytes:
    """The body of a request that says it is JSON (415 otherwise), not yet parsed: the caller
    decodes it straight into its own types."""
    content_type, declared, encoding, transfer = _content_headers(scope)
    media_type, _, parameters = content_type.partition(b";")
    if media_type.strip().lower() != b"application/json":
        received = shown(content_type.decode("latin-1")) or None
        raise UnsupportedMediaType(f"Content-Type must be {JSON_TYPE}", received=received)
    if parameters:  # rare: the usual request pays for no decoding
        refuse_charset(parameters.decode("latin-1"))
    if encoding or transfer:  # rare: the usual request pays for no call
        _refuse_encoded(encoding, transfer)
    return await _read_body(receive, declared, max_bytes)


async def send_json(
    send: Send, content: Any, status: int = 200, extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """A JSON answer straight to ASGI `send`, for the routes that skip Starlette's Response."""
    await send_json_body(send, dumps(content), status, extra)


async def send_json_body(
    send: Send, body: bytes, status: int = 200, extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """`send_json` of a body already serialised."""
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_body(send: Send, body: bytes, headers: Mapping[str, str]) -> None:
    """A 200 of a body already serialised, with its headers (lowercase names) and its length: the
    OIP route's JSON or binary-extension answer (app.rest.inference_protocol.encode_response)."""
    raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    raw.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": 200, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _content_headers(scope: Scope) -> tuple[bytes, bytes, bytes, bytes]:
    """The raw Content-Type (a 400 if sent twice, differently) and Content-Length (the first;
    b"" when absent), and every Content-Encoding and every Transfer-Encoding joined, in one
    scan: ASGI servers lowercase the names, so a plain scan finds them faster than building
    Starlette's case-insensitive Headers."""
    content_type: bytes | None = None
    length: bytes | None = None
    encoding = transfer = b""
    for key, value in scope["headers"]:
        if key == b"content-type":
            if content_type is None:
                content_type = bytes(value)
            elif value != content_type:
                raise BadRequest(twice("Content-Type", content_type, value))
        elif key == b"content-length":
            if length is None:
                length = bytes(value)
        elif key == b"content-encoding":
            encoding += b"," + bytes(value)
        elif key == b"transfer-encoding":
            transfer += b"," + bytes(value)
    return content_type or b"", length or b"", encoding, transfer


def request_content_type(scope: Scope) -> str:
    """The request's Content-Type ("" when absent), a 400 if sent twice differently: the check
    of `read_body`'s own scan, for a route that judges the media type before the body."""
    return _content_headers(scope)[0].decode("latin-1")


def single(headers: Headers, name: str) -> str | None:
    """A field that may come once, as `Headers.get` reads it, or a 400 if it came twice with
    different values: the first was read, whatever the second said."""
    values = headers.getlist(name)
    for value in values[1:]:
        if value != values[0]:
            raise BadRequest(twice(name.title(), values[0], value))
    return values[0] if values else None


def twice(name: str, first: bytes | str, second: bytes | str) -> str:
    shown_values = [
        quoted(value.decode("latin-1") if isinstance(value, bytes) else value)
        for value in (first, second)
    ]
    return f"{name} is sent twice, {shown_values[0]} and {shown_values[1]}: send it once"


def refuse_charset(parameters: str) -> None:
    """A 415 naming a JSON body's charset other than UTF-8 (RFC 8259: JSON is UTF-8): read as
    UTF-8, a Latin-1 body was called malformed JSON at a position that has nothing wrong."""
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
            raise UnsupportedMediaType(
                f"charset {quoted(value.strip())} is not supported: send the JSON body in UTF-8",
                received=shown(value.strip()),
            )


def _refuse_encoded(encoding: bytes, transfer: bytes) -> None:
    """A 415 naming the coding of a compressed body: read as JSON it would only be called
    malformed. A Content-Encoding of `identity` (no coding) passes, and so does the chunked
    transfer coding, which the server undoes (a `gzip` before it, which it does not, is
    refused)."""
    for header, coded, passes in (
        ("Content-Encoding", encoding, b"identity"),
        ("Transfer-Encoding", transfer, b"chunked"),
    ):
        codings = [c.strip().lower() for c in coded.split(b",") if c.strip()]
        if any(coding != passes for coding in codings):
            received = shown(b", ".join(codings).decode("latin-1"))
            raise UnsupportedMediaType(
                f"{header} {received!r} is not supported: send the body uncompressed",
                received=received,
            )


def decimal(text: str) -> int | None:
    """A header's non-negative decimal number, None if it is not one. Any number of leading
    zeros is a number (the HTTP parser takes a Content-Length of 5,000 zeros), which `int()`
    refuses past 4,300 digits; a value past 20 digits is capped there, larger than any body."""
    if not (text.isascii() and text.isdigit()):  # isascii: "²".isdigit() holds too
        return None
    digits = text.lstrip("0")
    return int(digits or 0) if len(digits) <= 20 else 10**20


async def _read_body(receive: Receive, declared: bytes, max_bytes: int) -> bytes:
    length = decimal(declared.decode("latin-1"))
    if length is not None and length > max_bytes:
        raise _too_large(max_bytes)
    # Straight from ASGI receive rather than request.stream(): an async generator per request
    # costs more than parsing the flight, and the whole body usually comes in one message.
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientClosedRequest("client closed the request before its body arrived")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        if not message.get("more_body", False):
            return b"".join((*chunks, chunk)) if chunks else chunk
        chunks.append(chunk)


def parse_json(body: bytes) -> Any:
    """The body's JSON, parsed with the cyclic garbage collector paused. orjson's parse is one C
    call that keeps the GIL, so the event loop waits for it wherever it runs (the batch thread
    included), and the collections its allocations set off ran inside it: half of the 36 ms a
    1-MiB body of one-integer rows (`[[0],[0],...]`, 262,000 lists) took, in 373 collections.
    Paused, they are one collection after it (about 8 ms), and the parse's own hold is halved.
    Only a caller that found the collector on turns it back on (the batch thread and the loop
    may both be here)."""
    if not body:
        raise BadRequest("the request body is empty: send a JSON object")
    collecting = gc.isenabled()
    gc.disable()
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise BadRequest(_not_utf8(body) or f"malformed JSON: {error}") from None
    finally:
        if collecting:
            gc.enable()


def _not_utf8(body: bytes) -> str | None:
    """Where a body orjson refused is not UTF-8, if it is not: orjson says of any such body
    'str is not valid UTF-8: surrogates not allowed: line 1 column 1 (char 0)', a position
    with nothing wrong and surrogates that are not there (a Latin-1 'é' sent undeclared)."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as error:
        return (
            f"the body is not UTF-8: byte {body[error.start]:#04x} at offset {error.start} "
            "(JSON is UTF-8)"
        )
    return None


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body over the {max_bytes:,}-byte limit", limit=max_bytes)


async def service_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ServiceError)
    return JSONResponse(error.to_json(), status_code=error.status_code)


async def http_error(request: Request, error: Exception) -> Response:
    """Starlette's own 404/405 (no route, wrong method), in our JSON shape."""
    assert isinstance(error, HTTPException)
    mapped: ServiceError
    if error.status_code == 404:
        mapped = NotFound(f"no route for {request.method} {shown(request.url.path)}")
    elif error.status_code == 405:
        mapped = MethodNotAllowed(f"{request.method} is not allowed on {shown(request.url.path)}")
    else:
        mapped = ServiceError(str(error.detail))
        mapped.status_code = error.status_code
    return JSONResponse(mapped.to_json(), status_code=mapped.status_code, headers=error.headers)


async def unexpected_error(request: Request, error: Exception) -> Response:
    """A bug, not a client error: logged with its traceback, answered without one."""
    logger.exception("unhandled error on %s %s", request.method, loggable(request.url.path))
    return JSONResponse({"error": "internal error"}, status_code=500)


EXCEPTION_HANDLERS = {
    ServiceError: service_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}


async def send_error(scope: Scope, receive: Receive, send: Send, error: Exception) -> None:
    """`error`, raised before its response started, answered as Starlette's error middleware
    answers it, for a route served ahead of that middleware (app.rest.routes.PredictFirst): by the
    handler its class maps to in EXCEPTION_HANDLERS; an unexpected error (a 500) is then raised
    again for the server to log, as Starlette's ServerErrorMiddleware does."""
    # the most specific class mapped: Exception, in every exception's MRO, at worst
    handler = next(EXCEPTION_HANDLERS[c] for c in type(error).__mro__ if c in EXCEPTION_HANDLERS)
    response = await handler(Request(scope, receive), error)
    await response(scope, receive, send)
    if handler is unexpected_error:
        raise error

"""Request IDs and W3C trace context: one ID per request, in the `X-Request-ID` response header
and in every log line, and the caller's trace ID when it sent a valid `traceparent`.

An incoming `X-Request-ID` is kept when it is sane (1-128 characters of `A-Z a-z 0-9 . _ : + / = -`)
so that a caller's or a load balancer's ID follows the request through; anything else is
replaced by a generated one. Of several, the first is the one judged (`caller_id`), on every
answer: the app's, the HTTP layer's own and shed ones (app.server.protocol), gRPC's metadata
(app.grpc.calls). A generated ID is this process's random prefix plus a counter:
unique across workers and restarts, and about ten times cheaper than a uuid4.

A `traceparent` (https://www.w3.org/TR/trace-context/) is checked to the letter of the
specification (`trace_id`); a valid one is echoed in the response and its trace ID tags the
log lines; an invalid one, or two of them, is ignored as the specification asks: never a 4xx.

The IDs live in context variables, so any log record made while the request is handled,
including uvicorn's own "Exception in ASGI application", carries them as `%(request_id)s` and
`%(trace_id)s` (`install_log_context`, called by app.server.worker).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Awaitable, Iterable
from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
TRACEPARENT = b"traceparent"
NO_REQUEST = "-"
"""What log lines made outside any request show."""
MAX_LENGTH = 128

REQUEST_ID: ContextVar[bytes] = ContextVar("request_id", default=b"")
TRACE_ID: ContextVar[bytes] = ContextVar("trace_id", default=b"")
_SANE = re.compile(rb"[A-Za-z0-9._:+/=-]{1,%d}" % MAX_LENGTH)
_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(-.*)?", re.S)
_ZERO_TRACE, _ZERO_PARENT = b"0" * 32, b"0" * 16
_prefix = b""
_counter = itertools.count()


def _reseed() -> None:
    """A new random prefix: at import and in every forked child, so no two workers share one."""
    global _prefix, _counter
    _prefix = os.urandom(6).hex().encode("ascii") + b"-"
    _counter = itertools.count(1)


_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_id() -> bytes:
    return _prefix + b"%x" % next(_counter)


def accepted(value: bytes) -> bool:
    return _SANE.fullmatch(value) is not None


def judged(value: bytes) -> bytes:
    """The caller's ID if it is sane, else a new one. A proxy may join repeated headers into one
    field (`abc,def`, as RFC 9110 §5.3 allows; API Gateway does): its first element is the first
    ID sent, judged in turn. Spaces and tabs around it are no part of it (RFC 9110 §5.5, §5.6.1):
    HTTP/1.1's parser drops them before the app sees the field, but gRPC's metadata keeps them
    (`abc-1 ` was a generated ID there, `abc-1` over REST)."""
    if accepted(value):
        return value
    first = value.partition(b",")[0].strip(b" \t")
    return first if accepted(first) else new_id()


def caller_id(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The first X-Request-ID the caller sent, if it is sane, else a new one."""
    for name, value in headers:
        if name == HEADER:
            return judged(bytes(value))
    return new_id()


def caller_traceparent(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The caller's `traceparent` if it sent one, once, and valid, as the middleware echoes it;
    else None (two are ignored, as one bad). For the answers of the HTTP layer, made without the
    middleware (app.server.protocol)."""
    found: bytes | None = None
    for name, value in headers:
        if name == TRACEPARENT:
            if found is not None:
                return None
            found = bytes(value)
    return found if found is not None and trace_id(found) else None


def trace_id(traceparent: bytes) -> bytes:
    """The trace ID of a valid `traceparent`, else b"": lowercase hex only; version `ff` is
    invalid; version `00` has exactly four fields; a later version may append fields after a
    `-`; an all-zero trace ID or parent ID is invalid."""
    match = _TRACEPARENT.fullmatch(traceparent)
    if match is None:
        return b""
    version, trace, parent, rest = match.groups()
    if version == b"ff" or (version == b"00" and rest is not None):
        return b""
    if trace == _ZERO_TRACE or parent == _ZERO_PARENT:
        return b""
    return bytes(trace)


class RequestIdMiddleware:
    """Pure ASGI, outermost (app.main puts it outside Starlette's error middleware, so that a
    500 carries the ID too).

    Neither `__call__` nor the send wrapper is a coroutine function: each returns the awaitable
    of the layer below, which saves a coroutine frame per call (three per request), about half
    of what this middleware costs (benchmarks/edge_overhead.py).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        request_id: bytes | None = None
        traceparent: bytes | None = None
        several = False
        for name, value in scope["headers"]:  # one pass for both: caller_id's rule, inlined
            if name == HEADER:
                if request_id is None:
                    request_id = bytes(value)
            elif name == TRACEPARENT:
                several = traceparent is not None
                traceparent = bytes(value)
        request_id = new_id() if request_id is None else judged(request_id)
        REQUEST_ID.set(request_id)  # each request runs in its own task: no reset needed
        header = (HEADER, request_id)
        echo = None
        if traceparent is not None and not several:  # two traceparents: ignored, as one bad
            trace = trace_id(traceparent)
            if trace:
                TRACE_ID.set(trace)
                echo = (TRACEPARENT, traceparent)

        def send_with_id(message: Message) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                # Copies, never an append: a response may reuse one prebuilt message or list.
                # (copy + list + append: half the cost of {**message, "headers": [...]})
                message = dict(message)
                headers = list(message.get("headers", ()))
                headers.append(header)
                if echo is not None:
                    headers.append(echo)
                message["headers"] = headers
            return send(message)

        return self.app(scope, receive, send_with_id)


def current() -> str:
    """The request ID of the request being handled, or NO_REQUEST."""
    return REQUEST_ID.get().decode("ascii") or NO_REQUEST


def current_trace() -> str | None:
    """The caller's trace ID for the request being handled, if it sent a valid traceparent."""
    return TRACE_ID.get().decode("ascii") or None


class RequestIdFormatter(logging.Formatter):
    """A formatter that may use `%(request_id)s` on any record: one made before
    `install_log_context`, or by a logger outside it, gets the current ID as it is formatted."""

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = current()
            record.trace_id = current_trace()
        return super().format(record)


def install_log_context() -> None:
    """Gives every log record `request_id` and `trace_id` attributes (idempotent)."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "adds_request_id", False):
        return

    def record_with_request_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        record.request_id = current()
        record.trace_id = current_trace()
        return record

    record_with_request_id.adds_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(record_with_request_id)

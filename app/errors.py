"""One error hierarchy for everything a client can get wrong.

Each subclass carries its HTTP status; `app.rest.http.service_error` is the single place
that turns one into JSON, so no route formats an error by hand.
"""

from __future__ import annotations

from typing import Any

SHOWN_CHARS = 80
"""At most this many characters of a client's string are quoted back in an error."""
SHOWN_ITEMS = 8
"""A list of at most this many scalars is quoted item by item (a shape, say); longer or nested
lists only by their size."""


def shown(value: Any) -> Any:
    """A client's value as an error may quote it: short and flat.

    Scalars as they are (strings cut to SHOWN_CHARS), a short list of scalars item by item; any
    other list or object only by its kind and size, never walked: a value nested hundreds of levels
    deep would otherwise overflow orjson's recursion limit on the way out (a 500), and a megabyte
    string would be echoed whole.
    """
    if value is None or type(value) in (bool, int, float):
        return value
    if isinstance(value, str):
        return value if len(value) <= SHOWN_CHARS else value[:SHOWN_CHARS] + "…"
    if isinstance(value, list):
        if len(value) <= SHOWN_ITEMS and not any(isinstance(item, list | dict) for item in value):
            return [shown(item) for item in value]
        return f"<a list of {len(value)} item{'' if len(value) == 1 else 's'}>"
    if isinstance(value, dict):
        return f"<an object of {len(value)} field{'' if len(value) == 1 else 's'}>"
    return f"<{type(value).__name__}>"


def quoted(value: Any) -> str:
    """`shown(value)` for a message: a string's repr, a container's summary as it is."""
    flat = shown(value)
    return flat if isinstance(flat, str) and isinstance(value, list | dict) else repr(flat)


LOGGED_PATH_CHARS = 200
"""The most of a request's path a log line holds (the parser takes paths of up to 16 KiB)."""


def loggable(path: str) -> str:
    """A client's path as a log line may hold it: cut to LOGGED_PATH_CHARS, and on one line.
    Decoded, `%0a` is a line feed: `/health%0a[2026-…] [INFO] GET /admin 200` wrote a forged
    access line into the text log."""
    if len(path) > LOGGED_PATH_CHARS:
        path = path[:LOGGED_PATH_CHARS] + "…"
    return path if path.isprintable() else path.encode("unicode_escape").decode("ascii")


class ServiceError(Exception):
    """A failure the client should see, with a status code and a JSON-able detail."""

    status_code = 500

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message}
        if self.detail:
            body["detail"] = self.detail
        return body


class BadRequest(ServiceError):
    status_code = 400


class InvalidFlight(BadRequest):
    """A flight field is missing, of the wrong type or outside what the model knows."""

    def __init__(
        self, index: int, field: str, problem: str, value: Any = None, allowed: Any = None
    ) -> None:
        detail: dict[str, Any] = {"index": index, "field": shown(field), "value": shown(value)}
        if allowed is not None:
            detail["allowed"] = allowed
        super().__init__(f"flights[{index}].{detail['field']}: {problem}", **detail)


class NotFound(ServiceError):
    status_code = 404


class MethodNotAllowed(ServiceError):
    status_code = 405


class RequestTimeout(ServiceError):
    """The request did not arrive in full in time (a gRPC message; REST's own 408 is the
    server's, app.server.protocol)."""

    status_code = 408


class PayloadTooLarge(ServiceError):
    status_code = 413


class UnsupportedMediaType(ServiceError):
    status_code = 415


class NotReady(ServiceError):
    status_code = 503


class Overloaded(ServiceError):
    """More requests are waiting in this worker than it may queue (app.server.overload)."""

    status_code = 503


class ClientClosedRequest(ServiceError):
    """The client left before its body arrived: nobody reads the answer (nginx's 499)."""

    status_code = 499


class ModelLoadError(RuntimeError):
    """A model file is missing or unusable: start-up stops with this one-line message."""

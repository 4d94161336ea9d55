"""One error hierarchy for everything a client can get wrong.

Each subclass carries its HTTP status; `app.http.service_error` is the single place
that turns one into JSON, so no route formats an error by hand.
"""

from __future__ import annotations

from typing import Any


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
        detail: dict[str, Any] = {"index": index, "field": field, "value": value}
        if allowed is not None:
            detail["allowed"] = allowed
        super().__init__(f"flights[{index}].{field}: {problem}", **detail)


class NotFound(ServiceError):
    status_code = 404


class MethodNotAllowed(ServiceError):
    status_code = 405


class PayloadTooLarge(ServiceError):
    status_code = 413


class UnsupportedMediaType(ServiceError):
    status_code = 415


class NotReady(ServiceError):
    status_code = 503


class ClientClosedRequest(ServiceError):
    """The client left before its body arrived: nobody reads the answer (nginx's 499)."""

    status_code = 499


class ModelLoadError(RuntimeError):
    """A model file is missing or unusable: start-up stops with this one-line message."""

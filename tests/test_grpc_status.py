from __future__ import annotations

import grpc
import pytest

from app import errors
from app.errors import (
    BadRequest,
    ClientClosedRequest,
    InvalidFlight,
    MethodNotAllowed,
    NotFound,
    NotReady,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
)
from app.grpc.status import details_of, status_of


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (BadRequest("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (InvalidFlight(0, "MES", "not a month", 13), grpc.StatusCode.INVALID_ARGUMENT),
        (NotFound("no model"), grpc.StatusCode.NOT_FOUND),
        (MethodNotAllowed("GET"), grpc.StatusCode.UNIMPLEMENTED),
        (PayloadTooLarge("too many"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (NotReady("loading"), grpc.StatusCode.UNAVAILABLE),
        (ClientClosedRequest("gone"), grpc.StatusCode.CANCELLED),
        (RequestTimeout("slow"), grpc.StatusCode.CANCELLED),
        (ServiceError("bug"), grpc.StatusCode.INTERNAL),
    ],
)
def test_each_error_has_its_status_code(error: ServiceError, code: grpc.StatusCode) -> None:
    assert status_of(error) == code


def test_only_the_500_is_internal() -> None:
    """A client's error given a status of its own in REST was INTERNAL in gRPC (405 was), which
    the alerts count as the server's failure."""
    kinds = [
        kind
        for kind in vars(errors).values()
        if isinstance(kind, type) and issubclass(kind, ServiceError)
    ]
    assert len(kinds) > 5
    internal = {k.__name__ for k in kinds if status_of(k.__new__(k)) == grpc.StatusCode.INTERNAL}
    assert internal == {"ServiceError"}


def test_details_carry_the_message_and_the_json_detail() -> None:
    assert details_of(NotReady("models are not loaded yet")) == "models are not loaded yet"
    assert details_of(InvalidFlight(2, "MES", "not a month", 13, "1-12")) == (
        'flights[2].MES: not a month {"index":2,"field":"MES","value":13,"allowed":"1-12"}'
    )

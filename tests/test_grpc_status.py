from __future__ import annotations

import grpc
import pytest

from app.errors import (
    BadRequest,
    ClientClosedRequest,
    InvalidFlight,
    NotFound,
    NotReady,
    PayloadTooLarge,
    ServiceError,
)
from app.grpc.status import details_of, status_of


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (BadRequest("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (InvalidFlight(0, "MES", "not a month", 13), grpc.StatusCode.INVALID_ARGUMENT),
        (NotFound("no model"), grpc.StatusCode.NOT_FOUND),
        (PayloadTooLarge("too many"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (NotReady("loading"), grpc.StatusCode.UNAVAILABLE),
        (ClientClosedRequest("gone"), grpc.StatusCode.CANCELLED),
        (ServiceError("bug"), grpc.StatusCode.INTERNAL),
    ],
)
def test_each_error_has_its_status_code(error: ServiceError, code: grpc.StatusCode) -> None:
    assert status_of(error) == code


def test_details_carry_the_message_and_the_json_detail() -> None:
    assert details_of(NotReady("models are not loaded yet")) == "models are not loaded yet"
    assert details_of(InvalidFlight(2, "MES", "not a month", 13, "1-12")) == (
        'flights[2].MES: not a month {"index":2,"field":"MES","value":13,"allowed":"1-12"}'
    )

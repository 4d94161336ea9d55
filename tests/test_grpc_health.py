"""app.grpc.health: grpc.health.v1's answers from the data plane's readiness (the real server's
in tests/test_grpc_server.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.errors import NotFound
from app.grpc import health_pb2 as pb
from app.grpc.health import HealthServicer


class Plane:
    """The one call of the data plane the health service makes."""

    def __init__(self, ready: bool) -> None:
        self.is_ready = ready

    def ready(self) -> bool:
        return self.is_ready


def _servicer(ready: bool) -> HealthServicer:
    return HealthServicer(Plane(ready), 30.0)  # type: ignore[arg-type]


def _check(servicer: HealthServicer, service: str) -> Any:
    return asyncio.run(
        HealthServicer.Check.__wrapped__(servicer, pb.HealthCheckRequest(service=service), None)  # type: ignore[attr-defined]
    )


@pytest.mark.parametrize("service", ["", "inference.GRPCInferenceService"])
@pytest.mark.parametrize(
    ("ready", "status"),
    [(True, pb.HealthCheckResponse.SERVING), (False, pb.HealthCheckResponse.NOT_SERVING)],
)
def test_the_server_and_its_inference_service_serve_once_the_models_are_ready(
    service: str, ready: bool, status: int
) -> None:
    assert _check(_servicer(ready), service).status == status


@pytest.mark.parametrize(
    "service", ["inference.GRPCInferenceService ", "grpc.health.v1.Health", "x"]
)
def test_an_unknown_service_is_not_found_as_the_protocol_asks(service: str) -> None:
    with pytest.raises(NotFound, match="unknown service"):
        _check(_servicer(True), service)


@pytest.mark.parametrize("ready", [True, False])
def test_list_gives_what_check_gives_for_each_service(ready: bool) -> None:
    servicer = _servicer(ready)
    listed = asyncio.run(
        HealthServicer.List.__wrapped__(servicer, pb.HealthListRequest(), None)  # type: ignore[attr-defined]
    )
    assert {name: answer.status for name, answer in listed.statuses.items()} == {
        service: _check(servicer, service).status
        for service in ("", "inference.GRPCInferenceService")
    }

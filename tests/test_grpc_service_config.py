"""deploy/grpc/service-config.json, the gRPC client configuration docs/grpc.md advises, given to
grpcio as a client gives it, against a server that fails a call's first attempts with a status of
the test's choosing: what it retries, and how often."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest

from tests.conftest import ROOT

CONFIG = ROOT / "deploy" / "grpc" / "service-config.json"
SERVICE = "inference.GRPCInferenceService"


async def attempts_until(failing: int, code: grpc.StatusCode) -> tuple[grpc.StatusCode, int]:
    """A ModelInfer call whose first `failing` attempts the server ends with `code`: the status
    the client's call ended with, and the attempts the server saw."""
    seen = 0

    async def model_infer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        nonlocal seen
        seen += 1
        if seen <= failing:
            await context.abort(code, "failed on purpose")
        return b"answer"

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE, {"ModelInfer": grpc.unary_unary_rpc_method_handler(model_infer)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    options = [("grpc.service_config", CONFIG.read_text())]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            try:
                await channel.unary_unary(f"/{SERVICE}/ModelInfer")(b"", timeout=10)
            except grpc.aio.AioRpcError as error:
                return error.code(), seen
            return grpc.StatusCode.OK, seen
    finally:
        await server.stop(None)


@pytest.mark.parametrize("code", [grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE])
def test_a_call_the_server_cancelled_or_shed_is_retried(code: grpc.StatusCode) -> None:
    """CANCELLED: what a kept connection's call meets in a reload (grpc/grpc#41785, docs/grpc.md);
    UNAVAILABLE: a shed call, retried after its pushback (tests/test_grpc_calls.py)."""
    assert asyncio.run(attempts_until(1, code)) == (grpc.StatusCode.OK, 2)
    assert asyncio.run(attempts_until(2, code)) == (grpc.StatusCode.OK, 3)


def test_attempts_are_bounded() -> None:
    assert asyncio.run(attempts_until(5, grpc.StatusCode.UNAVAILABLE)) == (
        grpc.StatusCode.UNAVAILABLE,
        3,
    )


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    ],
)
def test_a_callers_error_or_the_services_own_is_not_retried(code: grpc.StatusCode) -> None:
    """A bad request fails the same way again; an INTERNAL or a deadline the service missed,
    retried, would only add load where it is failing."""
    assert asyncio.run(attempts_until(1, code)) == (code, 1)


def test_the_configuration_names_the_service_and_every_method_of_it() -> None:
    config = json.loads(Path(CONFIG).read_text())
    (method,) = config["methodConfig"]
    assert method["name"] == [{"service": SERVICE}]  # no "method": all of them
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE", "CANCELLED"]
    # retries stop on a channel that fails more than a tenth of its calls: no retry storm
    assert config["retryThrottling"] == {"maxTokens": 10, "tokenRatio": 0.1}

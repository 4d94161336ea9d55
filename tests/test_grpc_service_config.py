"""deploy/grpc/service-config.json, the gRPC client configuration docs/grpc.md advises, given to
grpcio as a client gives it, against a server that fails a call's first attempts with a status of
the test's choosing: what it retries, and how often."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import grpc
import pytest

from app.settings import Settings
from benchmarks.grpc_load import infer_request
from tests.conftest import ROOT

CONFIG = ROOT / "deploy" / "grpc" / "service-config.json"
SERVICE = "inference.GRPCInferenceService"


@contextlib.asynccontextmanager
async def configured_channel(
    model_infer: Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]],
    options: Sequence[tuple[str, str | int]] = (),
) -> AsyncIterator[grpc.aio.Channel]:
    """A channel given the configuration (and `options`) to a loopback server whose ModelInfer
    is `model_infer`, of any message size."""
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", -1)])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE, {"ModelInfer": grpc.unary_unary_rpc_method_handler(model_infer)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    given = [("grpc.service_config", CONFIG.read_text()), *options]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=given) as channel:
            yield channel
    finally:
        await server.stop(None)


async def attempts_until(
    failing: int,
    code: grpc.StatusCode,
    message: bytes = b"",
    options: Sequence[tuple[str, str | int]] = (),
) -> tuple[grpc.StatusCode, int]:
    """A ModelInfer call of `message` whose first `failing` attempts the server ends with `code`
    (on a channel given the configuration and `options`): the status the client's call ended
    with, and the attempts the server saw."""
    seen = 0

    async def model_infer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        nonlocal seen
        seen += 1
        if seen <= failing:
            await context.abort(code, "failed on purpose")
        return b"answer"

    async with configured_channel(model_infer, options) as channel:
        try:
            await channel.unary_unary(f"/{SERVICE}/ModelInfer")(message, timeout=10)
        except grpc.aio.AioRpcError as error:
            return error.code(), seen
        return grpc.StatusCode.OK, seen


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
    # retries stop on a channel that fails about a tenth of its calls or more: no retry storm
    assert config["retryThrottling"] == {"maxTokens": 100, "tokenRatio": 0.1}


def largest_call() -> bytes:
    """A ModelInfer call of MAX_FLIGHTS flights, their tensors raw (280 KB)."""
    flight = {"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 7}
    return infer_request([flight] * Settings.from_env({}).max_flights, "raw")


def test_a_call_over_grpcs_retry_buffer_is_retried_only_with_a_larger_buffer() -> None:
    """grpcio keeps at most 256 KiB of a call's messages for its retries (the channel argument
    grpc.per_rpc_retry_buffer_size); past it the call is committed to its first attempt: a
    ModelInfer call of MAX_FLIGHTS flights is larger, and was not retried on the configuration
    alone. docs/grpc.md's channels give the buffer MAX_BODY_BYTES, the largest call served."""
    message = largest_call()
    assert len(message) > 256 * 1024
    cancelled = grpc.StatusCode.CANCELLED
    assert asyncio.run(attempts_until(1, cancelled, message)) == (cancelled, 1)
    buffer = [("grpc.per_rpc_retry_buffer_size", Settings.from_env({}).max_body_bytes)]
    assert asyncio.run(attempts_until(1, cancelled, message, buffer)) == (grpc.StatusCode.OK, 2)


def documented_channel_options() -> list[dict[str, object]]:
    """The options of every channel docs/grpc.md's client configuration example makes (its
    `options=` and tritonclient's `channel_args=` lists), the names not literal as None."""
    text = (ROOT / "docs" / "grpc.md").read_text()
    section = text[text.index("**Client configuration.**") :]
    code = section[section.index("```python") + len("```python") : section.index("\n```\n")]
    found = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.keyword) and node.arg in ("options", "channel_args"):
            value = node.value
            if isinstance(value, ast.Name):  # a list assigned before: its assignment's value
                (value,) = (
                    assign.value
                    for assign in ast.walk(ast.parse(code))
                    if isinstance(assign, ast.Assign)
                    and any(getattr(t, "id", None) == value.id for t in assign.targets)
                )
            assert isinstance(value, ast.List)
            pairs = [element for element in value.elts if isinstance(element, ast.Tuple)]
            found.append(
                {
                    ast.literal_eval(name): ast.literal_eval(option)
                    if isinstance(option, ast.Constant | ast.BinOp | ast.UnaryOp)
                    else None
                    for name, option in (pair.elts for pair in pairs)
                }
            )
    return found


def test_the_documented_channels_retry_the_largest_call() -> None:
    channels = documented_channel_options()
    assert channels, "docs/grpc.md's example makes no channel"
    for options in channels:
        assert "grpc.service_config" in options
        buffer = options.get("grpc.per_rpc_retry_buffer_size")
        assert isinstance(buffer, int), options
        assert buffer >= Settings.from_env({}).max_body_bytes, options  # the largest call served


async def concurrent_failures(calls: int) -> int:
    """`calls` ModelInfer calls on one channel given the configuration, each CANCELLED on its first
    attempt at the same moment (a kept connection's calls as its worker stops): how many
    failed."""
    tried: set[bytes] = set()

    async def model_infer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if request not in tried:
            tried.add(request)
            await context.abort(grpc.StatusCode.CANCELLED, "failed on purpose")
        return b"answer"

    async with configured_channel(model_infer) as channel:
        method = channel.unary_unary(f"/{SERVICE}/ModelInfer")
        outcomes = await asyncio.gather(
            *(method(str(call).encode(), timeout=10) for call in range(calls)),
            return_exceptions=True,
        )
    return sum(isinstance(outcome, grpc.aio.AioRpcError) for outcome in outcomes)


def test_retry_throttling_retries_a_burst_of_49_of_a_channels_calls_failing_at_once() -> None:
    """retryThrottling's 100 tokens: a failure takes one, and retries stop at 50 (half) until the
    channel's successes (0.1 each) refill them. So of a channel's calls failing together, as a
    kept connection's calls in flight as its worker stops, 49 are retried: docs/grpc.md says so,
    as the reload benchmark's clients (one call in flight a channel) do not meet it. With 10
    tokens (gRPC's example) only 4 were: 16 of 20 calls cancelled together failed."""
    assert asyncio.run(concurrent_failures(40)) == 0
    assert asyncio.run(concurrent_failures(100)) >= 40  # 51, or fewer if a retry succeeded first

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf.empty_pb2 import Empty

from app.grpc import calls


class Slow:
    """One method wrapped as the service's are, that answers after 5 s (the tests' clients give
    up before): the generated messages stay out of this process (app/grpc/__init__.py)."""

    in_flight = 0

    @calls.rpc(Empty)
    async def Slow(self, request: Empty, context: calls.Context) -> Empty:  # noqa: N802
        await asyncio.sleep(5)
        return Empty()


async def counted_status(
    monkeypatch: pytest.MonkeyPatch, timeout: float | None, cancel_after: float | None
) -> tuple[grpc.StatusCode | None, list[str]]:
    """The client's status for one call to `Slow`, and the statuses the server counted."""
    counted: list[str] = []

    def observe(route: str, method: str, status: Any, seconds: float) -> None:
        counted.append(status)

    monkeypatch.setattr(calls, "observe_latency", observe)
    handler = grpc.method_handlers_generic_handler(
        "S", {"Slow": grpc.unary_unary_rpc_method_handler(Slow().Slow)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    code = None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/S/Slow")(Empty().SerializeToString(), timeout=timeout)
            if cancel_after is not None:
                await asyncio.sleep(cancel_after)
                call.cancel()
            try:
                await call
            except grpc.aio.AioRpcError as error:
                code = error.code()
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
        for _ in range(100):  # the server's handler sees the cancel a moment later
            if counted:
                break
            await asyncio.sleep(0.02)
    finally:
        await server.stop(None)
    return code, counted


def test_a_call_past_its_deadline_is_counted_deadline_exceeded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a client probe: counted CANCELLED, a service too slow for its callers' deadlines
    never showed in the alerts, which count DEADLINE_EXCEEDED as the server's failure."""
    code, counted = asyncio.run(counted_status(monkeypatch, timeout=0.2, cancel_after=None))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert counted == ["DEADLINE_EXCEEDED"]


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_a_call_the_client_cancels_is_counted_cancelled(
    monkeypatch: pytest.MonkeyPatch, timeout: float | None
) -> None:
    code, counted = asyncio.run(counted_status(monkeypatch, timeout=timeout, cancel_after=0.2))
    assert code == grpc.StatusCode.CANCELLED
    assert counted == ["CANCELLED"]

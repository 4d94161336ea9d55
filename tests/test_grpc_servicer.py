from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from app.grpc import grpc_predict_v2_pb2 as pb
from app.grpc import servicer


class Slow:
    """One method wrapped as the service's are, that answers after `seconds`."""

    in_flight = 0

    @servicer._rpc(pb.ServerLiveRequest)
    async def Slow(  # noqa: N802
        self, request: pb.ServerLiveRequest, context: servicer.Context
    ) -> pb.ServerLiveResponse:
        await asyncio.sleep(5)
        return pb.ServerLiveResponse(live=True)


async def counted_status(
    monkeypatch: pytest.MonkeyPatch, timeout: float | None, cancel_after: float | None
) -> tuple[grpc.StatusCode | None, list[str]]:
    """The client's status for one call to `Slow`, and the statuses the server counted."""
    counted: list[str] = []

    def observe(route: str, method: str, status: Any, seconds: float) -> None:
        counted.append(status)

    monkeypatch.setattr(servicer, "observe_latency", observe)
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
            call = channel.unary_unary("/S/Slow")(
                pb.ServerLiveRequest().SerializeToString(), timeout=timeout
            )
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

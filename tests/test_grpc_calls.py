from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import grpc
import pytest
from google.protobuf.empty_pb2 import Empty
from google.protobuf.wrappers_pb2 import BytesValue

from app.errors import BadRequest, NotReady, ServiceError
from app.grpc import calls
from app.server.overload import RETRY_AFTER
from tests.conftest import ROOT


@contextlib.asynccontextmanager
async def serving(method: Any, name: str) -> AsyncIterator[int]:
    """A grpc.aio server on a free loopback port serving `method` (wrapped as the service's
    methods are, bound to its servicer) as `/S/<name>`; its port."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("S", {name: calls.handler(method)}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


async def outcome(call: Any) -> tuple[grpc.StatusCode, str]:
    """A client call's status code and details."""
    try:
        await call
    except asyncio.CancelledError:
        if not call.cancelled():  # this task's own cancellation
            raise
        return grpc.StatusCode.CANCELLED, ""  # the client cancelled the call
    except grpc.aio.AioRpcError as error:
        code: grpc.StatusCode = error.code()
        return code, error.details() or ""
    return grpc.StatusCode.OK, ""


class Slow:
    """One method wrapped as the service's are, that answers after 5 s (the tests' clients give
    up before): the generated messages stay out of this process (app/grpc/__init__.py)."""

    in_flight = 0
    max_in_flight = 64
    message_timeout = 30.0

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
    async with serving(Slow().Slow, "Slow") as port:
        code = None
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
    return code, counted


def test_a_call_past_its_deadline_is_counted_deadline_exceeded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a client probe: counted CANCELLED, a service too slow for its callers' deadlines
    never showed in the alerts, which count DEADLINE_EXCEEDED as the server's failure."""
    code, counted = asyncio.run(counted_status(monkeypatch, timeout=0.2, cancel_after=None))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert counted == ["DEADLINE_EXCEEDED"]


def test_a_deadline_the_server_sees_late_is_counted_deadline_exceeded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client's deadline passes before the server's by the call's transit (grpc-timeout
    counts from the client's send), and its cancel can beat the server's own timer: emulated by
    a cancel 20 ms before a 0.2-s deadline. Counted CANCELLED before, one such call in about a
    full suite run on the loaded 2-core VM (and about half of them across a real network)."""
    code, counted = asyncio.run(counted_status(monkeypatch, timeout=0.2, cancel_after=0.18))
    assert code == grpc.StatusCode.CANCELLED  # the client's own cancel, as the client sees it
    assert counted == ["DEADLINE_EXCEEDED"]


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_a_call_the_client_cancels_is_counted_cancelled(
    monkeypatch: pytest.MonkeyPatch, timeout: float | None
) -> None:
    code, counted = asyncio.run(counted_status(monkeypatch, timeout=timeout, cancel_after=0.2))
    assert code == grpc.StatusCode.CANCELLED
    assert counted == ["CANCELLED"]


class Held:
    """One method wrapped as the service's are, that answers once `release` is set."""

    in_flight = 0
    max_in_flight = 2

    def __init__(self, message_timeout: float = 30.0) -> None:
        self.release = asyncio.Event()
        self.message_timeout = message_timeout

    @calls.rpc(Empty)
    async def Held(self, request: Empty, context: calls.Context) -> Empty:  # noqa: N802
        await self.release.wait()
        return Empty()


class HeldProbe(Held):
    """`Held` as a probe: never shed."""

    @calls.rpc(Empty, shed=False)
    async def Held(self, request: Empty, context: calls.Context) -> Empty:  # noqa: N802
        await self.release.wait()
        return Empty()


async def held_calls(
    monkeypatch: pytest.MonkeyPatch, calls_made: int, servicer: Held | None = None
) -> tuple[list[grpc.StatusCode], str, list[str]]:
    """The status of each of `calls_made` calls to `servicer.Held` (a `Held` by default) made at
    once (released once all but the refused are in), the details of the first refused one, and
    what the server counted."""
    counted: list[str] = []
    monkeypatch.setattr(calls, "observe_latency", lambda *args: counted.append(args[2]))
    servicer = servicer or Held()
    refused = 0 if isinstance(servicer, HeldProbe) else max(0, calls_made - servicer.max_in_flight)
    async with (
        serving(servicer.Held, "Held") as port,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        method = channel.unary_unary("/S/Held")
        pending = [method(Empty().SerializeToString(), timeout=10) for _ in range(calls_made)]
        for _ in range(200):  # until the handlers hold what they may, and refused the rest
            if servicer.in_flight >= calls_made - refused and len(counted) >= refused:
                break
            await asyncio.sleep(0.01)
        servicer.release.set()
        outcomes = [await outcome(call) for call in pending]
    codes = [code for code, _ in outcomes]
    details = next((detail for _, detail in outcomes if detail), "")
    return codes, details, counted


def test_calls_past_max_in_flight_are_unavailable_at_once_and_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a hostile-client probe: grpcio hands every call whose message is in to its
    handler, so 5 connections keeping 90 10,000-flight calls each in flight took a worker from
    88 MB to 2 GB (REST sheds past MAX_IN_FLIGHT); now the calls past the bound are refused
    before their message is parsed, as REST's shed requests are."""
    codes, details, counted = asyncio.run(held_calls(monkeypatch, calls_made=5))
    assert sorted(code.name for code in codes) == ["OK", "OK"] + ["UNAVAILABLE"] * 3
    assert details.startswith("overloaded: too many requests in flight")
    assert sorted(counted) == ["OK", "OK"] + ["UNAVAILABLE"] * 3


RETRYING = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "S"}],
                "retryPolicy": {
                    "maxAttempts": 2,
                    "initialBackoff": "0.01s",
                    "maxBackoff": "0.01s",
                    "backoffMultiplier": 1,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)
"""A client's service config that retries an UNAVAILABLE call once, after 10 ms of its own."""


async def shed_call_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[grpc.StatusCode, float, list[str]]:
    """A call made, by a client that retries UNAVAILABLE (RETRYING), while `Held`'s bound is
    full: its final status, the seconds it took, and what the server counted."""
    counted: list[str] = []
    monkeypatch.setattr(calls, "observe_latency", lambda *args: counted.append(args[2]))
    servicer = Held()
    async with (
        serving(servicer.Held, "Held") as port,
        grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.service_config", RETRYING)]
        ) as channel,
    ):
        method = channel.unary_unary("/S/Held")
        holding = [method(Empty().SerializeToString(), timeout=10) for _ in range(2)]
        for _ in range(200):
            if servicer.in_flight >= servicer.max_in_flight:
                break
            await asyncio.sleep(0.01)
        start = time.perf_counter()
        code, _ = await outcome(method(Empty().SerializeToString(), timeout=10))
        took = time.perf_counter() - start
        servicer.release.set()
        for call in holding:
            await outcome(call)
    return code, took, counted


def test_a_shed_call_tells_retrying_clients_to_wait_as_rests_retry_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """REST's shed 503 says `Retry-After: 1`; the shed UNAVAILABLE said nothing, so a gRPC client
    whose retry policy takes UNAVAILABLE came back after its own backoff (10 ms here), into the
    same full worker. It now carries `grpc-retry-pushback-ms` (gRPC's retry design, A6), which
    grpcio's retries wait for."""
    code, took, counted = asyncio.run(shed_call_retried(monkeypatch))
    assert code == grpc.StatusCode.UNAVAILABLE  # retried once, shed again
    assert counted.count("UNAVAILABLE") == 2
    assert took >= RETRY_AFTER * 0.9, f"retried after {took:.3f} s"


class Failing:
    """One method wrapped as the service's are, that fails with `error` (every call shed if
    `max_in_flight` is 0)."""

    in_flight = 0
    message_timeout = 30.0

    def __init__(self, error: ServiceError, max_in_flight: int = 64) -> None:
        self.error = error
        self.max_in_flight = max_in_flight

    @calls.rpc(Empty)
    async def Fail(self, request: Empty, context: calls.Context) -> Empty:  # noqa: N802
        raise self.error


async def trailer_of(servicer: Failing) -> tuple[grpc.StatusCode, dict[str, str]]:
    """A call's status and trailing metadata."""
    async with (
        serving(servicer.Fail, "Fail") as port,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        try:
            await channel.unary_unary("/S/Fail")(Empty().SerializeToString(), timeout=10)
        except grpc.aio.AioRpcError as error:
            return error.code(), {key: str(value) for key, value in error.trailing_metadata()}
    raise AssertionError("the call did not fail")


@pytest.mark.parametrize(
    ("servicer", "code", "pushback"),
    [
        (Failing(BadRequest("no"), max_in_flight=0), grpc.StatusCode.UNAVAILABLE, "1000"),
        (Failing(NotReady("models not loaded")), grpc.StatusCode.UNAVAILABLE, None),
        (Failing(BadRequest("no")), grpc.StatusCode.INVALID_ARGUMENT, None),
    ],
    ids=["shed", "not-ready", "bad-request"],
)
def test_only_a_shed_call_carries_the_pushback(
    servicer: Failing, code: grpc.StatusCode, pushback: str | None
) -> None:
    """A6's pushback, in milliseconds, in the trailer: on the shed UNAVAILABLE only. Another
    UNAVAILABLE (a worker not ready) is retried after the client's own backoff, as before."""
    status, trailer = asyncio.run(trailer_of(servicer))
    assert status == code
    assert trailer.get("grpc-retry-pushback-ms") == pushback
    assert "x-request-id" in trailer


async def shed_under_the_advised_configuration(timeout: float) -> tuple[grpc.StatusCode, float]:
    """A call every attempt of which is shed, by a client given deploy/grpc/service-config.json
    (its service renamed to the test's): its status and the seconds it took."""
    config = json.loads((ROOT / "deploy" / "grpc" / "service-config.json").read_text())
    config["methodConfig"][0]["name"] = [{"service": "S"}]
    servicer = Failing(BadRequest("never raised"), max_in_flight=0)
    options = [("grpc.service_config", json.dumps(config))]
    async with (
        serving(servicer.Fail, "Fail") as port,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel,
    ):
        start = time.perf_counter()
        code, _ = await outcome(channel.unary_unary("/S/Fail")(b"", timeout=timeout))
    return code, time.perf_counter() - start


def test_a_shed_call_with_a_deadline_under_the_pushback_ends_at_its_deadline() -> None:
    """docs/grpc.md: a client given the advised configuration waits the pushback before its
    retry, so a shed call whose deadline comes sooner is DEADLINE_EXCEEDED at that deadline, not
    UNAVAILABLE at once."""
    code, took = asyncio.run(shed_under_the_advised_configuration(0.3))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.25 <= took < RETRY_AFTER, f"{took:.3f} s"


def test_a_probe_is_answered_past_max_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    """As REST's probes (app.server.overload.UNSHED_PATHS): shed, a health check told an
    orchestrator that an overloaded worker was unready."""
    codes, _, counted = asyncio.run(held_calls(monkeypatch, calls_made=5, servicer=HeldProbe()))
    assert [code.name for code in codes] == ["OK"] * 5
    assert counted == ["OK"] * 5


async def no_message() -> AsyncIterator[bytes]:
    """A client stream whose message never comes: it holds the client's side of a call open."""
    await asyncio.Event().wait()
    yield b""  # never reached


async def stalled_calls(
    monkeypatch: pytest.MonkeyPatch, stalled: int, message_timeout: float, then_whole: bool
) -> tuple[list[grpc.StatusCode], list[str], list[str]]:
    """The status and details of `stalled` calls to `Held` whose client sends no message and
    does not end its side (a message still coming), made first, then of one call sent whole
    if `then_whole`; and what the server counted. `Held` answers at once here."""
    counted: list[str] = []
    monkeypatch.setattr(calls, "observe_latency", lambda *args: counted.append(args[2]))
    servicer = Held(message_timeout)
    servicer.release.set()
    async with (
        serving(servicer.Held, "Held") as port,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        pending = [
            channel.stream_unary("/S/Held")(no_message(), timeout=10) for _ in range(stalled)
        ]
        for _ in range(200):  # until the server has started them
            if servicer.in_flight >= min(stalled, servicer.max_in_flight):
                break
            await asyncio.sleep(0.01)
        if then_whole:
            pending.append(channel.unary_unary("/S/Held")(b"", timeout=10))
        outcomes = [await outcome(call) for call in pending]
    return [code for code, _ in outcomes], [detail for _, detail in outcomes], counted


def test_calls_whose_message_is_still_coming_count_against_max_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a hostile-client probe: grpcio buffered each unary call's message until it was
    whole, before any handler ran, so such calls were bounded by nothing but MAX_BODY_BYTES and
    the connection's age: 4 connections of 100 calls each sending all but the last byte of a
    1-MB message took a worker from 82 MB to 484 MB for 330 s. Now the method runs from the
    call's headers and the in-flight bound holds them too."""
    codes, details, counted = asyncio.run(
        stalled_calls(monkeypatch, stalled=2, message_timeout=1.0, then_whole=True)
    )
    assert codes[-1] == grpc.StatusCode.UNAVAILABLE
    assert details[-1].startswith("overloaded: too many requests in flight")
    assert sorted(counted) == ["CANCELLED", "CANCELLED", "UNAVAILABLE"]


def test_a_message_that_does_not_arrive_in_time_is_cancelled_and_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As REST's 408 for a body not whole within BODY_TIMEOUT: the client's error, counted,
    not the server's (the alerts count DEADLINE_EXCEEDED, not CANCELLED)."""
    codes, details, counted = asyncio.run(
        stalled_calls(monkeypatch, stalled=1, message_timeout=0.3, then_whole=False)
    )
    assert codes == [grpc.StatusCode.CANCELLED]
    assert details == ["the request message did not arrive within 0.3 s"]
    assert counted == ["CANCELLED"]


@pytest.mark.parametrize("ended_by", ["DEADLINE_EXCEEDED", "CANCELLED"])
def test_a_call_that_ends_before_its_message_is_counted_as_its_client_saw_it(
    monkeypatch: pytest.MonkeyPatch, ended_by: str
) -> None:
    """A call whose deadline passed (or whose client cancelled it) while its message was still
    coming was counted INVALID_ARGUMENT, "no request message", as if its client had sent none:
    grpcio's read returns EOF for a call it has cancelled. The alerts count DEADLINE_EXCEEDED as
    the server's failure, and INVALID_ARGUMENT hid a slow service from them."""
    counted: list[str] = []
    monkeypatch.setattr(calls, "observe_latency", lambda *args: counted.append(args[2]))

    async def call() -> tuple[grpc.StatusCode, str]:
        servicer = Held()
        servicer.release.set()

        async with (
            serving(servicer.Held, "Held") as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            timeout = 0.3 if ended_by == "DEADLINE_EXCEEDED" else 10
            pending = channel.stream_unary("/S/Held")(no_message(), timeout=timeout)
            if ended_by == "CANCELLED":
                await asyncio.sleep(0.3)
                pending.cancel()
            ended = await outcome(pending)
            for _ in range(200):  # until the server has counted it
                if counted:
                    break
                await asyncio.sleep(0.01)
        return ended

    code, _ = asyncio.run(call())
    assert code.name == ended_by
    assert counted == [ended_by]


def test_a_call_without_a_message_is_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    counted: list[str] = []
    monkeypatch.setattr(calls, "observe_latency", lambda *args: counted.append(args[2]))

    async def call() -> grpc.aio.AioRpcError:
        servicer = Held()
        servicer.release.set()
        async with (
            serving(servicer.Held, "Held") as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await channel.stream_unary("/S/Held")(iter(()), timeout=10)
        return raised.value

    error = asyncio.run(call())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "the call carried no request message"
    assert counted == ["INVALID_ARGUMENT"]


class Sized:
    """One method wrapped as the service's are, that notes the size of the message it was told."""

    in_flight = 0
    max_in_flight = 64
    message_timeout = 30.0
    told: ClassVar[list[int]] = []

    @calls.rpc(BytesValue)
    async def Sized(self, request: BytesValue, context: calls.Context) -> Empty:  # noqa: N802
        self.told.append(calls.MESSAGE_BYTES.get())
        return Empty()


def test_a_method_is_told_the_size_of_its_message_as_it_came() -> None:
    """ModelInfer decodes a large message's tensors in the batch thread (app.dataplane), and
    a parsed message's ByteSize would cost the event loop a serialisation to tell it."""

    async def scenario() -> None:
        async with (
            serving(Sized().Sized, "Sized") as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            call = channel.unary_unary("/S/Sized")
            for size in (0, 100, 40_000):
                await call(BytesValue(value=b"x" * size).SerializeToString(), timeout=10)

    asyncio.run(scenario())
    assert Sized.told == [BytesValue(value=b"x" * size).ByteSize() for size in (0, 100, 40_000)]


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    """An HTTP/2 frame."""
    return (
        len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload
    )


def _unread_call(port: int, path: bytes) -> socket.socket:
    """A connection whose one call (no message fields: an empty gRPC message) is whole, and
    whose client announced an HTTP/2 window of 0 and never opens it: the answer cannot leave
    the server. The headers are HPACK literals with new names (no table, no Huffman)."""
    headers = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path),
        (b":authority", b"127.0.0.1"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]
    block = b"".join(
        b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value for name, value in headers
    )
    zero_window = (4).to_bytes(2, "big") + (0).to_bytes(4, "big")  # SETTINGS_INITIAL_WINDOW_SIZE
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        PREFACE
        + _frame(4, 0, 0, zero_window)  # SETTINGS
        + _frame(1, 0x4, 1, block)  # HEADERS, END_HEADERS
        + _frame(0, 0x1, 1, b"\x00" + (0).to_bytes(4, "big"))  # DATA, END_STREAM
    )
    return sock


def test_calls_whose_answers_are_unread_count_against_max_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a hostile-client probe: grpcio sends a method's answer after the method
    returns, and holds it until the client's window lets it go; counted in flight only until
    then, 12 connections of 60 10,000-flight ModelInfer calls whose answers the client never
    read took a worker from 94 MB to 400 MB (GRPC_MAX_STREAMS a connection, any number of
    connections). Now a call is in flight until its answer is sent, so MAX_IN_FLIGHT bounds
    them, and the connection's close releases them."""
    monkeypatch.setattr(calls, "observe_latency", lambda *args: None)

    async def scenario() -> tuple[int, grpc.StatusCode, grpc.StatusCode]:
        servicer = Held()
        servicer.max_in_flight = 1
        servicer.release.set()
        async with serving(servicer.Held, "Held") as port:
            sock = _unread_call(port, b"/S/Held")
            await asyncio.sleep(0.5)  # the method has answered; the answer waits on the window
            held = servicer.in_flight
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                while_unread, _ = await outcome(channel.unary_unary("/S/Held")(b"", timeout=10))
                sock.close()  # the unread call is done: its place is free again
                for _ in range(200):
                    if not servicer.in_flight:
                        break
                    await asyncio.sleep(0.01)
                after_close, _ = await outcome(channel.unary_unary("/S/Held")(b"", timeout=10))
        return held, while_unread, after_close

    held, while_unread, after_close = asyncio.run(scenario())
    assert held == 1
    assert while_unread == grpc.StatusCode.UNAVAILABLE
    assert after_close == grpc.StatusCode.OK


def test_every_way_a_call_ends_gives_its_place_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call leaves `in_flight` in grpcio's done callback (the answer sent): a kind of ending
    that never called it would keep its place for ever, and MAX_IN_FLIGHT of them would make the
    worker's gRPC port UNAVAILABLE to every call until it restarted."""
    monkeypatch.setattr(calls, "observe_latency", lambda *args: None)

    async def scenario() -> list[grpc.StatusCode]:
        servicer = Held(message_timeout=0.3)
        servicer.max_in_flight = 3

        async with (
            serving(servicer.Held, "Held") as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            unary = channel.unary_unary("/S/Held")
            held = [unary(b"", timeout=0.3), unary(b"", timeout=10), unary(b"", timeout=10)]
            await asyncio.sleep(0.1)
            refused = await outcome(unary(b"", timeout=10))  # past the bound
            held[1].cancel()  # the client cancels
            ended = [await outcome(held[0]), await outcome(held[1])]  # the deadline passes
            servicer.release.set()
            ended += [await outcome(held[2]), refused]
            ended.append(await outcome(unary(b"\xff", timeout=10)))  # does not parse
            ended.append(await outcome(channel.stream_unary("/S/Held")(iter(()), timeout=10)))
            ended.append(await outcome(channel.stream_unary("/S/Held")(no_message(), timeout=10)))
            for _ in range(200):
                if not servicer.in_flight:
                    break
                await asyncio.sleep(0.01)
            assert servicer.in_flight == 0
            # and the places are usable: as many calls at once as the bound, all answered
            whole = await asyncio.gather(*(outcome(unary(b"", timeout=10)) for _ in range(3)))
        return [code for code, _ in ended + list(whole)]

    codes = asyncio.run(scenario())
    assert [code.name for code in codes] == [
        "DEADLINE_EXCEEDED",
        "CANCELLED",
        "OK",
        "UNAVAILABLE",
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
        "CANCELLED",
        "OK",
        "OK",
        "OK",
    ]

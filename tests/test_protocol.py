"""app.server.protocol on a real event loop with a fake transport: the head limit, the read timeouts
(the sweep called with chosen clock values, so no test waits for them) and the drain."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from uvicorn.config import Config
from uvicorn.server import ServerState

from app.observability import log_budget
from app.observability import request_id as request_ids
from app.observability.logs import access_logger
from app.observability.metrics import ANSWERED_BY_SERVER, CLOSED_KINDS, exposition
from app.server import protocol as protocol_module
from app.server.overload import _BODY, EARLY_GRACE, RETRY_AFTER, SHED_ROUTE, UNSHED_PATHS
from app.server.protocol import (
    DRAIN_INTERVAL,
    DRAIN_QUIET,
    HTTP2_REFUSED,
    MAX_PIPELINED,
    NO_HOST,
    PIPELINE_FULL,
    REFUSED_ROUTE,
    TWO_HOSTS,
    VERSION_REFUSED,
    GuardedHttpToolsProtocol,
    Limits,
    begin_drain,
    guarded_protocol,
    in_flight,
)

LIMITS = Limits(max_head_bytes=1024, head_timeout=10, body_timeout=30)
SEEN: list[dict[str, Any]] = []
GATE: list[asyncio.Event] = []
"""While it holds an event, reading_app answers only once that is set: a request still being
answered (as one waiting for a merged onnxruntime call is)."""
BODY_GATE: list[asyncio.Event] = []
"""While it holds an event, reading_app sends its answer's body only once that is set: a
response whose head is out."""


async def reading_app(scope: Any, receive: Any, send: Any) -> None:
    """Reads the whole body, then answers 200 with its length; records what it received."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        SEEN.append(message)
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if GATE:
        await GATE[0].wait()
    answer = str(len(body)).encode()
    headers = [(b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if BODY_GATE:
        await BODY_GATE[0].wait()
    await send({"type": "http.response.body", "body": answer})


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.data = b""
        self.closed = False
        self.reading = True
        self.buffered = 0
        """What the transport holds unsent: a client that does not read leaves it there."""
        self.aborted = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def write(self, data: Any) -> None:
        self.data += bytes(data)

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def abort(self) -> None:
        self.closed = self.aborted = True

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        """No half-close: an answer closing its connection closes it at once (as over TLS);
        the staged close is tested over real sockets (tests/test_server.py)."""
        return False

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


Scenario = Callable[[GuardedHttpToolsProtocol, FakeTransport], Awaitable[None]]


def run(
    scenario: Scenario,
    limits: Limits = LIMITS,
    draining: bool = False,
    log_shed: bool = False,
    linger: float = 0.0,
    hold: float = 0.0,
) -> None:
    """`scenario` on one connection; `draining`: made after its server began to shut down, whose
    answers close their connections after `linger` s, and which holds idle ones open for at
    most `hold` s."""

    async def main() -> None:
        config = Config(app=reading_app, lifespan="off", log_config=None)
        config.load()
        state = ServerState()
        if draining:
            begin_drain(state, linger, hold)
        protocol_class = guarded_protocol(limits, log_shed)
        protocol = protocol_class(config, state, {}, asyncio.get_running_loop())
        transport = FakeTransport()
        protocol.connection_made(transport)
        await scenario(protocol, transport)
        if not transport.closed:
            protocol.connection_lost(None)
        await asyncio.sleep(0)

    SEEN.clear()
    try:
        asyncio.run(main())
    finally:
        GATE.clear()
        BODY_GATE.clear()


def post(body: bytes, length: int | None = None, extra: bytes = b"") -> bytes:
    declared = len(body) if length is None else length
    return (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % declared
        + extra
        + b"\r\n"
        + body
    )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_guarded_protocol_carries_its_limits() -> None:
    cls = guarded_protocol(LIMITS)
    assert issubclass(cls, GuardedHttpToolsProtocol)
    assert cls.limits == LIMITS
    assert GuardedHttpToolsProtocol.limits == Limits()


def test_a_normal_request_is_served_and_kept_alive() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        assert protocol.phase() == "fresh"
        protocol.data_received(post(b"x" * 5000))  # a body over the head limit is no head
        await settle()
        assert transport.data.startswith(b"HTTP/1.1 200 ")
        assert transport.data.endswith(b"5000")
        assert not transport.closed
        assert protocol.phase() == "idle"

    run(scenario)


@pytest.mark.parametrize("chunk", [None, 100], ids=["one-chunk", "trickled"])
def test_a_head_over_the_limit_is_a_431_and_closed(chunk: int | None) -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        data = post(b"{}", extra=b"X-Big: " + b"a" * 2000 + b"\r\n")
        pieces = (
            [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
        )
        for piece in pieces:
            if transport.closed:
                break
            protocol.data_received(piece)
        await settle()
        assert transport.data.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
        assert b"connection: close" in transport.data
        assert b'{"error":"request head over the 1024-byte limit"}' in transport.data
        assert transport.closed
        assert all(message["type"] != "http.request" or not message["body"] for message in SEEN)

    run(scenario)


def test_a_head_just_over_the_limit_completed_by_its_second_chunk_is_a_431() -> None:
    """Under the limit after the first chunk, over it once the second completes the head."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        data = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1100 + b"\r\n\r\n"
        protocol.data_received(data[:1000])
        assert not transport.closed
        protocol.data_received(data[1000:])
        await settle()
        assert transport.data.startswith(b"HTTP/1.1 431 ")
        assert b"HTTP/1.1 200" not in transport.data  # not "200" alone: a request ID may hold it

    run(scenario)


GET_HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    ("data", "chunk"),
    [(GET_HEALTH * 40, 100), (GET_HEALTH * 40, 250), ((post(b"x" * 1100) + GET_HEALTH) * 20, 1500)],
    ids=["gets-100", "gets-250", "posts-1500"],
)
def test_pipelined_small_requests_never_sum_to_a_431(data: bytes, chunk: int) -> None:
    """A chunk that ends inside the next head also holds the requests before it: counted as that
    head's, a stream of small pipelined requests, each chunk ending mid-head, passed the limit
    (a 431 and the connection closed after 18 KB of 33-byte GETs, at the 16 KiB default); and
    one chunk of a 1,100-byte body and a head's first bytes was a 431 at once (the 1,500)."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        for start in range(0, len(data), chunk):
            protocol.data_received(data[start : start + chunk])
            await settle()
        for _ in range(40):  # the pipelined answers, one after another
            await settle()
        assert transport.data.count(b"HTTP/1.1 200 ") == 40, transport.data[-300:]
        assert b"431" not in transport.data
        assert not transport.closed

    run(scenario)


@pytest.mark.parametrize("before", [1, 3])
def test_bytes_that_are_not_http_are_refused_after_the_requests_before_them(before: int) -> None:
    """Answers go in the order of their requests: refused at once, the 400 was the only answer,
    which the client took for its first request's (and the metrics counted the lost 200s)."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.data_received(post(b"{}") * before + b"GARBAGE\r\n\r\n")
        for _ in range(10):
            await settle()
        statuses = re.findall(rb"HTTP/1.1 (\d{3}) ", transport.data)
        assert statuses == [b"200"] * before + [b"400"]
        assert b"not a valid HTTP/1.1 request" in transport.data
        assert transport.closed

    run(scenario)


async def sent_while_answering(
    protocol: GuardedHttpToolsProtocol, transport: FakeTransport, chunks: list[bytes]
) -> bytes:
    """What the connection was answered to `chunks`, sent while its first request (their start)
    is still being answered: checked to be nothing until that answer, then the connection
    closed, the first request's the only app that ran."""
    GATE.append(asyncio.Event())
    for chunk in chunks:
        protocol.data_received(chunk)
        await settle()
    assert transport.data == b""
    assert not transport.closed
    GATE[0].set()
    for _ in range(5):
        await settle()
    assert transport.closed
    assert [message["type"] for message in SEEN] == ["http.request"]  # the first's app only
    return transport.data


BIG_GET = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n"
"""A whole head over LIMITS' 1,024 bytes."""


@pytest.mark.parametrize(
    ("chunks", "refused"),
    [
        ([post(b"{}"), b"GARBAGE\r\n\r\n", post(b"{}")], b"400"),
        ([post(b"{}") + b"GET /health HTTP/1.1\r\nX-Big: ", *[b"a" * 100] * 20], b"431"),
        ([post(b"{}") + BIG_GET], b"431"),
        ([post(b"{}") + BIG_GET + GET_HEALTH, GET_HEALTH], b"431"),
    ],
    ids=["not-http", "head-over-the-limit", "whole-head-over-the-limit", "and-requests-after-it"],
)
def test_a_refusal_waits_for_the_answer_in_progress(chunks: list[bytes], refused: bytes) -> None:
    """Bytes that are not HTTP, or a head over the limit, sent while the request before is still
    being answered (a merged onnxruntime call): the refusal waits for that answer; what the
    client sends meanwhile is not answered. A whole head over the limit was refused at once,
    its 431 the only answer (the 200 in progress lost)."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        written = await sent_while_answering(protocol, transport, chunks)
        assert re.findall(rb"HTTP/1.1 (\d{3}) ", written) == [b"200", refused]

    run(scenario)


def test_a_long_head_behind_a_pipelined_request_is_still_a_431() -> None:
    """The head that began after a request ended in the same chunk is measured from what it has
    parsed, and every later chunk counts whole: one header of 5,000 bytes trickled after it is
    refused before it completes."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.data_received(post(b"{}") + b"GET /health HTTP/1.1\r\nX-Big: ")
        await settle()
        for _ in range(50):
            if transport.closed:
                break
            protocol.data_received(b"a" * 100)
        await settle()
        assert transport.data.startswith(b"HTTP/1.1 200 ")
        assert b"HTTP/1.1 431 " in transport.data
        assert transport.closed

    run(scenario)


def test_a_connection_that_sends_nothing_is_closed_silently_after_the_head_timeout() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.sweep(100.0)
        protocol.sweep(109.0)
        assert not transport.closed
        protocol.sweep(110.0)
        assert transport.closed
        assert transport.data == b""

    run(scenario)


def test_a_head_not_complete_in_time_is_a_408() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.data_received(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        assert protocol.phase() == "head"
        protocol.sweep(0.0)
        protocol.data_received(b"X-Slow: 1\r\n")  # still trickling: the clock keeps running
        protocol.sweep(9.0)
        assert not transport.closed
        protocol.sweep(10.0)
        assert transport.data.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert b"request head not received in time" in transport.data
        assert transport.closed

    run(scenario)


def test_a_body_not_complete_in_time_is_a_408_and_the_app_sees_a_disconnect() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.data_received(post(b"[1,", length=100))
        await settle()
        assert protocol.phase() == "body"
        protocol.sweep(0.0)
        protocol.data_received(b"2,")
        protocol.sweep(29.0)
        assert not transport.closed
        protocol.sweep(30.0)
        assert transport.data.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert b"request body not received in time" in transport.data
        protocol.connection_lost(None)  # what the transport does once closed
        await settle()
        assert SEEN[-1] == {"type": "http.disconnect"}

    run(scenario)


def test_a_kept_alive_idle_connection_is_left_to_the_keep_alive_timeout() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.data_received(post(b"{}"))
        await settle()
        for now in (0.0, 50.0, 500.0):
            protocol.sweep(now)
        assert not transport.closed

    run(scenario)


def test_a_second_request_on_a_kept_alive_connection_gets_its_own_clock() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.data_received(post(b"{}"))
        await settle()
        protocol.sweep(0.0)  # idle
        protocol.data_received(b"GET /health HTTP/1.1\r\n")
        assert protocol.phase() == "head"
        protocol.sweep(5.0)
        protocol.sweep(14.0)
        assert not transport.closed
        protocol.sweep(15.0)
        assert b"408" in transport.data

    run(scenario)


def test_answers_left_unread_drop_their_connection_after_the_send_timeout() -> None:
    """Found by a hostile-client probe: uvicorn waits for a client that does not read forever,
    its request in flight all along (the sweep saw it idle), so 70 connections of pipelined
    GETs never read made a worker shed every request for as long as they stayed open. Reading
    a byte now and then does not restart the clock; reading enough to resume writing does."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.pause_writing()  # the client reads nothing: the buffer stays over high water
        transport.buffered = 200_000
        protocol.data_received(post(b"{}"))
        await settle()
        try:
            protocol.sweep(0.0)
            protocol.sweep(20.0)
            transport.buffered = 199_999  # a byte read: the clock goes on
            protocol.sweep(21.0)
            assert not transport.aborted
            protocol.resume_writing()  # read down to the low-water mark, then paused at once
            protocol.pause_writing()
            protocol.sweep(22.0)
            transport.buffered = 199_000  # a little read: not enough to resume writing
            protocol.sweep(51.0)
            assert not transport.aborted
            protocol.sweep(52.0)
            assert transport.aborted
        finally:
            protocol.connection_lost(None)  # what the transport does once aborted: the send goes on
        await settle()
        assert not protocol.tasks

    run(scenario)


def test_a_request_whose_client_reads_nothing_starts_once_it_does() -> None:
    """Found by a hostile-client probe: started at once, its app ran and its answer waited to be
    written, in flight all along: 70 connections of pipelined GETs never read took a worker's 64
    in-flight places, and it shed every other request."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.data_received(post(b"{}") + post(b"[1]"))
        await settle()
        assert transport.data.count(b"HTTP/1.1 200 OK") == 2
        protocol.pause_writing()  # the client has not read them: the buffer is over high water
        protocol.data_received(post(b"[1,2]") + post(b"[1,2,3]"))
        await settle()
        started, reading = bool(protocol.tasks), transport.reading
        protocol.resume_writing()  # it has read them
        await settle()
        assert not started
        assert not reading
        assert transport.data.count(b"HTTP/1.1 200 OK") == 4
        assert transport.data.endswith(b"\r\n\r\n7")  # in order: the last one's body, 7 bytes

    run(scenario)


def test_a_close_waiting_on_an_unread_answer_is_dropped_after_the_send_timeout() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.data_received(post(b"{}"))
        await settle()
        transport.close()  # a 408 written, say: asyncio closes once the buffer is sent
        transport.buffered = 100
        protocol.sweep(0.0)
        protocol.sweep(20.0)
        transport.buffered = 60  # the client read some (nothing is in flight): the clock restarts
        protocol.sweep(21.0)
        protocol.sweep(50.0)
        assert not transport.aborted
        protocol.sweep(51.0)
        assert transport.aborted

    run(scenario)


async def closed_once_quiet(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
    """Shut down: the connection is closed once it has been quiet for DRAIN_QUIET, not before (a
    request may be on its way)."""
    protocol.shutdown()
    await asyncio.sleep(DRAIN_QUIET - DRAIN_INTERVAL)
    assert not transport.closed
    await asyncio.sleep(DRAIN_INTERVAL * 2.5)
    assert transport.closed


def test_drain_closes_an_idle_connection_only_after_a_quiet_interval() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.data_received(post(b"{}"))
        await settle()
        await closed_once_quiet(protocol, transport)

    run(scenario)


def test_drain_answers_a_request_arriving_meanwhile_with_connection_close() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.data_received(post(b"{}"))
        await settle()
        protocol.shutdown()
        protocol.data_received(post(b"[1,", length=5))  # arrives during the drain
        await asyncio.sleep(DRAIN_INTERVAL * 1.5)
        assert not transport.closed
        protocol.data_received(b"2]")
        await settle()
        second = transport.data.split(b"HTTP/1.1 200 ")[-1]
        assert b"connection: close" in second
        assert transport.closed

    run(scenario)


def test_drain_serves_a_request_arriving_on_a_just_accepted_connection() -> None:
    """Accepted just before the worker stopped, nothing received yet: the client's first request
    may be on its way, so the connection is not closed under it."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.shutdown()
        await asyncio.sleep(DRAIN_INTERVAL * 1.5)
        assert not transport.closed
        protocol.data_received(post(b"{}"))
        await settle()
        assert transport.data.startswith(b"HTTP/1.1 200 ")
        assert b"connection: close" in transport.data  # then the client reconnects elsewhere
        assert transport.closed

    run(scenario)


def test_drain_closes_a_just_accepted_connection_that_stays_quiet() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        await closed_once_quiet(protocol, transport)

    run(scenario)


def test_a_connection_made_after_shutdown_began_drains_its_first_request() -> None:
    """Accepted just before the listener closed, made after uvicorn asked its connections to
    shut down: its request is answered with `Connection: close`, not kept alive until
    uvicorn's graceful timeout cancels a later one."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.data_received(post(b"{}"))
        await settle()
        assert transport.data.startswith(b"HTTP/1.1 200 ")
        assert b"connection: close" in transport.data
        assert transport.closed

    run(scenario, draining=True)


def test_a_connection_made_after_shutdown_began_is_closed_once_quiet() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.shutdown()  # uvicorn's own call too: still one drain
        await asyncio.sleep(DRAIN_QUIET + DRAIN_INTERVAL * 1.5)
        assert transport.closed

    run(scenario, draining=True)


def test_a_draining_server_keeps_connections_alive_for_its_linger_then_closes_them() -> None:
    """The first worker to stop closed its connections at once, and its clients' reconnects
    met the listener the other worker was closing: the kernel resets what is queued then, a
    request sent on each (app.server.protocol.DRAIN_LINGER)."""
    linger = 4 * DRAIN_INTERVAL

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.shutdown()
        protocol.data_received(post(b"{}"))
        await settle()
        assert transport.data.startswith(b"HTTP/1.1 200 ")
        assert b"connection: close" not in transport.data
        await asyncio.sleep(linger / 2)
        assert not transport.closed  # idle, but kept for the linger
        await asyncio.sleep(linger / 2 + DRAIN_INTERVAL)
        protocol.data_received(post(b"{}"))
        await settle()
        assert b"connection: close" in transport.data.split(b"HTTP/1.1 200 ")[-1]
        assert transport.closed

    run(scenario, draining=True, linger=linger)


def test_a_draining_server_closes_an_idle_connection_after_its_linger_and_quiet() -> None:
    linger = 3 * DRAIN_INTERVAL

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.shutdown()
        await asyncio.sleep(linger + DRAIN_QUIET - DRAIN_INTERVAL)
        assert not transport.closed
        await asyncio.sleep(DRAIN_INTERVAL * 2.5)
        assert transport.closed

    run(scenario, draining=True, linger=linger)


def test_a_draining_server_leaves_an_idle_connection_open_for_its_client_to_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Closed about 1 s into the drain, an idle keep-alive connection raced the request its
    pooled client sent on it then (a reset, or "other side closed"): it is left open until
    DRAIN_IDLE_HOLD after its last answer, a request meanwhile answered `Connection: close`."""
    hold = 8 * DRAIN_INTERVAL
    monkeypatch.setattr(protocol_module, "DRAIN_IDLE_HOLD", hold)

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.data_received(post(b"{}"))
        await settle()
        assert b"connection: close" not in transport.data
        begin_drain(protocol.server_state, 0.0, 10.0)  # as app.server.worker stops
        protocol.shutdown()
        await asyncio.sleep(DRAIN_QUIET + 2 * DRAIN_INTERVAL)
        assert not transport.closed  # quiet, but not yet past the hold
        await asyncio.sleep(hold - DRAIN_QUIET)
        assert transport.closed

    run(scenario)


def test_a_draining_server_sends_a_request_on_a_held_connection_closing_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(protocol_module, "DRAIN_IDLE_HOLD", 10.0)

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.shutdown()
        await asyncio.sleep(DRAIN_QUIET + 2 * DRAIN_INTERVAL)
        assert not transport.closed
        protocol.data_received(post(b"{}"))
        await settle()
        assert transport.data.startswith(b"HTTP/1.1 200 ")
        assert b"connection: close" in transport.data
        assert transport.closed

    run(scenario, draining=True, hold=10.0)


def test_a_draining_server_closes_held_connections_when_its_budget_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Within uvicorn's graceful timeout, which would otherwise cancel and log an error."""
    monkeypatch.setattr(protocol_module, "DRAIN_IDLE_HOLD", 10.0)
    budget = DRAIN_QUIET + 3 * DRAIN_INTERVAL

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.shutdown()
        await asyncio.sleep(budget - DRAIN_INTERVAL)
        assert not transport.closed
        await asyncio.sleep(3 * DRAIN_INTERVAL)
        assert transport.closed

    run(scenario, draining=True, hold=budget)


def test_a_draining_server_closes_a_connection_idle_for_longer_than_the_hold_once_quiet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its client has not closed it in DRAIN_IDLE_HOLD: one that keeps idle connections this
    long races any close alike, so it is not held."""
    monkeypatch.setattr(protocol_module, "DRAIN_IDLE_HOLD", 2 * DRAIN_INTERVAL)

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        await asyncio.sleep(3 * DRAIN_INTERVAL)
        begin_drain(protocol.server_state, 0.0, 10.0)
        await closed_once_quiet(protocol, transport)

    run(scenario)


def test_a_response_whose_head_is_out_keeps_its_connection_when_the_drain_begins() -> None:
    """Its head went out without `Connection: close`: closing after it would cut the client's
    next request, sent on a connection it was told stays open. The next answer closes it."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        BODY_GATE.append(asyncio.Event())
        protocol.data_received(post(b"{}"))
        await settle()
        assert transport.data == b""  # the head waits for its body (CoalescingTransport)
        protocol.shutdown()
        BODY_GATE[0].set()
        await settle()
        assert transport.data.startswith(b"HTTP/1.1 200 ")
        assert b"connection: close" not in transport.data
        assert not transport.closed
        BODY_GATE.clear()
        protocol.data_received(post(b"{}"))
        await settle()
        assert b"connection: close" in transport.data.split(b"HTTP/1.1 200 ")[-1]
        assert transport.closed

    run(scenario)


def test_a_connection_of_a_running_server_is_kept_alive() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        await asyncio.sleep(DRAIN_QUIET + DRAIN_INTERVAL * 1.5)
        assert not transport.closed
        protocol.data_received(post(b"{}"))
        await settle()
        assert b"connection: close" not in transport.data
        assert not transport.closed

    run(scenario)


def test_the_uvicorn_internals_the_protocol_relies_on_are_there() -> None:
    """app.server.protocol subclasses uvicorn's HttpToolsProtocol and reads its per-connection
    state; pyproject pins a tested uvicorn range, and this fails loudly the day a release changes
    it."""
    import inspect

    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

    for method in (
        "data_received", "connection_made", "connection_lost", "shutdown", "on_headers_complete",
        "_start_asgi_task", "on_header",
    ):  # fmt: skip
        assert callable(getattr(HttpToolsProtocol, method, None)), f"uvicorn lost {method}"
    protocol_source = inspect.getsource(HttpToolsProtocol)
    for attribute in (
        "cycle", "scope", "connections", "tasks", "transport", "headers", "url", "loop",
        "logger", "client", "server_state", "flow", "pipeline",
    ):  # fmt: skip
        assigned = re.search(rf"self\.{attribute}(: [^=\n]+)? =", protocol_source)
        assert assigned, f"HttpToolsProtocol lost {attribute}"
    cycle_source = inspect.getsource(RequestResponseCycle)
    for attribute in (
        "scope", "response_started", "response_complete", "more_body", "disconnected",
        "keep_alive",
    ):  # fmt: skip
        assert f"self.{attribute} =" in cycle_source, f"RequestResponseCycle lost {attribute}"
    # the bound stops counting a task once its response is complete (`on_response_complete`,
    # which uvicorn's cycle calls from within the task)
    assert "self.on_response()" in cycle_source, "RequestResponseCycle no longer calls on_response"
    assert callable(getattr(HttpToolsProtocol, "on_response_complete", None))
    # a held request: its connection's reading resumes, and a request pipelined behind it starts,
    # when its answer completes; the parser skips the body of a cycle already complete
    answered = inspect.getsource(HttpToolsProtocol.on_response_complete)
    assert "self.flow.resume_reading()" in answered
    assert "self.pipeline.pop()" in answered
    assert "self.cycle.response_complete" in inspect.getsource(HttpToolsProtocol.on_body)
    # data_received is uvicorn's, restated, but for an Upgrade it does not take
    # (app.server.upgrade): the cycle gets its body back through uvicorn's body callbacks
    received = inspect.getsource(HttpToolsProtocol.data_received)
    for line in (
        "self._unset_keepalive_if_required()", "self.parser.feed_data(data)",
        "except httptools.HttpParserError:", "self.send_400_response(msg)",
        "except httptools.HttpParserUpgrade:", "if self._should_upgrade():",
        "self.handle_websocket_upgrade()", "self._unsupported_upgrade_warning()",
    ):  # fmt: skip
        assert line in received, f"uvicorn's data_received changed: {line}"
    # on_header is uvicorn's, restated, and the Host fields counted
    header = inspect.getsource(HttpToolsProtocol.on_header)
    for line in (
        "name = name.lower()", 'value = value.rstrip(b" \\t")',
        'if name == b"expect" and value.lower() == b"100-continue":',
        "self.expect_100_continue = True", "self.headers.append((name, value))",
    ):  # fmt: skip
        assert line in header, f"uvicorn's on_header changed: {line}"
    code = [line for line in header.strip().splitlines() if not line.strip().startswith("#")]
    assert len(code) == 6, "uvicorn's on_header does more than it did"
    # on_body too, and the chunk callback is the protocol's own (uvicorn would be shadowed)
    body = inspect.getsource(HttpToolsProtocol.on_body)
    for line in (
        "if (self.parser.should_upgrade() and self._should_upgrade()) or self.cycle.response_complete:",
        "self.cycle.body += body", "if len(self.cycle.body) > HIGH_WATER_LIMIT:",
        "self.flow.pause_reading()", "self.cycle.message_event.set()",
    ):  # fmt: skip
        assert line in body, f"uvicorn's on_body changed: {line}"
    assert len(body.strip().splitlines()) == 7, "uvicorn's on_body does more than it did"
    assert not hasattr(HttpToolsProtocol, "on_chunk_header"), "uvicorn has its own now"
    assert "self.parser = httptools.HttpRequestParser(self)" in protocol_source
    assert "set_dangerous_leniencies(lenient_data_after_close=True)" in protocol_source
    for callback in (HttpToolsProtocol.on_body, HttpToolsProtocol.on_message_complete):
        assert "self.cycle.message_event.set()" in inspect.getsource(callback)
    # a half-closed connection: its last request, no longer kept alive, closes it once answered
    assert "if not self.keep_alive:" in inspect.getsource(RequestResponseCycle.send)


def test_field_values_reach_the_app_without_trailing_whitespace() -> None:
    """RFC 9110 §5.5: a field value has no trailing whitespace, which llhttp keeps. Kept, a
    client's `X-Request-ID: abc ` was no valid ID, and its answer and log lines carried a
    generated one instead; `Expect: 100-continue ` went unanswered."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        extra = b"X-Request-ID: abc-1 \t\r\nExpect: 100-continue \r\nX-Empty: \r\n"
        protocol.data_received(post(b"{}", extra=extra))
        await settle()
        headers = protocol.cycle.scope["headers"]
        assert (b"x-request-id", b"abc-1") in headers
        assert (b"x-empty", b"") in headers
        assert transport.data.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 ")

    run(scenario)


def test_a_request_past_the_in_flight_bound_is_answered_503_at_once() -> None:
    """Requests of this worker still unfinished (uvicorn's task set) when a head completes: at
    `max_in_flight`, the request gets app.server.overload's 503 without the app; below it, the
    app."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        loop = asyncio.get_running_loop()
        unfinished = {loop.create_future() for _ in range(2)}
        protocol.tasks.update(unfinished)  # type: ignore[arg-type]
        protocol.data_received(post(b"{}", extra=b"X-Request-ID: mine-1\r\n"))
        await settle()
        assert transport.data.startswith(b"HTTP/1.1 503 ")
        assert b"\r\nretry-after: 1\r\n" in transport.data
        assert b"\r\nx-request-id: mine-1\r\n" in transport.data
        assert transport.data.endswith(_BODY)
        assert SEEN == []  # the app never ran
        assert not transport.closed  # kept alive
        protocol.tasks.difference_update(unfinished)
        transport.data = b""
        protocol.data_received(post(b"{}"))  # the next request on the kept-alive connection
        await settle()
        assert transport.data.startswith(b"HTTP/1.1 200 ")  # not held: the hold is off
        assert SEEN

    run(scenario, Limits(max_in_flight=2, hold_early_retries=False))


CROWDED = Limits(
    max_in_flight=6,
    hold_early_retries=False,
    crowded_connections=4,
    crowded_in_flight=2,
    crowded_window=2.0,
)
"""A worker crowded past 4 busy connections: then 2 requests in flight at most, else 6."""
Connection = tuple[GuardedHttpToolsProtocol, FakeTransport]


class Worker:
    """Connections of one worker (one uvicorn server state), on fake transports."""

    def __init__(self, limits: Limits) -> None:
        self.config = Config(app=reading_app, lifespan="off", log_config=None)
        self.config.load()
        self.state = ServerState()
        self.protocol = guarded_protocol(limits)
        self.limits = limits
        self.unfinished: set[asyncio.Future[None]] = set()
        """Requests in flight whose connections are not among these: the worker's others."""

    def connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        protocol = self.protocol(self.config, self.state, {}, loop)
        transport = FakeTransport()
        protocol.connection_made(transport)
        return protocol, transport

    def in_flight(self, count: int) -> None:
        """`count` requests of other connections in flight from now on."""
        self.state.tasks.difference_update(self.unfinished)
        loop = asyncio.get_running_loop()
        self.unfinished = {loop.create_future() for _ in range(count)}
        self.state.tasks.update(self.unfinished)  # type: ignore[arg-type]

    async def send(self, connection: Connection, request: bytes = post(b"{}")) -> bytes:
        """The status line of the answer to `request` (b"" while the app waits for its body)."""
        protocol, transport = connection
        transport.data = b""
        protocol.data_received(request)
        await settle()
        return transport.data.split(b"\r\n", 1)[0]

    async def refused(self, count: int) -> list[Connection]:
        """`count` connections, each answered 503 once (the worker full meanwhile), then idle."""
        self.in_flight(self.limits.max_in_flight)
        connections = [self.connect() for _ in range(count)]
        for connection in connections:
            assert await self.send(connection) == b"HTTP/1.1 503 Service Unavailable"
        self.in_flight(0)
        return connections

    async def crowded(self) -> bool:
        """Whether a request on one more connection, with at least `crowded_in_flight` and
        fewer than `max_in_flight` others in flight, is shed: whether the worker has
        `crowded_connections` busy connections or more. The probe's connection is closed
        after, leaving nothing behind."""
        self.in_flight(0)
        started = in_flight(self.state)()  # by these connections
        self.in_flight(max(0, self.limits.crowded_in_flight - started))
        assert in_flight(self.state)() < self.limits.max_in_flight
        probe = self.connect()
        status = await self.send(probe)
        probe[0].connection_lost(None)
        self.in_flight(0)
        assert status in (b"HTTP/1.1 200 OK", b"HTTP/1.1 503 Service Unavailable")
        return status.startswith(b"HTTP/1.1 503")

    def sweep(self, connections: list[Connection], after: float) -> None:
        """The once-a-second sweep, `after` s from now."""
        now = asyncio.get_running_loop().time() + after
        for protocol, _ in connections:
            protocol.sweep(now)


def on_worker(scenario: Callable[[Worker], Awaitable[None]], limits: Limits = CROWDED) -> None:
    async def main() -> None:
        worker = Worker(limits)
        await scenario(worker)
        for connection in list(worker.state.connections):
            connection.connection_lost(None)  # the apps waiting for a body read a disconnect
        await settle()

    try:
        asyncio.run(main())
    finally:
        GATE.clear()
        BODY_GATE.clear()


BOUNDED = replace(LIMITS, max_connections=3)


def closed_to_make_room() -> dict[str, float]:
    """`http_connections_closed_total` by its `closed` label so far (this process's metrics)."""
    return {
        sample.labels["closed"]: sample.value
        for family in text_string_to_metric_families(exposition()[0].decode())
        for sample in family.samples
        if sample.name == "http_connections_closed_total"
    }


def closed(connections: list[Connection]) -> list[bool]:
    """Which of `connections` were closed; each closed one is then lost, as the loop does."""
    result = []
    for protocol, transport in connections:
        result.append(transport.closed)
        if transport.closed and protocol in protocol.connections:
            protocol.connection_lost(None)
    return result


def test_past_max_connections_the_one_waiting_longest_for_a_request_is_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """1,100 connections sending nothing took all of a worker's descriptors (ulimit 1,024): its
    other ports and `/predict`'s new connections were refused until the head timeout. Made
    room for: first the connections never answered (nothing sent, or a head still coming in),
    oldest first; then idle keep-alive ones, the longest idle first."""

    before = closed_to_make_room()

    async def scenario(worker: Worker) -> None:
        kept_alive = worker.connect()
        assert await worker.send(kept_alive) == b"HTTP/1.1 200 OK"
        silent, trickling = worker.connect(), worker.connect()
        trickling[0].data_received(b"POST /predict HTTP/1.1\r\nHo")
        with caplog.at_level(logging.WARNING):
            fourth = worker.connect()
        assert closed([kept_alive, silent, trickling, fourth]) == [False, True, False, False]
        assert "1 connection(s) closed to stay within MAX_CONNECTIONS=3" in caplog.text
        fifth = worker.connect()
        assert closed([kept_alive, trickling, fourth, fifth]) == [False, True, False, False]
        for connection in (fourth, fifth):
            assert await worker.send(connection) == b"HTTP/1.1 200 OK"
        sixth = worker.connect()  # every other one answered: the longest idle goes
        assert closed([kept_alive, fourth, fifth, sixth]) == [True, False, False, False]

    on_worker(scenario, BOUNDED)
    after = closed_to_make_room()
    assert {kind: after.get(kind, 0.0) - before.get(kind, 0.0) for kind in CLOSED_KINDS} == {
        "unanswered": 2,
        "keep_alive": 1,
        "new": 0,
    }


def test_a_connection_with_a_request_in_progress_is_never_closed_to_make_room() -> None:
    """Every one has a request in progress (a body still coming): the new one is closed. Once
    one of them is answered, it waits again, and goes first."""

    before = closed_to_make_room()

    async def scenario(worker: Worker) -> None:
        busy = [worker.connect() for _ in range(3)]
        for connection in busy:
            assert await worker.send(connection, post(b"{}", length=4)) == b""  # body awaited
        assert closed([*busy, worker.connect()]) == [False, False, False, True]
        assert await worker.send(busy[1], b"{}") == b"HTTP/1.1 200 OK"  # body done, answered
        assert closed([*busy, worker.connect()]) == [False, True, False, False]

    on_worker(scenario, BOUNDED)
    after = closed_to_make_room()
    assert after["new"] - before.get("new", 0.0) == 1


def test_the_log_says_how_many_were_closed_at_most_once_a_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario(worker: Worker) -> None:
        with caplog.at_level(logging.WARNING):
            for _ in range(10):
                closed([worker.connect()])
        lines = [r.message for r in caplog.records if "MAX_CONNECTIONS" in r.message]
        assert lines == [
            "1 connection(s) closed to stay within MAX_CONNECTIONS=3 (never-answered ones first, "
            "then idle keep-alive ones, else the new one)"
        ]

    on_worker(scenario, BOUNDED)


def test_a_flood_of_refusals_logs_a_bounded_number_of_lines_and_one_summary(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each answer of the HTTP layer had its warning line: one client's malformed requests
    wrote thousands a second. Past the budget they are summed up, a window later."""
    monkeypatch.setattr(protocol_module, "REFUSALS_LOGGED_PER_SECOND", 3)
    monkeypatch.setattr(log_budget, "WINDOW", 0.05)

    async def scenario(worker: Worker) -> None:
        with caplog.at_level(logging.WARNING):
            for _ in range(10):
                assert await worker.send(worker.connect(), b"GARBAGE\r\n\r\n") == (
                    b"HTTP/1.1 400 Bad Request"
                )
            await asyncio.sleep(0.1)

    on_worker(scenario)
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("400 ")]
    assert len(refusals) == 3
    assert [r.getMessage() for r in caplog.records if "one by one" in r.getMessage()] == [
        "7 more answers of the HTTP layer within 0.05 s not logged one by one (400: 7); "
        "/metrics counts each"
    ]


def test_requests_waiting_for_their_body_are_not_in_flight() -> None:
    """Clients trickling their bodies (or never sending them, until the body timeout) cost the
    worker no work: past the bound's count of them, a whole request is still served. Before,
    65 such clients a worker made it shed every other request."""

    async def scenario(worker: Worker) -> None:
        count = in_flight(worker.state)
        uploading = [worker.connect() for _ in range(3)]
        for connection in uploading:
            assert await worker.send(connection, post(b"{}", length=10)) == b""
        assert count() == 0
        assert await worker.send(worker.connect()) == b"HTTP/1.1 200 OK"
        gate = asyncio.Event()
        GATE.append(gate)
        protocol, transport = uploading[0]
        protocol.data_received(b"x" * 8)  # the rest of its body: in flight from now on
        await settle()
        assert count() == 1
        assert await worker.send(worker.connect()) == b"HTTP/1.1 503 Service Unavailable"
        gate.set()
        await settle()
        assert transport.data.startswith(b"HTTP/1.1 200 ")
        assert count() == 0
        uploading[1][0].connection_lost(None)  # a client gone before its body: nothing left
        await settle()  # its app reads the disconnect
        assert count() == 0
        assert len(worker.state.tasks) == 1  # the last uploader's, not counted

    on_worker(scenario, Limits(max_in_flight=1))


@pytest.mark.parametrize("path", sorted(UNSHED_PATHS))
def test_probes_and_the_scrape_are_never_shed_nor_held(path: str) -> None:
    """A liveness or readiness probe answered 503 tells Kubernetes to restart the worker's pod,
    or take it out of the endpoints, moving its load onto the others."""

    async def scenario(worker: Worker) -> None:
        probe = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        (connection,) = await worker.refused(1)
        worker.in_flight(worker.limits.max_in_flight)  # full
        assert await worker.send(connection, probe) == b"HTTP/1.1 200 OK"  # neither held nor shed
        assert await worker.send(worker.connect(), probe) == b"HTTP/1.1 200 OK"
        assert await worker.send(worker.connect()) == b"HTTP/1.1 503 Service Unavailable"
        worker.in_flight(0)

    on_worker(scenario, replace(CROWDED, hold_early_retries=True))


def test_a_shed_answer_to_a_head_request_has_no_body() -> None:
    """On a kept-alive connection the client would read the body as its next answer's start."""

    async def scenario(worker: Worker) -> None:
        worker.in_flight(worker.limits.max_in_flight)
        protocol, transport = worker.connect()
        protocol.data_received(b"HEAD /predict HTTP/1.1\r\nHost: x\r\n\r\n")
        await settle()
        head, body = transport.data.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 503 ")
        assert b"\r\ncontent-length: %d\r\n" % len(_BODY) in head
        assert body == b""
        assert not transport.closed
        worker.in_flight(0)

    on_worker(scenario, replace(CROWDED, hold_early_retries=False))


@pytest.mark.parametrize(("pool", "admitted"), [("idle", 4), ("refused", 2)])
def test_a_burst_is_bounded_by_the_busy_connections_not_the_open_ones(
    pool: str, admitted: int
) -> None:
    """A burst of 4 requests (as many as `crowded_connections`, under `max_in_flight`) on a
    pool of 10 keep-alive connections: idle (each answered 200 once), all 4 are served; each
    answered 503 within the window (clients waiting out the Retry-After), the worker is
    crowded and serves 2 (`crowded_in_flight`). Counting open connections shed both."""

    async def scenario(worker: Worker) -> None:
        if pool == "idle":
            connections = [worker.connect() for _ in range(10)]
            for connection in connections:
                assert await worker.send(connection) == b"HTTP/1.1 200 OK"
        else:
            connections = await worker.refused(10)
        gate = asyncio.Event()
        GATE.append(gate)  # the apps answer once it is set: in flight until then
        statuses = [await worker.send(c) for c in connections[:4]]
        assert statuses == [b""] * admitted + [b"HTTP/1.1 503 Service Unavailable"] * (4 - admitted)
        gate.set()
        await settle()
        for _, transport in connections[:admitted]:
            assert transport.data.startswith(b"HTTP/1.1 200 ")

    on_worker(scenario)


@pytest.mark.parametrize("busy", [3, 4])
def test_a_worker_is_crowded_past_crowded_connections_busy_ones(busy: int) -> None:
    """With 3 busy connections, the probe's makes 4 = `crowded_connections`: not crowded; with
    4, 5: crowded. However many idle ones it also holds."""

    async def scenario(worker: Worker) -> None:
        for connection in [worker.connect() for _ in range(20)]:
            assert await worker.send(connection) == b"HTTP/1.1 200 OK"  # idle from now on
        await worker.refused(busy)
        assert await worker.crowded() is (busy == 4)

    on_worker(scenario)


def test_a_closed_connection_is_no_longer_busy() -> None:
    async def scenario(worker: Worker) -> None:
        refused = await worker.refused(4)
        assert await worker.crowded()
        refused[0][0].connection_lost(None)
        assert not await worker.crowded()

    on_worker(scenario)


def test_a_connection_the_app_answers_is_no_longer_busy_at_once() -> None:
    """A refused client that comes back and is served waits no more: it stops counting then,
    not at the end of the window."""

    async def scenario(worker: Worker) -> None:
        refused = await worker.refused(4)
        assert await worker.send(refused[0]) == b"HTTP/1.1 200 OK"
        assert not await worker.crowded()

    on_worker(scenario)


def test_a_refused_connection_is_busy_until_the_window_has_passed() -> None:
    async def scenario(worker: Worker) -> None:
        refused = await worker.refused(4)
        worker.sweep(refused, CROWDED.crowded_window - 0.1)
        assert await worker.crowded()  # clients still waiting out their Retry-After
        worker.sweep(refused, CROWDED.crowded_window + 0.1)
        assert not await worker.crowded()  # gone quiet: idle connections

    on_worker(scenario)


@pytest.mark.parametrize("waiting", ["in progress", "held"])
def test_a_connection_waiting_for_its_answer_stays_busy_past_the_window(waiting: str) -> None:
    """A request whose app still waits for its body, or one held until its Retry-After."""

    async def scenario(worker: Worker) -> None:
        if waiting == "in progress":
            connections = [worker.connect() for _ in range(4)]
            for connection in connections:
                assert await worker.send(connection, post(b"{}", length=10)) == b""
        else:
            connections = await worker.refused(4)
            for connection in connections:
                assert await worker.send(connection) == b""  # re-sent at once: held
        worker.sweep(connections, CROWDED.crowded_window + 10)
        assert await worker.crowded()

    on_worker(
        scenario, CROWDED if waiting == "in progress" else replace(CROWDED, hold_early_retries=True)
    )


def test_a_request_shed_behind_a_pipelined_one_keeps_its_connection_busy() -> None:
    """The second of two pipelined requests is started, and shed, from the first's task."""

    async def scenario(worker: Worker) -> None:
        refused = await worker.refused(3)
        protocol, transport = pipelining = worker.connect()
        transport.data = b""
        protocol.data_received(post(b"{}") + post(b"{}"))
        worker.in_flight(worker.limits.max_in_flight)  # full once the first is answered
        await settle()
        assert transport.data.count(b"HTTP/1.1 200 ") == transport.data.count(b"HTTP/1.1 503 ") == 1
        worker.sweep([*refused, pipelining], CROWDED.crowded_window - 0.1)
        worker.in_flight(0)
        assert await worker.crowded()  # 3 + the pipelining one

    on_worker(scenario)


def test_the_crowded_bound_never_raises_the_bound() -> None:
    limits = Limits(max_in_flight=8, crowded_connections=10, crowded_in_flight=16)
    assert limits.bound(10) == limits.bound(11) == 8
    assert Limits(max_in_flight=8, crowded_connections=10, crowded_in_flight=3).bound(11) == 3


def test_in_flight_counts_what_the_bound_counts() -> None:
    """app.inference.microbatch's count of the worker's requests: started (their task made, even not
    yet run) and not answered, as the in-flight bound counts them."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        count = in_flight(protocol.server_state)
        assert count() == 0
        unfinished = {asyncio.get_running_loop().create_future() for _ in range(2)}
        protocol.tasks.update(unfinished)  # type: ignore[arg-type]
        assert count() == 2
        protocol.data_received(post(b"{}"))
        assert count() == 3  # its task is made, not yet run
        await settle()
        assert transport.data.startswith(b"HTTP/1.1 200 ")
        assert count() == 2  # answered: no longer in flight
        protocol.tasks.difference_update(unfinished)
        assert count() == 0

    run(scenario)


def counted(route: str, status: str, method: str | None = None) -> float:
    """The answers counted under `route` with `status` (and `method`, if given) so far (this
    process's metrics)."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition()[0].decode())
        for sample in family.samples
        if sample.name == "http_requests_total"
        and sample.labels.get("route") == route
        and sample.labels.get("status") == status
        and method in (None, sample.labels.get("method"))
    )


def shed_count() -> float:
    """The 503s counted under the shed route so far."""
    return counted(SHED_ROUTE, "503")


async def shed_once(
    protocol: GuardedHttpToolsProtocol, transport: FakeTransport, extra: bytes = b""
) -> float:
    """One request shed at once (a request of another connection in flight, bound 1), then that
    request gone: the bound no longer sheds. Returns when the 503 was written (loop time).
    `extra`: header lines of the shed request."""
    unfinished = asyncio.get_running_loop().create_future()
    protocol.tasks.add(unfinished)  # type: ignore[arg-type]
    protocol.data_received(post(b"{}", extra=extra))
    shed_at = asyncio.get_running_loop().time()
    await settle()
    assert transport.data.startswith(b"HTTP/1.1 503 ")  # the first: at once
    assert not transport.closed  # kept alive
    assert transport.reading
    protocol.tasks.discard(unfinished)
    transport.data = b""
    return shed_at


def test_a_request_sent_before_the_retry_after_elapsed_is_held_until_it_has() -> None:
    """The connection's first shed request is answered at once; the next, re-sent at once,
    waits out the Retry-After unserved (room or not), then gets its 503 on the kept-alive
    connection. What the client sends meanwhile is not parsed until then: a request in it,
    sent before that Retry-After too, is held in turn."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        loop = asyncio.get_running_loop()
        shed_at = await shed_once(protocol, transport)
        still_full = loop.create_future()  # the worker still past its bound at the release
        protocol.tasks.add(still_full)  # type: ignore[arg-type]
        shed_before = shed_count()
        protocol.data_received(post(b"{}", extra=b"X-Request-ID: early-2\r\n"))
        await settle()
        assert transport.data == b""  # held
        assert transport.reading  # still read: a client that goes away is noticed
        assert protocol.tasks == {still_full}  # not in flight, no app
        assert SEEN == []
        held = protocol.cycle
        protocol.data_received(post(b"{}", extra=b"X-Request-ID: early-3\r\n"))
        await settle()
        assert protocol.cycle is held  # kept, not parsed
        assert not protocol.pipeline
        assert not transport.reading  # and nothing more is read
        while not transport.data and loop.time() < shed_at + 3 * RETRY_AFTER:
            await asyncio.sleep(0.01)
        answered = loop.time()
        assert answered >= shed_at + RETRY_AFTER  # no sooner than the Retry-After
        assert transport.data.startswith(b"HTTP/1.1 503 ")
        assert transport.data.count(b"HTTP/1.1 ") == 1
        assert b"\r\nretry-after: 1\r\n" in transport.data
        assert b"\r\nx-request-id: early-2\r\n" in transport.data
        assert b"connection: close" not in transport.data
        assert not transport.closed  # kept alive, read again
        assert transport.reading
        assert SEEN == []
        assert shed_count() == shed_before + 1
        assert protocol.cycle is not held  # the kept request is parsed now, and held in turn
        assert protocol._held is protocol.cycle
        transport.data = b""
        protocol.shutdown()  # the worker stops: the held answer goes at once, closing
        assert transport.data.startswith(b"HTTP/1.1 503 ")
        assert b"\r\nx-request-id: early-3\r\n" in transport.data
        assert b"\r\nconnection: close\r\n" in transport.data
        assert transport.closed
        protocol.tasks.discard(still_full)

    run(scenario, Limits(max_in_flight=1))


def test_a_held_answer_given_once_the_worker_has_room_starts_no_new_hold() -> None:
    """A client sending steadily on one kept-alive connection (a pool, a proxy) is held at most
    once after an overload: the held answer's 503 starts no new Retry-After when the worker has
    room by then, so the request the client sent meanwhile, and the next, are served."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        loop = asyncio.get_running_loop()
        shed_at = await shed_once(protocol, transport)  # the worker has room from here on
        protocol.data_received(post(b"{}", extra=b"X-Request-ID: early-2\r\n"))
        await settle()
        assert transport.data == b""  # held
        protocol.data_received(post(b"{}", extra=b"X-Request-ID: sent-while-held\r\n"))
        while b"HTTP/1.1 200 " not in transport.data and loop.time() < shed_at + 3 * RETRY_AFTER:
            await asyncio.sleep(0.01)
        assert transport.data.startswith(b"HTTP/1.1 503 ")
        assert b"\r\nx-request-id: early-2\r\n" in transport.data
        assert transport.data.count(b"HTTP/1.1 200 ") == 1  # the one sent while held: served
        transport.data = b""
        protocol.data_received(post(b"{}"))  # at once: no Retry-After pending
        await settle()
        assert transport.data.startswith(b"HTTP/1.1 200 ")
        assert not transport.closed

    run(scenario, Limits(max_in_flight=1))


@pytest.mark.parametrize(
    "field", [b"X-Forwarded-For", b"X-Real-IP", b"Forwarded"], ids=["xff", "real-ip", "forwarded"]
)
def test_a_proxy_s_next_client_is_not_held_for_another_client_s_retry_after(field: bytes) -> None:
    """Behind a proxy that reuses its connections (nginx's upstream keep-alive), the request
    after a 503 on one is often another client's: served at once, not held for the Retry-After
    of a 503 it never got. The client that got the 503, re-sending before its Retry-After has
    elapsed, is still held."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        await shed_once(protocol, transport, extra=field + b": 203.0.113.1\r\n")
        protocol.data_received(post(b"{}", extra=field + b": 203.0.113.2\r\n"))
        await settle()
        assert transport.data.startswith(b"HTTP/1.1 200 ")  # another client: not held
        transport.data = b""
        protocol.data_received(post(b"{}", extra=field + b": 203.0.113.1\r\n"))
        await settle()
        assert transport.data == b""  # the same client, re-sent at once: held
        assert protocol._held is protocol.cycle

    run(scenario, Limits(max_in_flight=1))


def test_a_request_a_proxy_forwards_after_a_direct_client_s_503_is_not_held() -> None:
    """A 503 to a request no proxy named a sender for, then one a proxy forwards for a client
    (or the other way round): two clients, not held."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        await shed_once(protocol, transport)
        protocol.data_received(post(b"{}", extra=b"X-Forwarded-For: 203.0.113.2\r\n"))
        await settle()
        assert transport.data.startswith(b"HTTP/1.1 200 ")
        transport.data = b""
        await shed_once(protocol, transport, extra=b"X-Forwarded-For: 203.0.113.2\r\n")
        protocol.data_received(post(b"{}"))
        await settle()
        assert transport.data.startswith(b"HTTP/1.1 200 ")

    run(scenario, Limits(max_in_flight=1))


def test_a_request_sent_once_the_retry_after_elapsed_is_served() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        shed_at = await shed_once(protocol, transport)
        loop = asyncio.get_running_loop()
        await asyncio.sleep(shed_at + RETRY_AFTER - EARLY_GRACE / 2 - loop.time())
        protocol.data_received(post(b"{}"))
        await settle()
        assert transport.data.startswith(b"HTTP/1.1 200 ")
        assert not transport.closed

    run(scenario, Limits(max_in_flight=1))


def test_with_the_hold_off_an_early_request_is_answered_at_once() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        await shed_once(protocol, transport)
        protocol.data_received(post(b"{}"))
        await settle()
        assert transport.data.startswith(b"HTTP/1.1 200 ")

    run(scenario, Limits(max_in_flight=1, hold_early_retries=False))


def test_shutdown_answers_a_held_request_at_once() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        await shed_once(protocol, transport)
        protocol.data_received(post(b"{}"))
        await settle()
        assert transport.data == b""
        protocol.shutdown()
        assert transport.data.startswith(b"HTTP/1.1 503 ")
        assert b"\r\nconnection: close\r\n" in transport.data
        assert transport.closed
        assert protocol._release_timer is None

    run(scenario, Limits(max_in_flight=1))


def test_a_held_request_whose_client_went_away_leaves_nothing_behind() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        loop = asyncio.get_running_loop()
        shed_at = await shed_once(protocol, transport)
        protocol.data_received(post(b"{}"))
        await settle()
        protocol.data_received(post(b"{}"))  # sent meanwhile: kept unparsed
        timer = protocol._release_timer
        assert timer is not None
        assert protocol._held is not None
        assert protocol._unparsed
        shed_before = shed_count()
        protocol.connection_lost(ConnectionResetError())
        assert timer.cancelled()
        assert protocol._held is None
        assert protocol._release_timer is None
        assert protocol._unparsed == b""
        await asyncio.sleep(shed_at + RETRY_AFTER + 0.05 - loop.time())
        assert transport.data == b""  # nothing written when the Retry-After elapsed
        assert shed_count() == shed_before  # nor counted: nothing was answered

    run(scenario, Limits(max_in_flight=1))


def test_a_request_pipelined_behind_a_held_one_is_not_started() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        await shed_once(protocol, transport)
        protocol.data_received(post(b"{}") + post(b"{}"))  # two requests in one chunk
        await settle()
        assert transport.data == b""
        assert not protocol.tasks
        assert SEEN == []
        protocol.shutdown()  # answers the held one, closing: the second is never served
        assert transport.data.count(b"HTTP/1.1 ") == 1
        await settle()
        assert SEEN == []

    run(scenario, Limits(max_in_flight=1))


def test_an_answered_request_whose_task_has_not_ended_does_not_count() -> None:
    """uvicorn drops a task from its set only after the task ends, and the client's next
    request may be read before that: a request already answered must not count, or a worker
    sheds at loads where its connections cannot have `max_in_flight` requests unanswered."""
    after_response = asyncio.Event()

    async def lingering_app(scope: Any, receive: Any, send: Any) -> None:
        """Answers at once, then stays in its task (as a task does until its next step)."""
        await reading_app(scope, receive, send)
        await after_response.wait()

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.app = lingering_app
        protocol.data_received(post(b"{}"))
        await settle()
        assert transport.data.startswith(b"HTTP/1.1 200 ")
        assert len(protocol.tasks) == 1  # answered, not ended
        transport.data = b""
        protocol.data_received(post(b"{}"))  # the next request on the kept-alive connection
        await settle()
        assert transport.data.startswith(b"HTTP/1.1 200 "), transport.data
        after_response.set()
        await settle()
        assert not protocol.tasks

    run(scenario, Limits(max_in_flight=1))


def test_a_shed_http_10_request_closes_its_connection() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.tasks.add(asyncio.get_running_loop().create_future())  # type: ignore[arg-type]
        protocol.data_received(b"GET /v2 HTTP/1.0\r\n\r\n")
        await settle()
        assert transport.data.startswith(b"HTTP/1.1 503 ")
        assert b"connection: close" in transport.data
        assert transport.closed

    run(scenario, Limits(max_in_flight=1))


class AccessLines(logging.Handler):
    """The access lines logged, with the request ID current when each was made."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[str, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        route = getattr(record, "route", "")
        self.lines.append((record.getMessage(), route, request_ids.current()))


@pytest.mark.parametrize("log_shed", [True, False])
def test_a_shed_request_has_its_access_line_when_the_access_log_is_on(log_shed: bool) -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.tasks.add(asyncio.get_running_loop().create_future())  # type: ignore[arg-type]
        protocol.data_received(post(b"{}", extra=b"X-Request-ID: shed-7\r\n"))
        await settle()
        assert transport.data.startswith(b"HTTP/1.1 503 ")

    handler = AccessLines()
    access_logger.addHandler(handler)
    level = access_logger.level
    access_logger.setLevel(logging.INFO)
    try:
        protocol = guarded_protocol(Limits(max_in_flight=1), log_shed=log_shed)
        assert protocol.log_shed is log_shed
        run(scenario, protocol.limits, log_shed=log_shed)
    finally:
        access_logger.removeHandler(handler)
        access_logger.setLevel(level)
    expected = [("POST /predict 503 0.000 ms", SHED_ROUTE, "shed-7")] if log_shed else []
    assert handler.lines == expected
    assert request_ids.current() == request_ids.NO_REQUEST  # reset after the line


def answers(data: bytes) -> list[bytes]:
    """The heads of the responses in `data`."""
    return list(re.findall(rb"HTTP/1\.1 .*?\r\n\r\n", data, re.DOTALL))


def assert_last_answer(transport: FakeTransport, status: bytes, *parts: bytes) -> None:
    """The connection's answer was `status`, holding `parts`, and then it was closed."""
    assert transport.data.startswith(b"HTTP/1.1 " + status + b" "), transport.data
    for part in parts:
        assert part in transport.data
    assert transport.closed


def test_a_refused_answer_to_a_head_request_has_no_body() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.data_received(b"HEAD / HTTP/1.1\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n")
        await settle()
        assert_last_answer(transport, b"431")
        assert transport.data.endswith(b"\r\n\r\n")

    run(scenario)


def test_a_half_closed_connection_is_answered_then_closed() -> None:
    """The client half-closes once its request is sent, the app still working on it: the
    connection stays open for the answer (uvicorn's protocol closed it, and the answer was
    lost), which closes it."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        GATE.append(asyncio.Event())
        protocol.data_received(post(b"{}"))
        await settle()
        assert protocol.eof_received() is True  # keep the transport open
        assert not transport.closed
        GATE[0].set()
        await settle()
        assert_last_answer(transport, b"200", b"\r\nconnection: close\r\n")

    run(scenario)


def test_a_half_close_after_pipelined_requests_answers_each_and_the_last_closes() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        GATE.append(asyncio.Event())
        protocol.data_received(post(b"{}") + post(b"abc"))
        await settle()
        assert protocol.eof_received() is True
        assert protocol.eof_received() is True  # again, as when reading resumes in between
        GATE[0].set()
        await settle()
        first, second = answers(transport.data)
        assert first.startswith(b"HTTP/1.1 200 ")
        assert b"connection: close" not in first
        assert second.startswith(b"HTTP/1.1 200 ")
        assert b"connection: close" in second
        assert transport.data.endswith(b"3")  # the second request's body length
        assert transport.closed

    run(scenario)


@pytest.mark.parametrize(
    "sent", [b"", post(b"{}"), post(b"{}", length=10)], ids=["nothing", "answered", "body-cut"]
)
def test_a_half_close_with_nothing_left_to_answer_closes_at_once(sent: bytes) -> None:
    """Nothing sent, everything answered, or a body that can no longer complete: False, and
    the event loop closes the transport, as under uvicorn's protocol."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.data_received(sent)
        await settle()
        assert not protocol.eof_received()

    run(scenario)


def test_a_half_close_while_held_drops_the_held_request_as_a_leaving_clients() -> None:
    """A half-close cannot be told from a client that left, whose held request is dropped
    uncounted (test_a_held_request_whose_client_went_away_leaves_nothing_behind)."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        await shed_once(protocol, transport)
        protocol.data_received(post(b"{}"))
        await settle()
        assert protocol._held is not None
        assert protocol.eof_received() is False

    run(scenario, Limits(max_in_flight=1))


H2C = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
"""What `curl --http2` and Java's HttpClient add to a cleartext request."""


def chunked_post(chunks: list[bytes], extra: bytes = b"") -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"
    return (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        + extra
        + b"\r\n"
        + body
    )


@pytest.mark.parametrize("step", [None, 7], ids=["one-chunk", "trickled"])
@pytest.mark.parametrize(
    "request_",
    [post(b"x" * 300, extra=H2C), chunked_post([b"x" * 100, b"y" * 200], extra=H2C)],
    ids=["sized", "chunked"],
)
def test_a_request_offering_an_upgrade_is_served_with_its_body(
    request_: bytes, step: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    """httptools stops at the end of such a head (uvicorn#2722): the app read an empty body,
    and what followed was lost. The offer is ignored (RFC 9110 §7.8), the body read, and the
    connection parses on: a request after it, on the same connection, is served too."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        sent = request_ + post(b"{}")
        for start in range(0, len(sent), step or len(sent)):
            protocol.data_received(sent[start : start + (step or len(sent))])
            await settle()
        await settle()
        first, second = answers(transport.data)
        assert first.startswith(b"HTTP/1.1 200 ")
        assert second.startswith(b"HTTP/1.1 200 ")
        assert transport.data.startswith(first + b"300")  # the whole body reached the app
        assert transport.data.endswith(b"2")
        assert not transport.closed

    with caplog.at_level("WARNING"):
        run(scenario)
    assert "upgrade" not in caplog.text.lower()  # ignoring an offer is no cause for a warning


def test_a_bodiless_request_offering_a_websocket_is_served_and_the_next_too() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        offer = b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        protocol.data_received(post(b"", extra=offer) + post(b"abcd"))
        await settle()
        assert [head[:13] for head in answers(transport.data)] == [b"HTTP/1.1 200 "] * 2
        assert transport.data.endswith(b"4")

    run(scenario)


def test_a_malformed_body_after_an_upgrade_offer_is_a_400_and_closed() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        head = b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + H2C
        protocol.data_received(head + b"\r\nzz\r\nabc\r\n")
        await settle()
        assert_last_answer(transport, b"400", b"Invalid character in chunk size")

    run(scenario)


CHUNKED_HEAD = b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
"""A chunked POST's head, but for its extra fields and the empty line."""


@pytest.mark.parametrize("offer", [b"", H2C], ids=["plain", "h2c"])
@pytest.mark.parametrize(
    "body",
    [
        b"2 \r\n{}\r\n0\r\n\r\n",
        b"2;a\x00b\r\n{}\r\n0\r\n\r\n",
        b"2\r\n{}\r\n0\r\nX-T: 1\n\n",
        b"10000000000000002\r\n{}\r\n0\r\n\r\n",
    ],
    ids=["size-trailing-space", "extension-nul", "trailer-bare-lf", "size-past-2-64"],
)
def test_an_upgrade_offers_chunked_body_is_framed_as_any_other_requests(
    offer: bytes, body: bytes
) -> None:
    """Framed by h11, the body of a request whose `Upgrade` is ignored took what httptools
    refuses in every other request's (the request after it then served; past 2^64, the body
    waited for until the body timeout): a front end passing such framing on, and reading it as
    httptools does, would have framed it otherwise (reports/reliability.md §26)."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.data_received(CHUNKED_HEAD + offer + b"\r\n" + body + GET_HEALTH)
        for _ in range(4):
            await settle()
        assert_last_answer(transport, b"400", b"not a valid HTTP/1.1 request: ")
        assert re.findall(rb"HTTP/1.1 (\d{3}) ", transport.data) == [b"400"]

    run(scenario)


@pytest.mark.parametrize(
    ("chunks", "error"),
    [
        ([post(b"{}") + CHUNKED_HEAD + b"\r\nzz\r\n{}\r\n0\r\n\r\n"], b"chunk size"),
        ([post(b"{}") + CHUNKED_HEAD + b"\r\n", b"zz\r\n{}\r\n0\r\n\r\n"], b"chunk size"),
        ([post(b"{}") + CHUNKED_HEAD + b"\r\n2\r\n{}x\r\n0\r\n\r\n"], b"after chunk data"),
        ([post(b"{}") + CHUNKED_HEAD + H2C + b"\r\nzz\r\n{}\r\n0\r\n\r\n"], b"chunk size"),
        (
            [post(b"{}") + CHUNKED_HEAD + H2C + b"\r\n", b"zz\r\n{}\r\n", b"0\r\n\r\n"],
            b"chunk size",
        ),
    ],
    ids=["chunk-size", "chunk-size-later", "chunk-data", "h2c-chunk-size", "h2c-later"],
)
def test_a_misframed_body_behind_an_answer_in_progress_is_refused_after_it(
    chunks: list[bytes], error: bytes
) -> None:
    """A request queued behind one still being answered, whose body is not framed as its headers
    say: its 400 waits for that answer, as the other refusals do, and its app never runs. It was
    refused at once, the only answer (the 200 in progress lost, though counted)."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        before = counted(REFUSED_ROUTE, "400")
        written = await sent_while_answering(protocol, transport, chunks)
        assert re.findall(rb"HTTP/1.1 (\d{3}) ", written) == [b"200", b"400"]
        assert error in written.split(b"HTTP/1.1 400 ")[1]
        assert counted(REFUSED_ROUTE, "400") == before + 1

    run(scenario)


def test_a_request_pipelined_past_the_bound_is_refused_after_the_queued_ones() -> None:
    """One read of many pipelined requests: the one in progress and MAX_PIPELINED queued behind
    it are answered, in order; the next is a 429 with its own request ID, the connection then
    closed, and nothing after it parsed (each queued request held about 2.5 KB until answered)."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        before = counted(REFUSED_ROUTE, "429")
        GATE.append(asyncio.Event())
        requests = [
            b"GET /%d HTTP/1.1\r\nHost: x\r\nX-Request-ID: r%d\r\n\r\n" % (i, i)
            for i in range(MAX_PIPELINED + 30)
        ]
        protocol.data_received(b"".join(requests))
        await settle()
        assert len(protocol.pipeline) == MAX_PIPELINED
        assert transport.data == b""
        GATE[0].set()
        for _ in range(MAX_PIPELINED + 5):
            await settle()
        statuses = re.findall(rb"HTTP/1.1 (\d{3}) ", transport.data)
        assert statuses == [b"200"] * (MAX_PIPELINED + 1) + [b"429"]
        refusal = transport.data.split(b"HTTP/1.1 429 ")[1]
        assert b"x-request-id: r%d\r\n" % (MAX_PIPELINED + 1) in refusal
        assert PIPELINE_FULL.encode() in refusal
        assert transport.closed
        assert len([m for m in SEEN if m["type"] == "http.request"]) == MAX_PIPELINED + 1
        assert counted(REFUSED_ROUTE, "429") == before + 1

    run(scenario)


def test_pipelining_up_to_the_bound_is_served_whole() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        GATE.append(asyncio.Event())
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * (MAX_PIPELINED + 1))
        await settle()
        GATE[0].set()
        for _ in range(MAX_PIPELINED + 5):
            await settle()
        assert re.findall(rb"HTTP/1.1 (\d{3}) ", transport.data) == [b"200"] * (MAX_PIPELINED + 1)
        assert not transport.closed

    run(scenario)


def test_a_misframed_body_refused_in_its_turn_is_not_timed_out_meanwhile() -> None:
    """Nothing more of it is read: the connection waits on the server, not on the client's body
    (a 408 past BODY_TIMEOUT would be the only answer, the one in progress lost)."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        GATE.append(asyncio.Event())
        protocol.data_received(post(b"{}") + CHUNKED_HEAD + b"\r\nzz\r\n")
        await settle()
        assert protocol.phase() == "idle"
        protocol.sweep(0.0)
        protocol.sweep(LIMITS.body_timeout + 1)
        assert transport.data == b""
        assert not transport.closed
        GATE[0].set()
        await settle()
        assert re.findall(rb"HTTP/1.1 (\d{3}) ", transport.data) == [b"200", b"400"]

    run(scenario)


@pytest.mark.parametrize(
    ("head", "method"),
    [
        (b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n", "-"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "-"),
        (b"GET / HTTP/1.1\r\n\r\n", "GET"),
    ],
    ids=["unknown-method", "bad-transfer-encoding", "no-host"],
)
def test_a_refused_head_is_counted_with_its_method_or_a_dash_if_it_was_not_parsed(
    head: bytes, method: str
) -> None:
    """docs/serving.md, Counting: a head the parser refuses is counted under route <refused> with
    method `-`; one that parsed (an HTTP/1.1 request without Host) with its own method."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        before = counted(REFUSED_ROUTE, "400", method)
        protocol.data_received(head)
        await settle()
        assert_last_answer(transport, b"400")
        assert counted(REFUSED_ROUTE, "400", method) == before + 1

    run(scenario)


@pytest.mark.parametrize(
    "head", [CHUNKED_HEAD + b"\r\n", CHUNKED_HEAD + H2C + b"\r\n"], ids=["chunked", "h2c"]
)
def test_a_misframed_body_of_a_started_request_is_refused_at_once_and_counted_once(
    head: bytes,
) -> None:
    """Nothing is answered before it, and its app, running, reads a disconnect: the 400 is what
    the client gets and what is counted (ANSWERED_BY_SERVER), not the app's answer."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        before = counted(REFUSED_ROUTE, "400")
        protocol.data_received(head)
        await settle()
        scope = protocol.scope
        assert scope is not None
        protocol.data_received(b"zz\r\n{}\r\n0\r\n\r\n")
        await settle()
        assert_last_answer(transport, b"400")
        protocol.connection_lost(None)  # as the transport's close ends in
        await settle()
        assert SEEN[-1]["type"] == "http.disconnect"
        assert scope.get(ANSWERED_BY_SERVER) == 400
        assert counted(REFUSED_ROUTE, "400") == before + 1

    run(scenario)


@pytest.mark.parametrize("offer", [b"", H2C], ids=["chunked", "h2c"])
def test_a_misframed_body_of_an_answered_request_closes_without_a_second_answer(
    offer: bytes,
) -> None:
    """Shed at once (a 503 keeping the connection), its chunked body then misframed: the
    connection closes. A 400 after the 503, which the chunked framing got until the
    twenty-third session, is a second answer to one request: the client takes it for its next
    request's."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.tasks.add(asyncio.get_running_loop().create_future())  # type: ignore[arg-type]
        protocol.data_received(CHUNKED_HEAD + offer + b"\r\n")
        await settle()
        protocol.data_received(b"zz\r\n{}\r\n0\r\n\r\n")
        await settle()
        assert re.findall(rb"HTTP/1.1 (\d{3}) ", transport.data) == [b"503"]
        assert transport.closed

    run(scenario, Limits(max_in_flight=1))


@pytest.mark.parametrize(
    "reads",
    [
        [b"X-Big: " + b"a" * 600, b"a" * 600, b"a" * 600],
        [b"X-Big: " + b"a" * 1200 + b"\r\n\r\n"],
        [b"X-Small: a\r\n" * 90 + b"\r\n"],
    ],
    ids=["one-line-sent-on", "in-the-last-chunks-read", "many-fields"],
)
def test_a_trailer_section_over_the_head_limit_is_a_431(reads: list[bytes]) -> None:
    """One trailer line sent without end was gathered whole (httptools concatenates a value's
    pieces), holding the worker's event loop and growing its memory until the body timeout."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        before = counted(REFUSED_ROUTE, "431")
        protocol.data_received(CHUNKED_HEAD + b"\r\n2\r\n{}\r\n0\r\n" + reads[0])
        await settle()
        for read in reads[1:]:
            assert transport.data == b""
            protocol.data_received(read)
            await settle()
        assert_last_answer(transport, b"431", b"trailer section over the 1024-byte limit")
        assert counted(REFUSED_ROUTE, "431") == before + 1
        protocol.connection_lost(None)
        await settle()
        assert SEEN[-1]["type"] == "http.disconnect"  # the app, reading its body, was told

    run(scenario)


def test_trailer_fields_are_dropped_and_a_chunks_data_is_no_trailer() -> None:
    """A chunk larger than the limit, its data in reads after its size line's, is body; the
    trailer fields (a second Host among them) reach neither the request's headers nor its Host
    check."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        data = b"x" * 2000
        protocol.data_received(CHUNKED_HEAD + b"\r\n7d0\r\n")
        scope = protocol.scope
        for start in range(0, len(data), 700):
            protocol.data_received(data[start : start + 700])
        protocol.data_received(b"\r\n0\r\n")
        protocol.data_received(b"Host: y\r\nX-Trailer: 1\r\n\r\n")
        await settle()
        assert transport.data.startswith(b"HTTP/1.1 200 ")
        assert transport.data.endswith(b"\r\n\r\n2000")
        assert not transport.closed
        assert scope is not None
        assert [name for name, _ in scope["headers"]] == [b"host", b"transfer-encoding"]

    run(scenario)


@pytest.mark.parametrize(
    "field", [b"Connection: close", b"connection: keep-alive, CLOSE", b"Proxy-Connection: close"]
)
@pytest.mark.parametrize("split", [False, True], ids=["one-read", "trailer-read-alone"])
def test_a_connection_close_in_a_trailer_section_closes_with_the_answer(
    field: bytes, split: bool
) -> None:
    """llhttp takes a trailer field closing the connection as the connection's, and then parses
    nothing more (`lenient_data_after_close`); the answer, keep-alive by the head, left the
    connection open and every request after it unanswered. Behind HAProxy (`http-reuse always`
    passes trailers on) the next client's request sent on that pooled connection waited 60 s for
    a 504. The answer now closes the connection, and says so."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        body = chunked_post([b"{}"]).removesuffix(b"\r\n")
        trailer = field + b"\r\n\r\n" + GET_HEALTH
        if split:
            protocol.data_received(body)
            await settle()
            assert transport.data == b""
            protocol.data_received(trailer)
        else:
            protocol.data_received(body + trailer)
        for _ in range(4):
            await settle()
        assert re.findall(rb"HTTP/1.1 (\d{3}) ", transport.data) == [b"200"]
        assert b"connection: close\r\n" in transport.data
        assert transport.closed

    run(scenario)


def test_a_connection_close_in_a_trailer_section_after_the_answer_closes_at_once() -> None:
    """Answered before its body was in (shed, keep-alive): the trailer closes the connection then,
    its answer given."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.data_received(CHUNKED_HEAD + b"\r\n2\r\n{}\r\n")
        await settle()
        assert re.findall(rb"HTTP/1.1 (\d{3}) ", transport.data) == [b"503"]
        assert not transport.closed
        protocol.data_received(b"0\r\nConnection: close\r\n\r\n" + GET_HEALTH)
        await settle()
        assert re.findall(rb"HTTP/1.1 (\d{3}) ", transport.data) == [b"503"]
        assert transport.closed

    run(scenario, Limits(max_in_flight=0, hold_early_retries=False))


def test_an_upgrade_offers_head_is_held_to_the_head_limit() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.data_received(post(b"{}", extra=H2C + b"X-Big: " + b"a" * 2000 + b"\r\n"))
        await settle()
        assert_last_answer(transport, b"431")

    run(scenario)


def test_an_upgrade_offer_waiting_for_100_continue_gets_it_then_its_body_read() -> None:
    """curl sends `Expect: 100-continue` with a large body, and the body only once told to."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        request = post(b"z" * 2000, extra=H2C + b"Expect: 100-continue\r\n")
        head_end = request.index(b"\r\n\r\n") + 4
        protocol.data_received(request[:head_end])
        await settle()
        assert transport.data == b"HTTP/1.1 100 Continue\r\n\r\n"
        protocol.data_received(request[head_end:])
        await settle()
        assert transport.data.split(b"\r\n\r\n", 1)[1].startswith(b"HTTP/1.1 200 ")
        assert transport.data.endswith(b"2000")

    run(scenario)


def test_an_upgrade_offers_body_not_complete_in_time_is_a_408() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.data_received(post(b"{}", length=10, extra=H2C))
        await settle()
        assert protocol.phase() == "body"
        assert in_flight(protocol.server_state)() == 0  # its body still to come
        protocol.sweep(1000.0)
        protocol.sweep(1000.0 + LIMITS.body_timeout)
        assert_last_answer(transport, b"408")

    run(scenario)


@pytest.mark.parametrize(
    ("sent", "status"),
    [
        (post(b"{}", extra=b"X-Big: " + b"a" * 2000 + b"\r\n"), "431"),
        (b"NOT HTTP\r\n\r\n", "400"),
    ],
    ids=["head-over-the-limit", "not-http"],
)
def test_an_answer_of_the_http_layer_is_counted_and_the_app_never_runs(
    sent: bytes, status: str
) -> None:
    """Before, these answers were in no metric, and a head over the limit that arrived whole
    was counted as the 200 its app went on to give, which nobody received."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        before = counted(REFUSED_ROUTE, status)
        protocol.data_received(sent)
        await settle()
        assert transport.data.startswith(b"HTTP/1.1 " + status.encode() + b" ")
        assert SEEN == []  # the app never ran
        assert not protocol.tasks
        assert counted(REFUSED_ROUTE, status) == before + 1

    run(scenario)


def test_a_head_not_received_in_time_is_counted_as_a_408() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        before = counted(REFUSED_ROUTE, "408")
        protocol.data_received(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        protocol.sweep(1000.0)
        protocol.sweep(1000.0 + LIMITS.head_timeout)
        assert_last_answer(transport, b"408")
        assert counted(REFUSED_ROUTE, "408") == before + 1

    run(scenario)


def test_a_refused_body_of_a_running_app_is_counted_as_sent_and_the_apps_answer_is_not() -> None:
    """The client gets the 408 and that is what is counted; the app reads a disconnect and
    answers a closed connection (the service's 499), which MetricsMiddleware leaves out (before,
    that 499 was counted and the 408 was not)."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        before = counted(REFUSED_ROUTE, "408")
        protocol.data_received(post(b"{}", length=10))
        await settle()
        scope = protocol.scope
        protocol.sweep(1000.0)
        protocol.sweep(1000.0 + LIMITS.body_timeout)
        assert_last_answer(transport, b"408")
        assert counted(REFUSED_ROUTE, "408") == before + 1
        assert scope is not None
        assert scope.get(ANSWERED_BY_SERVER) == 408

    run(scenario)


@pytest.mark.parametrize(
    ("sent", "status", "error"),
    [
        (b"NOT HTTP\r\n\r\n", b"400", "not a valid HTTP/1.1 request: Invalid method encountered"),
        (
            b"GET / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
            b"400",
            "not a valid HTTP/1.1 request: Duplicate Content-Length",
        ),
        (
            post(b"{}", extra=b"X-Request-ID: mine-7\r\nX-Big: " + b"a" * 2000 + b"\r\n"),
            b"431",
            "request head over the 1024-byte limit",
        ),
        (
            # httptools refuses a URL of 64 KiB or more as it parses it: a 400 before
            b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            b"431",
            "request head over the 1024-byte limit",
        ),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"400", HTTP2_REFUSED),
        (
            b"GET / HTTP/1.1\r\nX-Request-ID: mine-7\r\n\r\n",
            b"400",
            NO_HOST,
        ),
    ],
    ids=[
        "not-http",
        "duplicate-length",
        "head-over-the-limit",
        "url-over-64-kib",
        "http2",
        "no-host",
    ],
)
def test_an_answer_of_the_http_layer_is_json_naming_what_is_wrong_with_a_request_id(
    sent: bytes, status: bytes, error: str
) -> None:
    """As the app's errors: uvicorn's own 400 was plain text without an ID; with the server's
    `Date`, which RFC 9110 requires on a 4xx."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        date = (b"date", b"Fri, 04 Dec 2026 07:50:00 GMT")
        protocol.server_state.default_headers = [date]  # uvicorn's, refreshed every second
        protocol.data_received(sent)
        await settle()
        assert_last_answer(transport, status, b"\r\ncontent-type: application/json\r\n")
        assert b"\r\ndate: Fri, 04 Dec 2026 07:50:00 GMT\r\n" in transport.data
        head, body = transport.data.split(b"\r\n\r\n", 1)
        assert json.loads(body) == {"error": error}
        request_id = re.search(rb"\r\nx-request-id: (\S+)", head)
        assert request_id is not None
        if b"mine-7" in sent:
            assert request_id.group(1) == b"mine-7"  # the caller's own, as the app keeps it
        else:
            assert request_ids.accepted(request_id.group(1))

    run(scenario)


def test_a_request_pipelined_behind_a_refused_head_in_its_chunk_never_runs() -> None:
    """A head over the limit is refused as its app was to start, and the parser goes on with the
    rest of the chunk: a request pipelined behind it ran its app on the closed connection, and
    was access-logged and counted as the 200 nobody received (tests/test_server.py counts it on
    the real server)."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        before = counted(REFUSED_ROUTE, "431")
        big = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n"
        protocol.data_received(big + GET_HEALTH)
        await settle()
        assert re.findall(rb"HTTP/1.1 (\d{3}) ", transport.data) == [b"431"]
        assert transport.closed
        assert SEEN == []  # neither app ran
        assert not protocol.tasks
        assert counted(REFUSED_ROUTE, "431") == before + 1

    run(scenario)


@pytest.mark.parametrize(
    ("sent", "error"),
    [
        (b"GET /health HTTP/1.1\r\n\r\n", NO_HOST),
        (b"GET /health HTTP/1.1\r\nAccept: */*\r\n\r\n", NO_HOST),
        (b"GET /health HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", TWO_HOSTS),
        (b"GET /health HTTP/1.1\r\nHost: a\r\nHOST: a\r\n\r\n", TWO_HOSTS),
        (b"GET /health HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", TWO_HOSTS),
        (post(b"{}", extra=b"Host: y\r\n"), TWO_HOSTS),
        (b"GET /health HTTP/1.2\r\n\r\n", NO_HOST),
    ],
    ids=["none", "none-with-fields", "two", "two-same", "two-http-1.0", "two-post", "none-1.2"],
)
def test_a_request_without_its_one_host_field_is_a_400_and_its_app_never_runs(
    sent: bytes, error: str
) -> None:
    """RFC 9112 §3.2: a 400 for an HTTP/1.1 request without a Host field, or any request with
    more than one (which host a proxy in front took it for and which this server did could
    differ). Before, each was served."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        before = counted(REFUSED_ROUTE, "400")
        protocol.data_received(sent)
        await settle()
        assert_last_answer(transport, b"400", b"\r\nx-request-id: ")
        assert transport.data.endswith(orjson.dumps({"error": error}))
        assert SEEN == []
        assert not protocol.tasks
        assert counted(REFUSED_ROUTE, "400") == before + 1

    run(scenario)


def test_an_http_10_request_need_not_name_its_host() -> None:
    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.data_received(b"GET /health HTTP/1.0\r\n\r\n")
        await settle()
        assert transport.data.startswith(b"HTTP/1.1 200 ")

    run(scenario)


def test_a_request_without_a_host_is_refused_in_its_turn_and_the_next_counts_its_own() -> None:
    """The refusal waits for the answer before it; a Host trailer of a chunked body (which
    httptools reports as a header) is not counted in the next request's head."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        trailer = chunked_post([b"{}"]).removesuffix(b"\r\n") + b"Host: t\r\n\r\n"
        protocol.data_received(trailer + GET_HEALTH + b"GET /health HTTP/1.1\r\n\r\n")
        protocol.data_received(GET_HEALTH)
        for _ in range(5):
            await settle()
        assert re.findall(rb"HTTP/1.1 (\d{3}) ", transport.data) == [b"200", b"200", b"400"]
        assert transport.data.endswith(orjson.dumps({"error": NO_HOST}))
        assert transport.closed

    run(scenario)


@pytest.mark.parametrize("version", [b"1.2", b"1.9"], ids=lambda version: version.decode())
def test_an_http_1_request_of_a_later_minor_version_is_served_as_http_11(version: bytes) -> None:
    """RFC 9110 §2.5: a minor version over the server's is processed as the highest it
    implements. llhttp refused HTTP/1.2 (a 400, then the service's 505: a 5xx for a client's
    request the RFC asks to serve); now it is served as HTTP/1.1, kept alive, Host required
    (test_a_request_without_its_one_host_field_is_a_400...)."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        request = b"GET /health HTTP/" + version + b"\r\nHost: x\r\n\r\n"
        for _ in range(2):
            protocol.data_received(request)
            for _ in range(5):
                await settle()
            assert protocol.cycle is not None
            assert protocol.cycle.scope["http_version"] == "1.1"  # ASGI's: 1.0, 1.1 or 2
        assert re.findall(rb"HTTP/1.1 (\d{3}) ", transport.data) == [b"200", b"200"]
        assert not transport.closed

    run(scenario)


@pytest.mark.parametrize(
    "version",
    [b"2.0", b"0.9", b"3.0", b"2.1", b"0.5", b"9.9"],
    ids=lambda version: version.decode(),
)
def test_a_request_of_another_http_version_is_a_505_in_its_turn(version: bytes) -> None:
    """RFC 9110 §15.6.6: httptools parses an HTTP/2.0 or HTTP/0.9 request line, which uvicorn
    served as HTTP/1.1 (a 200); the versions it does not parse were a 400. The HTTP/2 preface
    keeps its own answer (test_an_answer_of_the_http_layer_is_json_naming...)."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        before = counted(REFUSED_ROUTE, "505")
        protocol.data_received(GET_HEALTH + b"GET /health HTTP/" + version + b"\r\nHost: x\r\n\r\n")
        for _ in range(5):
            await settle()
        assert re.findall(rb"HTTP/1.1 (\d{3}) ", transport.data) == [b"200", b"505"]
        assert transport.data.endswith(orjson.dumps({"error": VERSION_REFUSED}))
        assert b"\r\nx-request-id: " in transport.data.split(b"HTTP/1.1 505 ")[1]
        assert transport.closed
        assert len(SEEN) == 1  # the first request's app only
        assert counted(REFUSED_ROUTE, "505") == before + 1

    run(scenario)


@pytest.mark.parametrize(("version", "continued"), [(b"1.0", False), (b"1.1", True)])
def test_an_http_10_request_expecting_100_continue_gets_its_answer_alone(
    version: bytes, continued: bool
) -> None:
    """RFC 9110 §10.1.1: a server MUST ignore a 100-continue expectation in an HTTP/1.0 request
    (HTTP/1.0 has no 1xx status). uvicorn sent it `100 Continue` as its app began to read."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        head = (
            b"POST /predict HTTP/" + version + b"\r\nHost: x\r\nContent-Length: 2\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        protocol.data_received(head)
        await settle()  # the app waits for the body
        assert (b"100 Continue" in transport.data) is continued
        protocol.data_received(b"{}")
        await settle()
        assert re.findall(rb"HTTP/1.1 (\d{3}) ", transport.data)[-1] == b"200"
        assert transport.data.endswith(b"2")

    run(scenario)


_TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("fields", "echoed"),
    [
        (b"traceparent: " + _TRACEPARENT + b"\r\n", True),
        (b"traceparent: 00-" + b"0" * 32 + b"-b7ad6b7169203331-01\r\n", False),  # invalid
        (b"traceparent: " + _TRACEPARENT + b"\r\ntraceparent: " + _TRACEPARENT + b"\r\n", False),
    ],
    ids=["valid", "invalid", "two"],
)
def test_an_answer_of_the_http_layer_echoes_a_valid_traceparent_as_the_app_does(
    fields: bytes, echoed: bool
) -> None:
    """Found by a hostile-client probe: the app's answers echo a valid traceparent (README,
    docs/observability.md, the OpenAPI document's response headers), the HTTP layer's 400s and
    431s did not; an invalid one, or two, is still ignored."""

    async def scenario(protocol: GuardedHttpToolsProtocol, transport: FakeTransport) -> None:
        protocol.data_received(b"GET /health HTTP/1.1\r\n" + fields + b"\r\n")  # no Host: a 400
        await settle()
        assert_last_answer(transport, b"400", b"\r\nx-request-id: ")
        head = transport.data.split(b"\r\n\r\n", 1)[0]
        assert (b"\r\ntraceparent: " + _TRACEPARENT + b"\r\n" in head + b"\r\n") is echoed
        assert head.count(b"\r\ntraceparent: ") == int(echoed)

    run(scenario)

"""app.server.coalesce on a real server: uvicorn on uvloop, a real socket, the guarded protocol,
with the connection's transport wrapped to record each write; an h11 client reads the answers.
The guarded protocol's half-close is checked here too, where uvloop delivers the end of stream."""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import logging
import re
import socket
import struct
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import h11
import pytest
import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from app.inference.flights import FULL_EXAMPLE, FlightValidator
from app.inference.model import ModelSet
from app.main import create_app
from app.server.protocol import GuardedHttpToolsProtocol, begin_drain
from app.settings import Settings
from benchmarks.peers.bodies import infer_body
from tests.conftest import MODELS_DIR, PAYLOADS

WRITES: list[bytes] = []
"""What the server wrote to the socket, write by write (one connection at a time); an empty
write is left out, as the transport ignores it (no send)."""


class RecordedTransport:
    """The server's transport, every write recorded; anything else passes through."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        if data:
            WRITES.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class RecordedProtocol(GuardedHttpToolsProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(RecordedTransport(transport))  # type: ignore[arg-type]


async def json_answer(request: Request) -> Response:
    return JSONResponse({"ok": True, "padding": "x" * 100})


async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/octet-stream")


async def empty(request: Request) -> Response:
    return Response(status_code=204)


async def not_modified(request: Request) -> Response:
    return Response(status_code=304, headers={"etag": '"1"'})


async def stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for chunk in (b"one", b"two", b"three"):
            yield chunk

    return StreamingResponse(chunks(), media_type="text/plain")


RELEASE: dict[str, asyncio.Event] = {}
"""The event `/held` waits for, made by the test on the server's loop."""


async def held(request: Request) -> Response:
    """Answers once the test sets RELEASE["held"]: a request still being answered."""
    await RELEASE["held"].wait()
    return JSONResponse({"ok": True})


async def held_after_its_body(request: Request) -> Response:
    """`held`, but reading its body first, as the service's apps do: the connection is read
    again meanwhile (uvicorn resumes reading on the app's `receive`), a request pipelined behind
    it queued."""
    await request.body()
    await RELEASE["held"].wait()
    return JSONResponse({"ok": True})


async def fails(request: Request) -> Response:
    raise RuntimeError("before the response")


async def fails_halfway(scope: Any, receive: Any, send: Any) -> None:
    """Starts a 10-byte response, sends 4 bytes of it, then fails."""
    headers = [(b"content-length", b"10")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"four", "more_body": True})
    raise RuntimeError("halfway")


async def stops_after_the_head(scope: Any, receive: Any, send: Any) -> None:
    """Starts a 10-byte response, then stops without a byte of it."""
    headers = [(b"content-length", b"10")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})


async def in_parts(scope: Any, receive: Any, send: Any) -> None:
    """A 10-byte response sent in three parts: only the first is written with the head."""
    headers = [(b"content-length", b"10")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"four", "more_body": True})
    await send({"type": "http.response.body", "body": b"six", "more_body": True})
    await send({"type": "http.response.body", "body": b"abc"})


async def one_byte(scope: Any, receive: Any, send: Any) -> None:
    """The smallest body the head is held for (Content-Length 1)."""
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1")]}
    )
    await send({"type": "http.response.body", "body": b"1"})


RAW = {
    "/fails-halfway": fails_halfway,
    "/stops-after-the-head": stops_after_the_head,
    "/in-parts": in_parts,
    "/one-byte": one_byte,
}


async def toy(scope: Any, receive: Any, send: Any) -> None:
    """`TOY`, but the raw ASGI apps of `RAW` by their path."""
    await RAW.get(scope.get("path", ""), TOY)(scope, receive, send)


TOY = Starlette(
    routes=[
        Route("/json", json_answer, methods=["GET"]),  # HEAD too, as Starlette adds it
        Route("/echo", echo, methods=["POST"]),
        Route("/empty", empty),
        Route("/not-modified", not_modified),
        Route("/stream", stream),
        Route("/fails", fails),
        Route("/held", held),
        Route("/held-after-its-body", held_after_its_body, methods=["POST"]),
    ]
)

Client = Callable[[], Awaitable["Connection"]]


class Connection:
    """One client connection: h11 on an asyncio stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h11 = h11.Connection(our_role=h11.CLIENT)

    async def send(self, *events: Any) -> None:
        for event in events:
            self.writer.write(self.h11.send(event) or b"")
        await self.writer.drain()

    async def next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.h11.receive_data(await self.reader.read(65536))

    async def answer(self) -> tuple[h11.Response, bytes]:
        """The next final response and its body."""
        event = await self.next_event()
        while isinstance(event, h11.InformationalResponse):
            event = await self.next_event()
        assert isinstance(event, h11.Response), event
        body = b""
        while not isinstance(part := await self.next_event(), h11.EndOfMessage):
            body += part.data
        return event, body

    async def request(
        self, method: str, target: str, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()
    ) -> tuple[h11.Response, bytes]:
        if self.h11.our_state is h11.DONE:
            self.h11.start_next_cycle()
        fields = [("host", "test"), ("content-length", str(len(body))), *headers]
        await self.send(h11.Request(method=method, target=target, headers=fields))
        await self.send(h11.Data(data=body), h11.EndOfMessage())
        return await self.answer()

    async def rest(self) -> bytes:
        """Everything the server sends until it closes the connection."""
        data = b""
        while chunk := await asyncio.wait_for(self.reader.read(65536), 5):
            data += chunk
        return data


def serve(app: Any, scenario: Callable[[Client], Awaitable[None]]) -> None:
    """`scenario` against `app` served by uvicorn with the recorded guarded protocol."""

    async def main() -> None:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        config = uvicorn.Config(app, http=RecordedProtocol, log_config=None, access_log=False)
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve(sockets=[listener]))
        while not server.started:
            await asyncio.sleep(0.01)

        async def connect() -> Connection:
            WRITES.clear()
            return Connection(*await asyncio.open_connection("127.0.0.1", port))

        try:
            await asyncio.wait_for(scenario(connect), 20)
        finally:
            server.should_exit = True
            await serving

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def test_a_response_with_a_body_is_one_write() -> None:
    async def scenario(connect: Client) -> None:
        client = await connect()
        response, body = await client.request("GET", "/json")
        assert response.status_code == 200
        assert json.loads(body)["ok"] is True
        assert len(WRITES) == 1
        assert WRITES[0].startswith(b"HTTP/1.1 200 OK\r\n")
        assert WRITES[0].endswith(b"\r\n\r\n" + body)

    serve(toy, scenario)


def test_a_one_byte_body_is_one_write_too() -> None:
    async def scenario(connect: Client) -> None:
        client = await connect()
        response, body = await client.request("GET", "/one-byte")
        assert (response.status_code, body) == (200, b"1")
        assert len(WRITES) == 1

    serve(toy, scenario)


def test_only_a_bodys_first_part_is_written_with_the_head() -> None:
    """Once the head is out, the rest of the body passes as it comes, not held as a head."""

    async def scenario(connect: Client) -> None:
        client = await connect()
        response, body = await client.request("GET", "/in-parts")
        assert (response.status_code, body) == (200, b"foursixabc")
        assert len(WRITES) == 3
        assert WRITES[0].endswith(b"\r\n\r\nfour")
        assert WRITES[1:] == [b"six", b"abc"]

    serve(toy, scenario)


def test_each_response_of_a_kept_alive_connection_is_one_write() -> None:
    async def scenario(connect: Client) -> None:
        client = await connect()
        for index in range(3):
            response, body = await client.request("POST", "/echo", b"body %d" % index)
            assert (response.status_code, body) == (200, b"body %d" % index)
        assert len(WRITES) == 3

    serve(toy, scenario)


@pytest.mark.parametrize(
    ("method", "target", "status"),
    [("HEAD", "/json", 200), ("GET", "/empty", 204), ("GET", "/not-modified", 304)],
)
def test_a_response_without_a_body_is_its_head_written_at_once(
    method: str, target: str, status: int
) -> None:
    async def scenario(connect: Client) -> None:
        client = await connect()
        response, body = await client.request(method, target)
        assert (response.status_code, body) == (status, b"")
        assert len(WRITES) == 1
        assert WRITES[0].endswith(b"\r\n\r\n")
        # and the connection serves the next request
        response, _ = await client.request("GET", "/json")
        assert response.status_code == 200
        assert len(WRITES) == 2

    serve(toy, scenario)


def test_a_chunked_response_writes_its_head_at_once_and_each_chunk_as_it_comes() -> None:
    async def scenario(connect: Client) -> None:
        client = await connect()
        response, body = await client.request("GET", "/stream")
        assert (response.status_code, body) == (200, b"onetwothree")
        assert WRITES[0].endswith(b"transfer-encoding: chunked\r\n\r\n")  # the head alone
        assert b"".join(WRITES[1:]) == b"3\r\none\r\n3\r\ntwo\r\n5\r\nthree\r\n0\r\n\r\n"

    serve(toy, scenario)


def test_a_100_continue_goes_out_before_the_answer() -> None:
    """uvicorn's cycle writes `100 Continue` when the app first reads the body, before any
    response has started: the client, which waits for it to send its body, gets it."""

    async def scenario(connect: Client) -> None:
        client = await connect()
        headers = [("host", "test"), ("content-length", "5"), ("expect", "100-continue")]
        await client.send(h11.Request(method="POST", target="/echo", headers=headers))
        informational = await client.next_event()
        assert isinstance(informational, h11.InformationalResponse)
        assert informational.status_code == 100
        await client.send(h11.Data(data=b"hello"), h11.EndOfMessage())
        response, body = await client.answer()
        assert (response.status_code, body) == (200, b"hello")
        assert WRITES[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert len(WRITES) == 2  # the answer: one write

    serve(toy, scenario)


def test_a_connection_close_answer_is_one_write_then_the_close() -> None:
    async def scenario(connect: Client) -> None:
        client = await connect()
        response, _ = await client.request("GET", "/json", headers=(("connection", "close"),))
        assert response.status_code == 200
        assert (b"connection", b"close") in response.headers
        assert await client.rest() == b""  # closed
        assert len(WRITES) == 1

    serve(toy, scenario)


@pytest.mark.parametrize(("hold", "grace"), [(0.0, 1), (0.5, 3)], ids=["quick-stop", "stop"])
def test_a_lingering_connection_is_closed_within_the_drains_budget(
    hold: float, grace: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A connection closed in stages (app.server.coalesce.LINGER) whose client read its answer
    but has not closed yet is closed by the drain once the drain's budget is spent (`begin_drain`'s
    `hold`), as an idle one is. Left to the sweep's 2-3 s, it held a stopping worker past that
    budget: a quick stop (1 s) ran out its grace, logging "timeout graceful shutdown exceeded"
    as an error, where the connection had been closed at once before the staged close."""

    async def main() -> None:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        config = uvicorn.Config(
            toy, http=RecordedProtocol, log_config=None, timeout_graceful_shutdown=grace
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve(sockets=[listener]))
        while not server.started:
            await asyncio.sleep(0.01)
        client = Connection(*await asyncio.open_connection(*listener.getsockname()))
        response, _ = await client.request("GET", "/json", headers=(("connection", "close"),))
        assert (b"connection", b"close") in response.headers
        assert await client.rest() == b""  # the server's half of the connection closed
        started = time.monotonic()
        begin_drain(server.server_state, 0.0, hold)  # as app.server.worker stops
        server.should_exit = True
        await serving
        assert time.monotonic() - started < hold + 0.8
        client.writer.close()

    with caplog.at_level("INFO"), asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    assert "timeout graceful shutdown exceeded" not in caplog.text


@pytest.mark.parametrize("fields", [[("connection", "close")], []], ids=["close", "keep-alive"])
def test_a_connection_reset_by_its_client_leaves_no_timer_holding_it(
    fields: list[tuple[str, str]],
) -> None:
    """uvicorn cancels a connection's keep-alive timer (gunicorn's keepalive, 75 s) only when it
    closes cleanly: reset by its client, its protocol stayed referenced until the timer fired
    (some 9 KB of Python objects a connection, tracemalloc). A kept-alive connection did so
    before; since the staged close (app.server.coalesce.LINGER) arms the timer after a closing
    answer too, so did every client that resets its connection once it has read its
    `Connection: close` answer (2,000 of 2,000; none at d31eead)."""
    protocols: list[weakref.ref[GuardedHttpToolsProtocol]] = []

    class Tracked(RecordedProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            protocols.append(weakref.ref(self))
            super().connection_made(transport)

    async def main() -> None:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        config = uvicorn.Config(
            toy, http=Tracked, log_config=None, access_log=False, timeout_keep_alive=75
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve(sockets=[listener]))
        while not server.started:
            await asyncio.sleep(0.01)
        for _ in range(20):
            client = Connection(*await asyncio.open_connection(*listener.getsockname()))
            await client.send(
                h11.Request(method="GET", target="/json", headers=[("host", "t"), *fields]),
                h11.EndOfMessage(),
            )
            await client.answer()
            sock = client.writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.writer.transport.abort()  # a reset, not a FIN
        await asyncio.sleep(0.2)
        gc.collect()
        try:
            assert len(protocols) == 20
            assert [ref for ref in protocols if ref() is not None] == []
        finally:
            server.should_exit = True
            await serving

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def test_an_app_failing_before_its_response_gets_a_500_in_one_write() -> None:
    async def scenario(connect: Client) -> None:
        client = await connect()
        response, body = await client.request("GET", "/fails")
        assert (response.status_code, body) == (500, b"Internal Server Error")
        assert len(WRITES) == 1

    serve(toy, scenario)


@pytest.mark.parametrize("target", ["/fails-halfway", "/stops-after-the-head"])
def test_an_app_stopping_halfway_still_sends_the_head_before_the_close(target: str) -> None:
    """uvicorn closes the connection of a response the app left incomplete: the held head
    goes out first, as uvicorn's own write had sent it."""

    async def scenario(connect: Client) -> None:
        client = await connect()
        await client.send(
            h11.Request(method="GET", target=target, headers=[("host", "test")]),
            h11.EndOfMessage(),
        )
        received = await client.rest()
        assert received.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"content-length: 10\r\n" in received
        assert received.endswith(b"\r\n\r\nfour" if target == "/fails-halfway" else b"\r\n\r\n")

    serve(toy, scenario)


def test_a_connection_closed_under_a_pipelined_answer_drops_it_without_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A request still being answered, a request pipelined behind it, and then the connection
    closes (here the client's half-close with that request's body cut short, which closes it at
    once: app.server.protocol's `eof_received`; until the twenty-second session the server's
    refusal of that request's misframed body did, and before that of bytes that are not HTTP or
    of a whole head over the limit, all since answered after the requests before them): uvicorn
    marks only the queued cycle disconnected, so the first one writes on a closed transport
    (uvloop raises: an "Exception in ASGI application" traceback a request). The write is
    dropped, as a write on a lost connection is: no error, and the server serves on."""

    async def scenario(connect: Client) -> None:
        RELEASE["held"] = release = asyncio.Event()
        client = await connect()
        held = b"POST /held-after-its-body HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n{}"
        queued = b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 10\r\n\r\nabc"
        client.writer.write(held + queued)
        client.writer.write_eof()
        try:
            assert await client.rest() == b""  # closed before any answer
        finally:
            release.set()  # the held request is answered on a closed connection
        response, _ = await (await connect()).request("GET", "/json")
        assert response.status_code == 200

    with caplog.at_level("ERROR"):
        serve(toy, scenario)
    assert not [record for record in caplog.records if record.exc_info], caplog.text


def test_the_service_drops_a_merged_answer_whose_connection_closed_without_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The fuzz's case: an OIP request to the full model waits a loop pass for its merged
    onnxruntime call; a request pipelined behind it and bytes that are not HTTP: answered in
    order, then the 400 closes the connection (until the twenty-first session the 400 came first
    and closed it under the merged answer, which had to be dropped quietly)."""
    body = json.dumps(infer_body(FULL_EXAMPLE)).encode()
    head = b"POST /v2/models/delay-full/infer HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
    app = create_app(Settings(models_dir=MODELS_DIR))

    async def scenario(connect: Client) -> None:
        client = await connect()
        request = head + b"content-length: %d\r\n\r\n" % len(body) + body
        client.writer.write(
            request + b"GET /v2/health/ready HTTP/1.1\r\nhost: t\r\n\r\nNOT HTTP\r\n\r\n"
        )
        statuses = re.findall(rb"HTTP/1.1 (\d{3}) ", await client.rest())
        assert statuses == [b"200", b"200", b"400"]
        response, answer = await (await connect()).request(
            "POST", "/v2/models/delay-full/infer", body, (("content-type", "application/json"),)
        )
        assert response.status_code == 200, answer

    with caplog.at_level("ERROR"):
        serve(app, scenario)
    assert not [record for record in caplog.records if record.exc_info], caplog.text


def test_a_half_closed_connection_gets_every_answer_then_is_closed() -> None:
    """The client sends a request still to be answered and one pipelined behind it, then
    half-closes: both are answered, the last with the close (app.server.protocol's
    eof_received; uvicorn's protocol closed at the end of stream and answered neither)."""

    async def scenario(connect: Client) -> None:
        RELEASE["held"] = release = asyncio.Event()
        client = await connect()
        held, queued = (b"GET /%s HTTP/1.1\r\nhost: t\r\n\r\n" % p for p in (b"held", b"json"))
        client.writer.write(held + queued)
        client.writer.write_eof()
        await asyncio.sleep(0.05)  # the server reads the end of stream before the answer
        release.set()
        received = await client.rest()
        heads = re.findall(rb"HTTP/1\.1 \d+ [^\r]*\r\n(?:[^\r]+\r\n)*\r\n", received)
        assert [head.split(b" ")[1] for head in heads] == [b"200", b"200"], received
        assert b"connection: close" in heads[1]

    serve(toy, scenario)


def test_a_client_that_left_before_its_answers_leaves_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client that closes outright is, at the end of stream, a half-close: what it sent in
    full is answered into a socket its peer has closed, which must pass quietly."""

    async def scenario(connect: Client) -> None:
        for _ in range(20):
            RELEASE["held"] = release = asyncio.Event()
            client = await connect()
            held, queued = (b"GET /%s HTTP/1.1\r\nhost: t\r\n\r\n" % p for p in (b"held", b"json"))
            client.writer.write(held + queued * 3)
            await client.writer.drain()
            client.writer.close()
            await asyncio.sleep(0.05)
            release.set()  # four answers for a client that is gone
            await asyncio.sleep(0.05)
        response, _ = await (await connect()).request("GET", "/json")
        assert response.status_code == 200

    with caplog.at_level("DEBUG"):
        serve(toy, scenario)
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


def test_the_service_answers_a_half_closed_merged_request() -> None:
    """The wire fuzz's case: an OIP request to the full model (answered a loop pass later, in a
    merged onnxruntime call) and a readiness request pipelined behind it, then a half-close."""
    body = json.dumps(infer_body(FULL_EXAMPLE)).encode()
    head = b"POST /v2/models/delay-full/infer HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
    app = create_app(Settings(models_dir=MODELS_DIR))

    async def scenario(connect: Client) -> None:
        client = await connect()
        client.writer.write(head + b"content-length: %d\r\n\r\n" % len(body) + body)
        client.writer.write(b"GET /v2/health/ready HTTP/1.1\r\nhost: t\r\n\r\n")
        client.writer.write_eof()
        received = await client.rest()
        assert received.startswith(b"HTTP/1.1 200 "), received
        assert received.count(b"HTTP/1.1 200 ") == 2, received
        assert received.endswith(b'{"ready":true}'), received

    serve(app, scenario)


@pytest.mark.parametrize("chunked", [False, True], ids=["sized", "chunked"])
def test_the_service_scores_a_predict_request_offering_h2c(chunked: bool) -> None:
    """`curl --http2` and Java's HttpClient offer HTTP/2 on a cleartext POST (`Upgrade: h2c`):
    the flight is scored as without the offer, in HTTP/1.1 (app.server.upgrade; httptools had
    dropped the body: a 400 `the request body is empty`), and the connection serves on."""
    body = json.dumps({"flights": [FULL_EXAMPLE]}).encode()
    framing = (
        b"transfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        if chunked
        else b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    offer = b"connection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
    head = b"POST /predict HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n" + offer
    app = create_app(Settings(models_dir=MODELS_DIR))
    models = ModelSet.load(MODELS_DIR)  # the label of models/ (0 for the committed ones)
    label = int(models.predict(FlightValidator(models.operators, 1).batch([FULL_EXAMPLE])).delayed)

    async def scenario(connect: Client) -> None:
        client = await connect()
        ready = b"GET /v2/health/ready HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
        client.writer.write(head + framing + ready)
        received = await client.rest()
        assert received.startswith(b"HTTP/1.1 200 "), received
        assert b'\r\n\r\n{"predict":[%d]}HTTP/1.1 200 ' % label in received, received
        assert received.endswith(b'{"ready":true}'), received

    serve(app, scenario)


def test_the_service_answers_each_request_in_one_write() -> None:
    """The project's app (request IDs, metrics, its errors): every /predict answer, valid or
    not, and the other routes' with a body, in one write."""
    cases = json.loads((PAYLOADS / "predict_valid.json").read_text(encoding="utf-8"))
    cases += json.loads((PAYLOADS / "predict_invalid.json").read_text(encoding="utf-8"))[:5]
    app = create_app(Settings(models_dir=MODELS_DIR, max_flights=1000))

    async def scenario(connect: Client) -> None:
        client = await connect()
        headers = (("content-type", "application/json"), ("x-request-id", "coalesce-1"))
        for case in cases:
            if "body" not in case:
                continue
            body = json.dumps(case["body"]).encode()
            response, answer = await client.request("POST", "/predict", body, headers)
            assert response.status_code in (200, 400, 413, 415, 422), answer
            assert (b"x-request-id", b"coalesce-1") in response.headers
            assert WRITES[-1].endswith(answer)
        response, _ = await client.request("GET", "/v2/health/ready")
        assert response.status_code == 200
        predictions = sum(1 for case in cases if "body" in case)
        assert len(WRITES) == predictions + 1

    serve(app, scenario)


def test_the_uvicorn_internals_the_coalescing_relies_on_are_there() -> None:
    """app.server.coalesce stands in for the transport of uvicorn's cycle and reads the cycle's
    state when it writes the head; pyproject pins a tested uvicorn range, and this fails loudly the
    day a release changes what it relies on."""
    cycle_source = inspect.getsource(RequestResponseCycle)
    # the cycle uses no more of its transport than app.server.coalesce passes on
    used = set(re.findall(r"self\.transport\.(\w+)", cycle_source))
    assert used == {"write", "close", "is_closing"}, used
    assert "self.transport = transport" in cycle_source
    # the head is written once the response has started, with its framing read from the headers
    send = inspect.getsource(RequestResponseCycle.send)
    started = send.index("self.response_started = True")
    length = send.index("self.expected_content_length = int(")
    chunked = send.index("self.chunked_encoding = True")
    head = send.index('self.transport.write(b"".join(content))')
    assert started < length < chunked < head
    # a HEAD answer's body is never written; a Content-Length body is, even empty, when complete
    assert 'if self.scope["method"] == "HEAD":' in send
    assert "self.transport.write(body)" in send
    # every cycle starts through `_start_asgi_task`, which the guarded protocol overrides
    headers_complete = inspect.getsource(HttpToolsProtocol.on_headers_complete)
    assert "transport=self.transport" in headers_complete
    assert "self._start_asgi_task(self.cycle, app)" in headers_complete
    assert "self._start_asgi_task(cycle, app)" in inspect.getsource(
        HttpToolsProtocol.on_response_complete
    )

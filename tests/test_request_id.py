"""app.observability.request_id: the header on every answer, sane incoming IDs kept, others
replaced, the ID in log records, and a fresh prefix in every forked worker."""

from __future__ import annotations

import contextvars
import logging
import os
import re
from collections.abc import Coroutine
from typing import Any

import pytest
from starlette.testclient import TestClient

from app.observability import request_id
from app.observability.request_id import (
    HEADER,
    MAX_LENGTH,
    RequestIdMiddleware,
    accepted,
    caller_id,
    new_id,
)
from benchmarks.asgi import request_caller
from tests.conftest import PADDED_REQUEST_IDS, SEVERAL_REQUEST_IDS

GENERATED = re.compile(r"[0-9a-f]{12}-[0-9a-f]+")


def test_every_answer_carries_a_generated_id(client: TestClient) -> None:
    answers = [
        client.get("/health"),
        client.get("/nope"),  # 404
        client.get("/predict"),  # 405
        client.post("/predict", content=b"{", headers={"content-type": "application/json"}),
    ]
    ids = [answer.headers["x-request-id"] for answer in answers]
    assert all(GENERATED.fullmatch(value) for value in ids), ids
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    "incoming", ["abc-123", "lb.7f3a:9c2e/0001+x=", "a" * MAX_LENGTH, "0"], ids=str
)
def test_a_sane_incoming_id_is_kept(client: TestClient, incoming: str) -> None:
    assert client.get("/health", headers={"X-Request-ID": incoming}).headers["x-request-id"] == (
        incoming
    )


@pytest.mark.parametrize(
    "incoming",
    ["a" * (MAX_LENGTH + 1), "has space", "semi;colon", 'quote"d', "<script>", "é", "tab\tin"],
)
def test_an_insane_incoming_id_is_replaced(client: TestClient, incoming: str) -> None:
    answer = client.get("/health", headers={b"X-Request-ID": incoming.encode("utf-8")})
    assert GENERATED.fullmatch(answer.headers["x-request-id"])


@pytest.mark.parametrize("incoming", [*PADDED_REQUEST_IDS, "abc-1\t", "\tabc-1 \t"], ids=repr)
def test_spaces_and_tabs_around_an_incoming_id_are_no_part_of_it(
    client: TestClient, incoming: str
) -> None:
    """The app sees them where no HTTP/1.1 parser dropped them first: gRPC's metadata, a test
    client, a Lambda event."""
    answer = client.get("/health", headers={b"X-Request-ID": incoming.encode("utf-8")})
    assert answer.headers["x-request-id"] == "abc-1"


@pytest.mark.parametrize(("sent", "kept"), SEVERAL_REQUEST_IDS, ids=str)
def test_of_several_incoming_ids_the_first_is_judged(
    client: TestClient, sent: list[str], kept: str | None
) -> None:
    headers = [(b"x-request-id", value.encode()) for value in sent]
    answered = client.get("/health", headers=headers).headers["x-request-id"]
    assert answered == kept if kept is not None else GENERATED.fullmatch(answered)
    judged = caller_id((HEADER, value.encode()) for value in sent).decode()
    assert judged == kept if kept is not None else GENERATED.fullmatch(judged)


def test_a_500_carries_the_id_and_its_log_line_too(caplog: pytest.LogCaptureFixture) -> None:
    """The middleware sits outside Starlette's error middleware: the 500 it writes is covered."""
    from app.main import Service

    async def broken(request: Any) -> Any:
        raise RuntimeError("boom")

    from starlette.routing import Route

    from app.rest.http import EXCEPTION_HANDLERS

    request_id.install_log_context()
    app = Service(routes=[Route("/broken", broken)], exception_handlers=EXCEPTION_HANDLERS)
    with TestClient(app, raise_server_exceptions=False) as client, caplog.at_level(logging.ERROR):
        answer = client.get("/broken", headers={"X-Request-ID": "trace-500"})
    assert answer.status_code == 500
    assert answer.headers["x-request-id"] == "trace-500"
    assert "Traceback" not in answer.text
    records = [record for record in caplog.records if "unhandled error" in record.getMessage()]
    assert records
    assert records[0].request_id == "trace-500"  # type: ignore[attr-defined]


def test_log_records_outside_a_request_show_a_dash() -> None:
    request_id.REQUEST_ID.set(b"")  # in-process calls above ran in this thread's context
    request_id.install_log_context()
    factory = logging.getLogRecordFactory()
    request_id.install_log_context()  # idempotent: one wrapper, not two
    assert logging.getLogRecordFactory() is factory
    record = logging.getLogger("app").makeRecord("app", logging.INFO, __file__, 1, "x", (), None)
    assert record.request_id == request_id.NO_REQUEST == "-"  # type: ignore[attr-defined]
    assert record.trace_id is None  # type: ignore[attr-defined]


def test_outside_any_request_there_is_no_id_nor_trace() -> None:
    """The context variables' defaults, in a context no request ever ran in (the test above
    sets the ID back by hand)."""
    fresh = contextvars.Context()
    assert fresh.run(request_id.current) == "-"
    assert fresh.run(request_id.current_trace) is None


def test_the_formatter_gives_a_record_made_elsewhere_its_ids() -> None:
    """A record that no factory of ours made (before install_log_context, or another
    library's factory) is formatted with the current IDs, not a KeyError."""
    formatter = request_id.RequestIdFormatter("%(request_id)s %(trace_id)s %(message)s")
    record = logging.LogRecord("other", logging.INFO, __file__, 1, "x", (), None)
    assert contextvars.Context().run(formatter.format, record) == "- None x"


def test_an_id_is_at_most_128_characters_and_absent_means_a_new_one() -> None:
    assert accepted(b"a" * 128)
    assert not accepted(b"a" * 129)
    assert not accepted(b"")
    assert GENERATED.fullmatch(caller_id([(b"other", b"x")]).decode())
    assert GENERATED.fullmatch(caller_id([]).decode())


def test_the_middleware_copies_a_shared_response_message() -> None:
    """A response may send one prebuilt message: the ID must not accumulate in it."""
    shared: dict[str, Any] = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain")],
    }

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(shared)
        await send({"type": "http.response.body", "body": b""})

    call = request_caller(RequestIdMiddleware(app), "GET", "/")
    for _ in range(3):
        start = call()[0]
        assert [name for name, _ in start["headers"]].count(HEADER) == 1
    assert shared["headers"] == [(b"content-type", b"text/plain")]


def test_lifespan_and_other_scopes_pass_through() -> None:
    seen = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    middleware = RequestIdMiddleware(app)
    coroutine = middleware({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert isinstance(coroutine, Coroutine)  # the app's own, passed through
    with pytest.raises(StopIteration):
        coroutine.send(None)
    assert seen == ["lifespan"]


def test_generated_ids_are_unique_and_accepted_back() -> None:
    ids = {new_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(accepted(value) for value in ids)


def test_a_forked_worker_gets_its_own_prefix() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its first ID and leave at once
        os.write(write, new_id())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100)
    os.close(read)
    os.waitpid(pid, 0)
    assert child.split(b"-")[0] != new_id().split(b"-")[0]


VALID_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("traceparent", "trace"),
    [
        (VALID_TRACEPARENT, "4bf92f3577b34da6a3ce929d0e0e4736"),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        # a later version may append fields after a dash
        (
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        (
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ),
    ],
)
def test_a_valid_traceparent_gives_its_trace_id(traceparent: str, trace: str) -> None:
    assert request_id.trace_id(traceparent.encode()) == trace.encode()


@pytest.mark.parametrize(
    "traceparent",
    [
        "",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",  # uppercase
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace ID
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero parent ID
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # v00 has 4 fields
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01extra",  # no dash before more
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # short trace ID
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bg-01",  # not hex
    ],
)
def test_an_invalid_traceparent_is_ignored_never_refused(
    client: TestClient, traceparent: str
) -> None:
    assert request_id.trace_id(traceparent.encode()) == b""
    if "\n" in traceparent:
        return  # not a header value an HTTP client will send
    answer = client.post(
        "/predict",
        json={"flights": [{"OPERA": "Grupo LATAM", "TIPOVUELO": "N", "MES": 3}]},
        headers={"traceparent": traceparent},
    )
    assert answer.status_code == 200
    assert "traceparent" not in answer.headers


def test_a_valid_traceparent_is_echoed_and_tags_the_log_records(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from app.main import Service

    async def logs(request: Any) -> Any:
        logging.getLogger("app").warning("inside")
        return PlainTextResponse("ok")

    request_id.install_log_context()
    with (
        TestClient(Service(routes=[Route("/logs", logs)])) as local,
        caplog.at_level(logging.WARNING),
    ):
        answer = local.get("/logs", headers={"traceparent": VALID_TRACEPARENT})
    assert answer.headers["traceparent"] == VALID_TRACEPARENT
    (record,) = [r for r in caplog.records if r.getMessage() == "inside"]
    assert record.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"  # type: ignore[attr-defined]
    assert (
        client.get("/health", headers={"traceparent": VALID_TRACEPARENT}).headers["traceparent"]
        == VALID_TRACEPARENT
    )


def test_two_traceparents_are_ignored(client: TestClient) -> None:
    answer = client.get(
        "/health", headers=[("traceparent", VALID_TRACEPARENT), ("traceparent", VALID_TRACEPARENT)]
    )
    assert answer.status_code == 200
    assert "traceparent" not in answer.headers

"""app.observability.logs in-process: JSON lines, the text format, the access line (the deployed
server's lines: tests/test_server_observability.py)."""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

import pytest
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from app.errors import LOGGED_PATH_CHARS, loggable
from app.main import Service
from app.observability import logs, request_id
from app.settings import Settings
from tests.conftest import answer_499_through

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def record(
    message: str = "hello %s", args: tuple[Any, ...] = ("world",), **extra: Any
) -> logging.LogRecord:
    made = logging.getLogger("app").makeRecord(
        "app", logging.WARNING, __file__, 1, message, args, None
    )
    for name, value in extra.items():
        setattr(made, name, value)
    return made


def test_a_json_line_is_one_object_with_time_level_message_and_ids() -> None:
    line = logs.JsonFormatter().format(record(request_id="abc-1", trace_id="4bf9"))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "hello world"
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "app"
    assert (entry["request_id"], entry["trace_id"]) == ("abc-1", "4bf9")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", entry["time"])


def test_a_json_line_outside_a_request_has_null_ids_and_keeps_a_traceback_on_one_line() -> None:
    request_id.REQUEST_ID.set(b"")
    try:
        raise ValueError("multi\nline")
    except ValueError:
        failed = record("failed", (), exc_info=sys.exc_info())
        failed.exc_info = sys.exc_info()
    line = logs.JsonFormatter().format(failed)
    assert "\n" not in line
    entry = json.loads(line)
    assert (entry["request_id"], entry["trace_id"]) == (None, None)
    assert "ValueError: multi\nline" in entry["exception"]


def test_text_is_the_default_format() -> None:
    assert Settings.from_env({}).log_format == "text"
    line = logs.formatter("text").format(record(request_id="abc-1"))
    assert re.fullmatch(r"\[.+\] \[\d+\] \[WARNING\] \[abc-1\] hello world", line)
    with pytest.raises(ValueError, match="LOG_FORMAT='xml'"):
        Settings.from_env({"LOG_FORMAT": "xml"})


def app_with_access_log() -> Service:
    async def ok(request: Any) -> Any:
        return PlainTextResponse("ok")

    async def broken(request: Any) -> Any:
        raise RuntimeError("boom")

    app = Service(routes=[Route("/items/{id}", ok), Route("/broken", broken)])
    app.state.settings = Settings(access_log="-")
    return app


def test_the_access_line_has_route_status_and_duration(caplog: pytest.LogCaptureFixture) -> None:
    request_id.install_log_context()
    with (
        TestClient(app_with_access_log(), raise_server_exceptions=False) as client,
        caplog.at_level(logging.INFO, logger="app.access"),
    ):
        client.get("/items/7", headers={"X-Request-ID": "req-7", "traceparent": TRACEPARENT})
        client.get("/broken")
        client.get("/nowhere")
    lines = [
        json.loads(logs.JsonFormatter().format(r)) for r in caplog.records if r.name == "app.access"
    ]
    assert [(line["route"], line["status"]) for line in lines] == [
        ("/items/{id}", 200),
        ("/broken", 500),
        ("<unmatched>", 404),
    ]
    first = lines[0]
    assert (first["method"], first["path"], first["request_id"]) == ("GET", "/items/7", "req-7")
    assert first["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert first["message"].startswith("GET /items/7 200 ")
    assert all(0 < line["duration_ms"] < 10_000 for line in lines)


def test_a_path_is_logged_on_one_line_and_cut_short(caplog: pytest.LogCaptureFixture) -> None:
    """Decoded, `%0a` is a line feed: a path holding one wrote a forged line into the text access
    log; and a 16 KiB path was logged whole, on every request."""
    forged = "7\n[2026-12-04 16:00:00 +0000] [1] [INFO] GET /admin 200 0.1 ms"
    with (
        TestClient(app_with_access_log(), raise_server_exceptions=False) as client,
        caplog.at_level(logging.INFO, logger="app.access"),
    ):
        client.get("/items/" + forged.replace("\n", "%0a").replace(" ", "%20"))
        client.get("/items/" + "x" * 12_000)
        client.get("/items/caf%C3%A9")
    text = [logs.formatter("text").format(r) for r in caplog.records if r.name == "app.access"]
    assert len(text) == 3
    assert all("\n" not in line for line in text)
    assert "/items/" + forged.replace("\n", "\\n") in text[0]
    assert "x" * LOGGED_PATH_CHARS not in text[1]
    assert "x" * (LOGGED_PATH_CHARS - 10) + "…" in text[1]
    assert "/items/café " in text[2]  # printable: as it is


def test_a_path_of_exactly_the_logged_length_is_logged_whole() -> None:
    whole = "/" + "x" * (LOGGED_PATH_CHARS - 1)
    assert loggable(whole) == whole
    assert loggable(whole + "y") == whole + "…"


def test_no_access_line_for_an_answer_the_http_layer_gave(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """app.server.protocol answered (and logged a warning line for) a request whose app was
    running: the app's answer to the closed connection has no access line of its own."""

    def access_lines(marked: bool) -> int:
        caplog.clear()
        answer_499_through(logs.AccessLogMiddleware, marked)
        return sum(r.name == "app.access" for r in caplog.records)

    with caplog.at_level(logging.INFO, logger="app.access"):
        assert access_lines(marked=False) == 1
        assert access_lines(marked=True) == 0


def test_the_access_log_is_not_in_the_stack_unless_asked() -> None:
    app = app_with_access_log()
    app.state.settings = Settings()

    def layers(stack: Any) -> list[type]:
        found = []
        while stack is not None:
            found.append(type(stack))
            stack = getattr(stack, "app", None)
        return found

    assert logs.AccessLogMiddleware not in layers(app.build_middleware_stack())
    app.state.settings = Settings(access_log="-")
    assert logs.AccessLogMiddleware in layers(app.build_middleware_stack())


@pytest.fixture
def app_loggers_restored() -> Any:
    """route_app_lines sets the process's `app` loggers: each test leaves them as it found them."""
    saved = [
        (logger, logger.handlers, logger.level, logger.propagate)
        for logger in (logging.getLogger("app"), logs.access_logger)
    ]
    yield
    for logger, handlers, level, propagate in saved:
        logger.handlers, logger.level, logger.propagate = handlers, level, propagate


@pytest.mark.usefixtures("app_loggers_restored")
def test_app_lines_go_to_the_given_handlers_and_access_lines_only_when_asked() -> None:
    errors, access = logging.NullHandler(), logging.NullHandler()
    before: list[logging.Handler] = [logging.NullHandler()]
    logs.access_logger.handlers = before
    logs.route_app_lines([errors], "WARNING", None)
    app_logger = logging.getLogger("app")
    assert (app_logger.handlers, app_logger.level, app_logger.propagate) == ([errors], 30, False)
    assert logs.access_logger.handlers is before  # no ACCESS_LOG: left alone
    logs.route_app_lines([errors], logging.INFO, [access])
    assert logs.access_logger.handlers == [access]
    assert (logs.access_logger.level, logs.access_logger.propagate) == (logging.INFO, False)


@pytest.mark.parametrize(
    "path",
    ["/srv/models/releases/año ✈ 🛫", "/srv/models/releases/a\udcf1o"],
    ids=["utf-8", "undecodable"],
)
def test_a_json_line_is_ascii_and_holds_any_path(path: str) -> None:
    """A release's path in a line (`models checked: …`): written in the stream's encoding, a
    latin-1 locale's `ñ` was no UTF-8 and its lack of `✈` cost the line; a name whose bytes the
    locale could not decode (a lone surrogate) raised, a traceback in the line's place."""
    line = logs.JsonFormatter().format(record("models checked: %s", (path,)))
    assert line.isascii()
    assert "\n" not in line
    assert json.loads(line)["message"] == f"models checked: {path}"

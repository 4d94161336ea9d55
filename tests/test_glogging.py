"""app.server.glogging: the gunicorn master's lines in LOG_FORMAT."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import pytest
from gunicorn.config import Config

from app.observability.logs import JsonFormatter
from app.server.glogging import GunicornLogger

GUNICORN_LOGGERS = ("gunicorn.error", "gunicorn.access")


@pytest.fixture(autouse=True)
def fresh_gunicorn_loggers() -> Iterator[None]:
    """gunicorn's loggers are the process's: each test starts them without handlers and leaves
    them as it found them."""
    saved = {name: logging.getLogger(name).handlers for name in GUNICORN_LOGGERS}
    for name in GUNICORN_LOGGERS:
        logging.getLogger(name).handlers = []
    yield
    for name, handlers in saved.items():
        logging.getLogger(name).handlers = handlers


def streams(logger: logging.Logger) -> list[logging.Handler]:
    """The handlers gunicorn made for `-` (pytest adds its capturing ones beside them)."""
    return [handler for handler in logger.handlers if type(handler) is logging.StreamHandler]


@pytest.mark.parametrize(
    ("log_format", "json_lines"), [("json", True), (" JSON ", True), ("text", False)]
)
def test_the_masters_handlers_write_json_lines_only_with_log_format_json(
    monkeypatch: pytest.MonkeyPatch, log_format: str, json_lines: bool
) -> None:
    monkeypatch.setenv("LOG_FORMAT", log_format)
    config = Config()
    config.set("errorlog", "-")
    config.set("accesslog", "-")
    logger = GunicornLogger(config)
    handlers = streams(logger.error_log) + streams(logger.access_log)
    assert len(handlers) == 2
    assert all(isinstance(h.formatter, JsonFormatter) is json_lines for h in handlers)


def test_a_reload_keeps_the_json_format(monkeypatch: pytest.MonkeyPatch) -> None:
    """gunicorn calls `setup` again on SIGHUP, which makes the handlers anew."""
    monkeypatch.setenv("LOG_FORMAT", "json")
    config = Config()
    config.set("errorlog", "-")
    logger = GunicornLogger(config)
    logger.setup(config)
    assert [isinstance(h.formatter, JsonFormatter) for h in streams(logger.error_log)] == [True]


def test_an_access_line_survives_a_stdout_that_cannot_encode_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under a non-UTF-8 locale the access line of a path cut with `…` (app.errors.loggable), or
    holding `✈`, was lost, a traceback on stderr in its place: it is written with escapes."""
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="strict")
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    config = Config()
    config.set("accesslog", "-")
    logger = GunicornLogger(config)
    logger.access_log.info("GET /%s… 404 0.5 ms", "✈" * 3)
    stdout.flush()
    written = stdout.buffer.getvalue()
    assert written.endswith(b"GET /\\u2708\\u2708\\u2708\\u2026 404 0.5 ms\n")

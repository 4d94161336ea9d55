"""Log lines: text (the default) or, with LOG_FORMAT=json, one JSON object per line.

Every line made while a request is handled carries its request ID, and the caller's trace ID
when it sent a valid `traceparent` (app.observability.request_id). With ACCESS_LOG set,
`AccessLogMiddleware` writes one line per request with its route template, status and duration,
instead of uvicorn's (which knows neither the route nor the duration). The gunicorn master's own
lines (start-up, reload, worker exits) take the same format through
app.server.glogging.GunicornLogger (gunicorn.conf.py): not here, since this module is imported
wherever the app runs, and the Lambda bundle (deploy/aws/build.sh) has no gunicorn.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import loggable
from app.observability.metrics import ANSWERED_BY_SERVER, UNMATCHED_ROUTE
from app.observability.request_id import (
    NO_REQUEST,
    RequestIdFormatter,
    current,
    current_trace,
    install_log_context,
)

TEXT_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] [%(request_id)s] %(message)s"
DATE_FORMAT = "[%Y-%m-%d %H:%M:%S %z]"
ACCESS_FIELDS = ("method", "path", "route", "status", "duration_ms")
access_logger = logging.getLogger("app.access")


class JsonFormatter(logging.Formatter):
    """time (UTC, ISO 8601, milliseconds), level, message, logger, pid, request_id and
    trace_id (null outside a request), the access fields when the record has them, and the
    traceback as `exception`; in ASCII, other characters escaped (`\\u00f1`). orjson refuses a
    lone surrogate, which a path holds where its bytes are not the locale's (os.fsdecode): the
    line then raised, a traceback in its place, and `cannot start` at start-up with it."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None) or current()
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            "pid": record.process,
            "request_id": None if request_id == NO_REQUEST else request_id,
            "trace_id": getattr(record, "trace_id", None) or current_trace(),
        }
        for field in ACCESS_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        try:
            line = orjson.dumps(entry)
        except TypeError:  # a lone surrogate: a path's bytes the locale could not decode
            return json.dumps(entry, separators=(",", ":"), default=str)
        # ASCII, so a JSON line whatever the stream's encoding: a latin-1 locale wrote `ñ` as a
        # byte no UTF-8 reader takes, and a character it lacks cost the line (a traceback instead)
        return (
            line.decode()
            if line.isascii()
            else json.dumps(orjson.loads(line), separators=(",", ":"))
        )


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of every worker log line, for LOG_FORMAT."""
    if log_format == "json":
        return JsonFormatter()
    return RequestIdFormatter(TEXT_FORMAT, DATE_FORMAT)


def route_app_lines(
    handlers: list[logging.Handler], level: int | str, access: list[logging.Handler] | None
) -> None:
    """Where the app's lines go in a serving process (a gunicorn worker, app.server.worker; a
    Lambda environment, deploy/aws/handler.py): its loggers' lines to `handlers` at `level`,
    with ACCESS_LOG the access lines to `access`, each line carrying its request's ID; never
    to the root logger, whose format knows no request ID."""
    install_log_context()
    app_logger = logging.getLogger("app")
    app_logger.handlers = handlers
    app_logger.setLevel(level)
    app_logger.propagate = False
    if access is not None:
        access_logger.handlers = access
        access_logger.setLevel(logging.INFO)
        access_logger.propagate = False


class AccessLogMiddleware:
    """One line per HTTP request, once it is answered: method, path, route template, status
    and milliseconds from the request to the end of the answer. Only in the stack when
    ACCESS_LOG is set (app.main): off, it costs nothing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            duration_ms = round((time.perf_counter() - start) * 1000, 3)
            template = getattr(scope.get("route"), "path", None)
            route = template if isinstance(template, str) else UNMATCHED_ROUTE
            if ANSWERED_BY_SERVER not in scope:  # else its warning line stands for it
                log_access(scope["method"], scope["path"], route, status, duration_ms)


def log_access(method: str, path: str, route: str, status: int, duration_ms: float) -> None:
    """The access line of one answer: AccessLogMiddleware's, and app.server.protocol's for a request
    it sheds without running the app."""
    trace = current_trace()
    path = loggable(path)
    access_logger.info(
        "%s %s %d %.3f ms%s",
        method,
        path,
        status,
        duration_ms,
        f" trace={trace}" if trace else "",
        extra={
            "method": method,
            "path": path,
            "route": route,
            "status": status,
            "duration_ms": duration_ms,
        },
    )

"""Calls an ASGI app in-process with no server and no event loop: the request path alone.

The app never waits on anything real (the body is already in memory), so one `send(None)`
runs the coroutine to completion; a suspension would mean the measurement is wrong, and raises.
An event loop is marked as running meanwhile (never run), for code that schedules a timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

Message = dict[str, Any]


def request_caller(
    app: Callable[..., Any],
    method: str,
    path: str,
    body: bytes = b"",
    query: bytes = b"",
    headers: dict[str, str] | None = None,
) -> Callable[[], list[Message]]:
    """A function that sends the same request to `app` and returns the messages it sent back."""
    raw_headers = [(b"host", b"bench"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": raw_headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    message = {"type": "http.request", "body": body, "more_body": False}
    sent: list[Message] = []

    async def receive() -> Message:
        return message

    async def send(reply: Message) -> None:
        sent.append(reply)

    loop = asyncio.new_event_loop()

    def call() -> list[Message]:
        sent.clear()
        coroutine = app(dict(scope), receive, send)
        asyncio._set_running_loop(loop)
        try:
            coroutine.send(None)
        except StopIteration:
            return sent
        finally:
            asyncio._set_running_loop(None)
        coroutine.close()
        raise RuntimeError(f"{method} {path} suspended: not measurable in-process")

    return call

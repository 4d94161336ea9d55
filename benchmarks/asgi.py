"""Calls an ASGI app in-process with no server and no event loop: the request path alone.

The app never waits on anything real (the body is already in memory), so one `send(None)`
runs the coroutine to completion, but for one thing: a request that app.inference.microbatch merges
(an OIP request onnxruntime scores) waits for the merge it schedules on the loop. (A `/predict`
request is not merged here: `started` tells the app's scorer what a worker's server would,
one request in flight at a time, so it is scored at once, as a worker's lone request is.)
The driver then runs one pass of the loop
(`stop()` then `run_forever()`, public API: about 1.5 us more than the private `_run_once()` it
replaced, paid only by a request that waits for its merge, as a worker pays a pass of its own
loop), in which the merge runs, and goes on. Any other suspension would mean the measurement is
wrong, and raises. An event loop is marked as running while the app's code runs, for code that
schedules a callback or a timer: `asyncio._set_running_loop`, the hook asyncio gives event-loop
implementations (uvloop sets it the same way), checked by tests/test_asgi.py.

`started` runs an app's lifespan on that same loop, in the calling thread, as a uvicorn worker
runs its lifespan and its requests: one thread. (Starlette's TestClient runs the lifespan on a
loop in a thread of its own; the app then hands each prediction's observers to that thread,
app.server.overload.on_event_loop, and the two threads' fight over the GIL put a ~5 ms stall, the
switch interval, on calls that release it, such as onnxruntime's, which no server has.)
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from starlette.applications import Starlette

Message = dict[str, Any]


@functools.cache
def event_loop() -> asyncio.AbstractEventLoop:
    """The one event loop of this process's in-process calls."""
    return asyncio.new_event_loop()


@contextmanager
def started(app: Starlette) -> Iterator[Starlette]:
    """`app` with its lifespan entered on `event_loop()`, in this thread; left on exit."""
    loop = event_loop()
    scorer = getattr(app.state, "scorer", None)
    # this driver's requests: one at a time (app.server.worker tells a worker's)
    if scorer is not None:
        scorer.in_flight = lambda: 1
    lifespan = app.router.lifespan_context(app)
    loop.run_until_complete(lifespan.__aenter__())
    try:
        yield app
    finally:
        loop.run_until_complete(lifespan.__aexit__(None, None, None))


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

    loop = event_loop()

    def call() -> list[Message]:
        sent.clear()
        coroutine = app(dict(scope), receive, send)
        while True:
            asyncio._set_running_loop(loop)
            try:
                waited = coroutine.send(None)
            except StopIteration:
                return sent
            finally:
                asyncio._set_running_loop(None)
            if isinstance(waited, asyncio.Future) and waited.get_loop() is loop:
                # One pass, the merge's: stop() before run_forever() makes the loop run the
                # callbacks already scheduled and exit (documented for AbstractEventLoop.stop).
                loop.stop()
                loop.run_forever()
            if not (isinstance(waited, asyncio.Future) and waited.done()):
                coroutine.close()
                raise RuntimeError(f"{method} {path} suspended: not measurable in-process")

    return call

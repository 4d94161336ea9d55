"""Overload: shed what a worker cannot start soon, and keep large batches off its event loop.

A worker's requests queue as asyncio tasks: uvicorn starts one per request whose head has
arrived, and they run one after another. Past `max_in_flight` unfinished ones, waiting longer
only makes every answer later (at 1,024 connections on 2 workers, p99 went to 5 s), so
app.server.protocol answers the request at once with `shed_response`: 503 with Retry-After and an
X-Request-ID, counted in the metrics like any other answer, without running the app.

Past `crowded_connections` (128) busy connections a worker's bound is `crowded_in_flight`
(16), not `max_in_flight` (64): with that many clients most are shed anyway, and the queue in
front of each served request is what the p99 of the 200s is made of (Little's law: the
requests admitted over the rate they are answered). In development runs at 1,024 connections
on 2 workers this cut that p99 about four-fold without fewer 200s; a worker holding 128
connections or fewer (so 64 clients, however they spread over the workers) never meets the
lower bound, which a plain bound of 32 or 48 shed (reports/reliability.md §10). Busy: a
request in progress, or a 503 within `crowded_window` s (app.server.protocol); counting every open
connection instead, a pool of idle keep-alive connections made a worker shed a small burst.

A client that ignores Retry-After and re-sends at once would turn that 503 into a loop: each
costs parsing and a write on the same cores, and at 1,024 such connections the 503s ate four
fifths of the capacity (reports/reliability.md §10). So Retry-After is enforced, as rate
limiters do: a request a connection sends within `RETRY_AFTER - EARLY_GRACE` s of its last 503
is held (nothing more of its connection parsed, no app, not in flight) and answered
503 once that Retry-After has elapsed (`hold_until`), unless a proxy names another client as its
sender than the 503's (`sender`); a connection's first shed request is
still answered at once, and a client that waits is served as any other. The held answer keeps
the connection alive: closing it too was measured, and cost a fifth or more of the 200s at
1,024 connections (each client then reconnects and is shed at once again) without changing
how a crashed worker's clients spread (reports/reliability.md §3, §10).

A large batch is CPU work of tens of milliseconds (feature encoding, onnxruntime; the one-pass
decoding of app.inference.flights is a few ms even for the largest body and stays on the loop). Run
on the event loop it holds every other request of its worker for that long. Batches of
`offload_flights` or more are therefore scored in one thread per worker: onnxruntime releases
the GIL, and the Python parts give it up every switch interval (5 ms), so small requests keep
being answered meanwhile. One thread, so that batches queue behind one another instead of
multiplying GIL contention.

The Open Inference Protocol's requests (REST JSON or binary, gRPC messages) of `OFFLOAD_BYTES` or
more are also decoded and their tensors checked there: element by element, that is Python work
of up to a hundred milliseconds for a hostile 1-MiB body of tiny elements (rows of one integer,
`[[0],[0],...]`), however few flights the limits then admit. On the loop it held every other
request of the worker for as long: single flights' p99 beside two connections sending such
bodies back to back was 109 ms, 20 ms decoded here (medians of 5 rounds, WORKERS=1, 127.0.0.1,
2026-12-05; docs/api.md). In the batch thread only the C calls (the JSON parse itself, protobuf's)
still hold the loop, since they keep the GIL.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import orjson

from app.errors import Overloaded

if TYPE_CHECKING:
    from app.inference.flights import Columns
    from app.inference.model import Observer, OnnxModel, Prediction

RETRY_AFTER = 1
"""Seconds a shed client is asked to wait: the smallest positive delta-seconds. With 1,024
connections that honour it, the 503s are a few per cent of the answers (reports/reliability.md
§10); a longer or load-scaled wait would save little of that and delay every shed client more."""
EARLY_GRACE = 0.1
"""Seconds by which a request may come before its Retry-After has elapsed and not be held:
the client's timer and this worker's clock (uvloop's ticks in ms, read once per loop turn) may
each be off by a few ms, and a client that waits 0.9 s of a 1-s Retry-After honours it."""
UNSHED_PATHS = frozenset({"/health", "/v2/health/live", "/v2/health/ready", "/metrics"})
"""Never held nor shed: the probes and the scrape, a few microseconds each. Shed, they told an
orchestrator that an overloaded worker was dead or unready (Kubernetes then restarts it, or
takes it out of the endpoints, moving its load onto the others), and left the metrics blank
when they matter most."""
SHED_ROUTE = "<shed>"
"""The route label of shed answers in the metrics (they never reach routing)."""
SHED_ERROR = Overloaded("overloaded: too many requests in flight, retry later")
"""The error of every shed answer (app.rest.openapi documents it on each route)."""
_BODY = orjson.dumps(SHED_ERROR.to_json())
_HEAD = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nretry-after: %d\r\n" % (len(_BODY), RETRY_AFTER)
)

OFFLOAD_BYTES = 16_384
"""Bytes of an OIP request body or message from which it is decoded in the batch thread: below,
even its costliest shape takes the loop about 2 ms (the thread's hand-off costs about 0.1 ms);
bodies this large are mostly batches whose scoring the thread takes anyway (OFFLOAD_FLIGHTS)."""

T = TypeVar("T")
P = ParamSpec("P")


def shed_response(request_id: bytes, close: bool, head_only: bool = False) -> bytes:
    """The whole 503 answer, written by app.server.protocol without starting the app: a shed request
    must cost a small fraction of a served one, or shedding itself eats the capacity. A HEAD
    request's has no body: on a kept-alive connection the client would read it as the start of
    its next answer."""
    connection = b"connection: close\r\n" if close else b""
    body = b"" if head_only else _BODY
    return _HEAD + connection + b"x-request-id: " + request_id + b"\r\n\r\n" + body


FORWARDED_FIELDS = frozenset({b"forwarded", b"x-forwarded-for", b"x-real-ip"})
"""Where a proxy names the client it forwards a request for (ASGI's lower-case names)."""


def sender(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The client a proxy names in the request's first field of FORWARDED_FIELDS (None: no proxy
    named one). A proxy's kept-alive connection carries many clients' requests one after another
    (nginx's and HAProxy's upstream keep-alive): a 503 on it is one client's Retry-After, and held
    on the connection it made the next client to use it, who had had no 503, wait a second for
    one (24 of 48 polite clients' 503s through nginx, 19 of 28 through HAProxy, none of 20
    direct; reports/reliability.md §21). Taken on trust: a client that names another gains only
    what a new connection gives it, a first 503 at once."""
    for name, value in headers:
        if name in FORWARDED_FIELDS:
            return value
    return None


def hold_until(last_shed: float | None, now: float) -> float | None:
    """When a request arriving at `now` on a connection last answered 503 at `last_shed` (None:
    never) is to be answered: None, at once as any request; else its 503, once the Retry-After
    of the last has elapsed."""
    if last_shed is None or now - last_shed >= RETRY_AFTER - EARLY_GRACE:
        return None
    return last_shed + RETRY_AFTER


class BatchThread:
    """Runs the scoring of batches of `min_flights` or more, and the decoding of requests of
    `min_bytes` or more, in this worker's one batch thread."""

    def __init__(self, min_flights: int, min_bytes: int = OFFLOAD_BYTES) -> None:
        self.min_flights = min_flights
        self.min_bytes = min_bytes
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="batch")

    def offloads(self, flights: int) -> bool:
        """Whether a batch of `flights` is scored in the batch thread rather than inline."""
        return flights >= self.min_flights

    async def run(self, flights: int, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if not self.offloads(flights):
            return work(*args, **kwargs)
        return await self._offload(work, *args, **kwargs)

    async def decode(self, size: int, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`work`, the decoding of a request of `size` bytes: in the batch thread from
        `min_bytes`, inline below. Its errors are raised here either way."""
        if size < self.min_bytes:
            return work(*args, **kwargs)
        return await self._offload(work, *args, **kwargs)

    async def _offload(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        call = functools.partial(work, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)


def on_event_loop(observe: Observer, loop: asyncio.AbstractEventLoop) -> Observer:
    """`observe`, run on `loop` when called from another thread (the batch thread's
    predictions), so that what it tallies is only ever touched by the event loop."""
    get_ident = threading.get_ident
    loop_thread = get_ident()

    @functools.wraps(observe)  # inspect.unwrap finds the observer itself
    def observed(model: OnnxModel, columns: Columns, prediction: Prediction) -> None:
        # three named arguments, not *args and **kwargs: every prediction passes here (in-process,
        # 0.2 us of a full-schedule flight's request)
        if get_ident() == loop_thread:
            observe(model, columns, prediction)
        else:
            loop.call_soon_threadsafe(observe, model, columns, prediction)

    return observed

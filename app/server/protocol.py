"""uvicorn's httptools protocol with the limits it lacks: head size, read timeouts, a drain.

Under `uvicorn_worker.UvicornWorker` it is uvicorn, not gunicorn, that parses HTTP, so gunicorn's
`limit_request_line`, `limit_request_fields` and `limit_request_field_size` do nothing, and
uvicorn's httptools protocol has no limit of its own: it buffers a 5 MB header, keeps a
connection that never sends a byte open forever, and waits forever on a trickled body
(reports/reliability.md). This subclass adds, for a few attribute reads per chunk received
(+0.5 us per request, benchmarks/edge_overhead.py):

* a request head (request line + headers) over `max_head_bytes` gets `431` and the connection
  is closed, before its app runs (bytes counted per chunk only while a head is incomplete);
  so does, with `400`, a request with more than one Host field, or an HTTP/1.1 one without
  (RFC 9112 §3.2), and with `505` one of an HTTP major version other than 1 (an HTTP/1.x
  request of a minor version over 1 is served as HTTP/1.1, as RFC 9110 §2.5 asks);
* the answers it gives itself (`431`, `408`, `505`, and `400` for bytes that are not HTTP, a
  body not framed as its headers say, or a request without its one Host field) are counted in
  the metrics under route `<refused>` (REFUSED_ROUTE) with the status sent, as shed ones under
  `<shed>`; bytes that are not HTTP, or a head over the limit, after pipelined requests are
  answered after those (`_refuse_in_turn`, `_refuse_at_start`);
* read timeouts, checked by one sweep a second over the worker's connections (no timer per
  request): a head not complete within `head_timeout` s gets `408` (or a silent close if
  nothing was sent), a body not complete within `body_timeout` s after its head gets `408`;
* a send timeout, by the same sweep: a connection whose answers its client has not read for
  `send_timeout` s (writing paused and not resumed, or a close waiting on its write buffer
  with nothing read) is dropped, what it buffered with it. uvicorn waits for such a client
  forever: its request stays in flight (the sweep saw it idle), so 70 connections of 25
  pipelined metadata GETs, 3 times over, never read, made a worker shed every request (503) for
  as long as they stayed open; and a request that comes while the client reads nothing starts
  only once it does (`resume_writing`): it is not in flight meanwhile;
* an in-flight bound: a request whose head completes while `max_in_flight` requests of this
  worker are unanswered (`crowded_in_flight` while more than `crowded_connections` of its
  connections are busy: a request in progress, or a 503 less than `crowded_window` s ago) is
  answered 503 + Retry-After at once, without running the app
  (app.server.overload), counted in the metrics and, with ACCESS_LOG, in the access log; with
  `hold_early_retries`, a request sent on a connection before the Retry-After of its last 503
  has elapsed (by the same client, when a proxy names one: overload.sender) is held instead:
  nothing more parsed, no app, not in flight, and answered 503 once the Retry-After has elapsed
  (one held answer per connection at most, and one chunk kept unparsed; written at once,
  closing, on shutdown; dropped as soon as the connection is lost);
* a graceful drain: on shutdown an idle keep-alive connection, or one just accepted, is closed
  only once it has been quiet for `DRAIN_QUIET` and `DRAIN_IDLE_HOLD` has passed since its last
  answer (or, sooner, as uvicorn's graceful timeout nears), and a request arriving meanwhile is
  answered with `Connection: close`, instead of uvicorn closing it at once and racing the
  client's next (or first) request, which the client then sees as a reset (measured: 2-3 failed
  requests per 20-SIGHUP storm before, none after); pooled clients whose idle timeout is
  shorter than the hold close it themselves first. A connection the event loop hands over after
  shutdown began (accepted just before the listener closed) drains too (`begin_drain`);
* a bound on the worker's connections (`max_connections`): one past it is made room for by
  closing a connection waiting for a request (nothing lost that its client would not send
  again): the oldest never answered (nothing sent, or a first head still coming in), else the
  longest-idle keep-alive one (as nginx reuses its idle keep-alive connections); if every one
  has a request in progress, it is closed itself; at most one log line a second says how many
  (`_make_room`). Unbounded, 1,100 connections sending nothing took all of a worker's
  descriptors (ulimit 1,024), so that its metrics and gRPC ports and the new connections of
  `/predict` were refused until the head timeout closed them (app.descriptors);
* a client's half-close (`shutdown(SHUT_WR)` once it has sent its requests) ends reading, not
  the connection: the requests it sent in full are answered, the last closing the connection
  (`eof_received`), where uvicorn's protocol closed at once and lost every answer not yet
  written (a held request is still dropped, as when its client leaves);
* the warning line of each answer of the HTTP layer's own at most `REFUSALS_LOGGED_PER_SECOND`
  times a second a worker, the rest summed up in one line (app.observability.log_budget): one
  client's malformed requests wrote 7,223 lines in 2 s.
"""

from __future__ import annotations

import asyncio
import weakref
from asyncio import TimerHandle
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar, cast

import httptools
import orjson
from uvicorn._types import ASGI3Application, HTTPScope
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from app import descriptors
from app.observability import request_id as request_ids
from app.observability.log_budget import LogBudget
from app.observability.logs import log_access
from app.observability.metrics import (
    ANSWERED_BY_SERVER,
    count_closed_connection,
    observe_latency,
)
from app.server.coalesce import LINGER, CoalescingTransport
from app.server.overload import SHED_ROUTE, UNSHED_PATHS, hold_until, sender, shed_response
from app.server.upgrade import AfterIgnoredUpgrade, framing_head

SWEEP_INTERVAL = 1.0
"""Seconds between timeout sweeps: the timeouts' resolution."""
DRAIN_INTERVAL = 0.1
"""Seconds between drain checks once the worker is shutting down."""
REFUSALS_LOGGED_PER_SECOND = 20
"""A worker's warning lines a second for the answers of the HTTP layer's own (`_refuse`)."""
_UNSEEN = object()
REFUSED_ROUTE = "<refused>"
"""The route label, in the metrics, of the answers the HTTP layer gives itself: a request head
over the limit (431), a head or body not received in time (408), bytes that are not HTTP, a
body not framed as its headers say, or a request without its one Host field (400), a request
line of another HTTP version (505), a request pipelined past MAX_PIPELINED (429)."""
HTTP2_REFUSED = (
    "HTTP/2 with prior knowledge is not served on this port: HTTP/1.1 is (an h2c upgrade offer is "
    "answered in HTTP/1.1); gRPC has its own port (GRPC_BIND)"
)
"""The answer to an HTTP/2 connection preface, in the operator's log and to the client."""
VERSION_REFUSED = "HTTP version not served: HTTP/1.1 is (and HTTP/1.0)"
"""The answer to a request line of another version (505)."""
NO_HOST = "no Host header field (HTTP/1.1 requires one)"
TWO_HOSTS = "more than one Host header field"
NOT_FRAMED = "request body not framed as its headers say"
MAX_PIPELINED = 32
"""Requests a connection may have queued behind the one being answered; the next one is refused
(429) in its turn, and the connection closed. httptools parses a whole read: unbounded, one
256 KiB read of pipelined GETs queued about 6,000 requests, and 50 connections sending one each,
never reading, took a worker from 82 to 849 MB (`make serve`, WORKERS=1)."""
PIPELINE_FULL = f"more than {MAX_PIPELINED} requests pipelined before their answers were read"


class _PipelineFull(Exception):
    """Raised from a parser callback, the only way to stop httptools inside a read."""


DRAIN_QUIET = 0.5
"""Seconds a connection must have received nothing, while draining (after `DRAIN_LINGER`), before
it is closed."""
DRAIN_IDLE_HOLD = 16.0
"""Seconds since its last answer (or since it was accepted) a draining connection is left open for
a request, within the drain's budget (`begin_drain`'s `hold`): longer than the idle timeouts of
the usual pooled clients (Node's fetch and undici 4 s, httpx 5 s, aiohttp 15 s), which close it
first. Closed about 1 s into the drain, a connection idle since before it raced the request its
client sent on it at that moment, which the client sees as a reset or "other side closed": 8 of
4,800 POSTs of five clients, in an audit that sent them in that window (reports/reliability.md)."""
DRAIN_LINGER = 0.5
"""Seconds a stopping worker (app.server.worker) still answers keep-alive before its answers close
their connections: past the moment every worker of a stopping server has closed the listener
(each sees the master's SIGTERM within uvicorn's 0.1-s tick). Closed at once, the first worker's
`Connection: close` answers sent its clients' reconnects into the listener the other worker was
closing, and the kernel resets the connections queued when the last copy closes, a request sent
on each: 5 of 197 runs of the short `chaos shutdown` failed, 4 of them with such resets (11
connections queued at the second worker's close, 1 reset, in one traced run; reports/
reliability.md §6). After the linger they are refused, nothing sent; on a reload the new workers
take them."""


@dataclass(frozen=True)
class _Drain:
    closing_from: float
    """From this event-loop time, answers close their connections."""
    closing_by: float
    """By this one, idle connections are closed, however recent their last answer."""


_DRAINING: weakref.WeakKeyDictionary[ServerState, _Drain] = weakref.WeakKeyDictionary()
"""The servers (uvicorn's per-worker state) shutting down, and how."""
_ANSWERED: weakref.WeakKeyDictionary[ServerState, set[asyncio.Task[None]]] = (
    weakref.WeakKeyDictionary()
)
"""Per server: the tasks in uvicorn's task set whose response is complete. uvicorn drops a
task from its set one loop turn after it ends, and the client's next request is often read in
between: counted, the answered requests of one turn pushed a worker with 39 connections past a
bound of 64 (503s at 64 connections, where nothing should be shed)."""
_BUSY: weakref.WeakKeyDictionary[ServerState, set[GuardedHttpToolsProtocol]] = (
    weakref.WeakKeyDictionary()
)
"""Per server: its busy connections, the ones the crowded bound counts (`Limits.bound`). A
connection is added when a request's head completes, removed when the app has answered it, and
a connection answered 503 stays until the sweep finds nothing in progress and its last 503
`crowded_window` s old: its client is expected back after the Retry-After. Idle keep-alive
connections do not count: a pool of 300 of them made a worker shed a burst of 40 past 16."""


_Queue = dict["GuardedHttpToolsProtocol", None]
"""Connections in the order they began to wait, the longest waiting first: a dict for its order,
removals and moves in O(1)."""
_WAITING: weakref.WeakKeyDictionary[ServerState, tuple[_Queue, _Queue]] = (
    weakref.WeakKeyDictionary()
)
"""Per server: its connections not answered yet, in the order they were made, and its answered
ones, in the order their last answers completed (`_make_room` closes them in that order). One
whose request began since may still be in them (`_make_room` passes it by)."""
_MADE_ROOM: weakref.WeakKeyDictionary[ServerState, list[float]] = weakref.WeakKeyDictionary()
"""Per server: [when the last `_make_room` line was logged (loop time), connections closed to
make room since]."""
_REFUSALS_LOGGED: weakref.WeakKeyDictionary[ServerState, LogBudget] = weakref.WeakKeyDictionary()
"""Per server: the budget of `_refuse`'s warning lines."""
_RECEIVING: weakref.WeakKeyDictionary[ServerState, set[GuardedHttpToolsProtocol]] = (
    weakref.WeakKeyDictionary()
)
"""Per server: the connections whose started request still waits for the rest of its body.
Such a request costs the worker no work until its body is in, so the in-flight bound does not
count it: counted, 65 clients a worker trickling their bodies (or never sending them, until the
30-s body timeout) made it shed every other request, probes included."""


def in_flight(server_state: ServerState) -> Callable[[], int]:
    """The count of this server's requests in flight (started, body received, not yet answered),
    as a function: what the in-flight bound counts, and what app.inference.microbatch reads to
    score a request alone in its worker at once."""
    tasks, answered = server_state.tasks, _ANSWERED.setdefault(server_state, set())
    receiving = _RECEIVING.setdefault(server_state, set())
    return lambda: len(tasks) - len(answered) - len(receiving)


def begin_drain(server_state: ServerState, linger: float = 0.0, hold: float = 0.0) -> None:
    """From now on every connection of this server drains from the moment it is made; its
    answers close their connections after `linger` s (`DRAIN_LINGER`), keep-alive until then,
    and an idle one is left open until `DRAIN_IDLE_HOLD` s after its last answer, at most `hold`
    s from now (the time uvicorn's graceful shutdown leaves, less a margin).

    uvicorn asks only the connections in its set to shut down, but a connection accepted just
    before the listener closed is made (`connection_made`) one loop turn later: left alone, it
    was served as keep-alive until uvicorn's graceful timeout cancelled its request 18 s later,
    the request a reload lost (1 in 171,056 in `chaos reload`, reports/reliability.md §9)."""
    now = asyncio.get_running_loop().time()
    _DRAINING[server_state] = _Drain(now + linger, now + hold)


@dataclass(frozen=True)
class Limits:
    max_head_bytes: int = 16_384
    head_timeout: float = 10.0
    body_timeout: float = 30.0
    max_in_flight: int = 64
    hold_early_retries: bool = True
    crowded_connections: int = 128
    crowded_in_flight: int = 16
    crowded_window: float = 2.0
    send_timeout: float = 30.0
    """Seconds a client may leave its answers unread (`_unread`): as long as BODY_TIMEOUT gives it
    to send a body by default; not a setting."""
    max_connections: int = field(
        default_factory=partial(descriptors.default_connections, descriptors.REST_CONNECTIONS)
    )
    """The worker's connections at most (`_make_room`): Settings.max_connections' default."""

    def bound(self, busy: int) -> int:
        """The in-flight bound of a worker with `busy` busy connections (`_BUSY`):
        `max_in_flight`, or, past `crowded_connections`, the lower `crowded_in_flight`
        (app.server.overload)."""
        if busy > self.crowded_connections:
            return min(self.crowded_in_flight, self.max_in_flight)
        return self.max_in_flight


def _response(
    status: int,
    reason: str,
    message: str,
    request_id: bytes,
    head_only: bool = False,
    default_headers: Iterable[tuple[bytes, bytes]] = (),
) -> bytes:
    """An answer of the HTTP layer, closing the connection: JSON and an X-Request-ID, as the
    app's errors (the body left out for a HEAD request), and the server's default headers
    (uvicorn's `Date`, which RFC 9110 requires on a 4xx)."""
    body = orjson.dumps({"error": message})
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n"
    ).encode("ascii")
    head += b"".join(name + b": " + value + b"\r\n" for name, value in default_headers)
    return head + b"x-request-id: " + request_id + b"\r\n\r\n" + (b"" if head_only else body)


def lenient(parser: httptools.HttpRequestParser) -> httptools.HttpRequestParser:
    """`parser` with uvicorn's leniency, and for every version of HTTP/1 too: llhttp takes only
    0.9, 1.0, 1.1 and 2.0, and refused HTTP/1.2 (RFC 9110 §2.5: to be served as HTTP/1.1). Its
    other versions are read only to be refused with a 505 (`_version_refused`), which closes the
    connection, and an HTTP/1.x of a minor version over 1 is framed exactly as HTTP/1.1 (llhttp's
    rules depend on the minor version being over 0 only), so the leniency frames no message
    otherwise. Set on uvicorn's own parser, not on a second one made for each connection."""
    parser.set_dangerous_leniencies(lenient_data_after_close=True, lenient_version=True)
    return parser


def _http11(version: str) -> bool:
    """Whether a request of `version` is served as HTTP/1.1: 1.1 to 1.9 (RFC 9110 §2.5)."""
    return version.startswith("1.") and version != "1.0"


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """One instance per connection, as uvicorn's own; `limits` is set by `guarded_protocol`."""

    limits = Limits()
    log_shed = False
    """Whether a shed request gets its access-log line (ACCESS_LOG)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        lenient(self.parser)
        self.url = b""  # uvicorn's is set by the first request's start: read on a parse error
        self._partial_head = 0
        """Bytes received while the current head is incomplete."""
        self._hosts = 0
        """The Host fields of the request being parsed (`on_header`)."""
        self._watched: object = None
        """The request (its scope, by identity) the last sweep saw waiting, in `_watched_phase`,
        first seen at `_since`."""
        self._watched_phase = "idle"
        self._since = 0.0
        self._quiet: object = _UNSEEN
        """While draining: the cycle (None: no request yet) the drain checks have seen idle
        since `_quiet_since`."""
        self._quiet_since = 0.0
        self._idle_since = self.loop.time()
        """Since when the connection waits for a request: accepted, or its last answer."""
        self._draining = False
        self._answered = _ANSWERED.setdefault(self.server_state, set())
        self._in_flight = in_flight(self.server_state)
        self._busy = _BUSY.setdefault(self.server_state, set())
        self._receiving = _RECEIVING.setdefault(self.server_state, set())
        self._last_shed: float | None = None
        """When this connection's last 503 was written (loop time), for its Retry-After."""
        self._shed_for: bytes | None = None
        """The client a proxy named as the last 503's (overload.sender): only its requests are
        held."""
        self._held: RequestResponseCycle | None = None
        """The request held until `_release` answers it (at most one: reading is paused)."""
        self._held_since = 0.0
        self._release_timer: TimerHandle | None = None
        self._unparsed = b""
        """What the client sent while a request was held, parsed after its answer."""
        self._received = 0
        """The size of the chunk being parsed."""
        self._ended_in_chunk = False
        """Whether a request ended in the chunk being parsed: a head that began after it holds
        only part of the chunk."""
        self._refusal: tuple[int, str, str] | None = None
        """The answer (status, reason, message) to bytes that are not HTTP, due once the
        requests before them are answered (`_refuse_in_turn`)."""
        self._trailer: int | None = None
        """Bytes received in a chunked body's trailer section so far, counted from the chunk
        after the one its last chunk's size line came in (`_limit_trailer`); 0 from any chunk's
        size line until its data comes, None outside."""
        self._trailer_fields = 0
        """The size of the trailer section's complete fields (`_limit_trailer`)."""
        self._refusal_at_start: tuple[HTTPScope, int, str, str] | None = None
        """A request parsed whole but refused (its scope), and its answer, given when its turn
        comes, as its app would start (`_refuse_at_start`)."""
        self._unread_since: float | None = None
        """Since when (sweep time) the answers wait for the client to read them (`_unread`)."""
        self._unread_bytes = 0
        """The write buffer's size at the last sweep that saw them wait."""
        self._deferred = False
        """Whether the next request waits for the client to read its answers (`resume_writing`)."""
        self._unanswered, self._answered_ones = _WAITING.setdefault(self.server_state, ({}, {}))
        self._linger_since: float | None = None
        """When the sweep first saw the connection half-closed after its last answer."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._writer = CoalescingTransport(self.transport)  # a response in one write: see there
        _Sweeper.ensure(self.loop, self.connections)
        self._unanswered[self] = None
        if len(self.connections) > self.limits.max_connections:
            self._make_room()
        if self.server_state in _DRAINING and not self._writer.is_closing():
            self.shutdown()

    def _make_room(self) -> None:
        """Closes the connection (another, or this new one) that keeps the worker within
        `max_connections`: of those waiting for a request, first the ones never answered
        (nothing sent yet, or a first head still coming in: what a flood of idle connections
        is), the oldest first, then idle keep-alive ones, the longest idle first; if none is
        waiting, this one. Clients in a pool, each keep-alive connection idle a few ms between
        requests, lost it to a flood of new idle connections (2 resets in 1,500 requests) while
        those were closed in the order they came."""
        victim, kind = _longest_waiting(self._unanswered, self), "unanswered"
        if victim is None:
            victim, kind = _longest_waiting(self._answered_ones, self), "keep_alive"
        if victim is None:
            victim, kind = self, "new"
        victim.transport.close()
        count_closed_connection(kind)
        now = self.loop.time()
        logged = _MADE_ROOM.setdefault(self.server_state, [-SWEEP_INTERVAL, 0.0])
        logged[1] += 1
        if now - logged[0] >= SWEEP_INTERVAL:
            self.logger.warning(
                "%d connection(s) closed to stay within MAX_CONNECTIONS=%d (never-answered ones "
                "first, then idle keep-alive ones, else the new one)",
                logged[1],
                self.limits.max_connections,
            )
            logged[:] = [now, 0.0]

    def _waits_for_request(self) -> bool:
        """Nothing in progress, held, queued or left to write: an idle keep-alive connection,
        one that sent nothing yet, or one whose next request's head is still coming in."""
        return (
            self._held is None
            and self._refusal is None
            and not self._answers_pending()
            and not self._writer.is_closing()
            and not self.transport.get_write_buffer_size()
        )

    def data_received(self, data: bytes) -> None:
        """uvicorn's (0.55), and then the head limit; but a request whose `Upgrade` uvicorn
        does not take (`h2c`) is served with its body, and the connection parses on
        (app.server.upgrade), where httptools dropped both."""
        # nothing is parsed after bytes that are not HTTP, nor after an answer that closes
        if self._refusal is not None or self._writer.is_closing():
            return
        if self._held is not None:  # parsed once the held answer is written (`_release`)
            self._unparsed += data
            self.flow.pause_reading()  # one chunk kept at most
            return
        self._unset_keepalive_if_required()
        self._received = len(data)
        self._ended_in_chunk = False
        trailing = self._trailer is not None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            # uvicorn's answer here is plain text without an ID: this one is the service's
            if isinstance(error.__context__, _PipelineFull):  # set by httptools (tested)
                self._refuse_in_turn(429, "Too Many Requests", PIPELINE_FULL)
            elif len(self.url) > self.limits.max_head_bytes:  # httptools refuses a URL of 64 KiB
                self._refuse_head(in_turn=True)
            elif data.startswith(b"PRI * HTTP/2.0\r\n"):
                self._refuse(400, "Bad Request", HTTP2_REFUSED)
            else:
                detail = (
                    "" if isinstance(error, httptools.HttpParserCallbackError) else f": {error}"
                )
                self._refuse_in_turn(400, "Bad Request", f"not a valid HTTP/1.1 request{detail}")
        except httptools.HttpParserUpgrade as upgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
                return
            head_end = upgrade.args[0]
            self._ignore_upgrade()
            self._limit_head(data[:head_end])
            if data[head_end:] and not self._writer.is_closing():
                self.data_received(data[head_end:])
        else:
            self._limit_head(data)
            if trailing and self._trailer is not None:
                self._limit_trailer(read=len(data))

    def _limit_head(self, data: bytes) -> None:
        """The head limit, counted over the chunks `data` of the head being received."""
        if self._writer.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:
            # The usual case: the head that began is complete, and was measured as it completed
            # (`on_headers_complete`).
            self._partial_head = 0
            return
        if self._ended_in_chunk:
            # Pipelined: the chunk also held the end of the request before (its head, its body),
            # which is not this head's. Counted whole, with each later chunk ending inside a
            # head too, a stream of small pipelined requests summed past the limit (a 431 and
            # the connection closed after 18 KB of 33-byte GETs). What this head has parsed
            # counts; a header still in progress counts with the next chunk, all of it head.
            self._partial_head = self._head_size()
        else:
            self._partial_head += len(data)
        if self._partial_head > self.limits.max_head_bytes:
            self._refuse_head(in_turn=True)

    def _limit_trailer(self, read: int = 0, field: int = 0) -> None:
        """The head limit, for a chunked body's trailer section, `read` more bytes of it or one
        more `field` of that size: measured by its complete fields (a section that came with
        its last chunk's size line) and by the chunks received while in it (one line sent
        without end). httptools gathers a field's value by concatenation until its line ends,
        and uvicorn kept each field: one trailer line sent without end held a worker's event
        loop (a single-flight `/predict` on the same worker took 3.5 s after 20 s of it) and
        grew its memory by hundreds of MB until the body timeout."""
        self._trailer = reads = cast(int, self._trailer) + read
        self._trailer_fields = fields = self._trailer_fields + field
        limit = self.limits.max_head_bytes
        if max(reads, fields) > limit and not self._writer.is_closing():
            message = f"request trailer section over the {limit}-byte limit"
            self._refuse_body(431, "Request Header Fields Too Large", message)

    def _refuse_in_turn(self, status: int, reason: str, message: str) -> None:
        """Bytes that are not HTTP, or a head over the limit still incomplete, after requests not
        yet answered (pipelined in the same chunk, say): refused once those are, answers going
        out in the order their requests came. Refused at once, their answers were lost and the
        client took the 400 for its first request's (which the metrics counted answered). Bytes
        that misframe the body of the request being received are that request's
        (`_refuse_body`). A complete head, which uvicorn has made a request of, waits its turn
        in uvicorn's pipeline instead (`_refuse_at_start`)."""
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope and cycle.more_body:
            self._refuse_body(status, reason, message)
            return
        if not self._answers_pending():
            self._refuse(status, reason, message)
            return
        self._refusal = (status, reason, message)
        self.flow.pause_reading()

    def _refuse_at_start(self, status: int, reason: str, message: str) -> None:
        """The request whose head was just parsed is refused when its turn comes, where its app
        would start (`_start_asgi_task`): after the answers to the requests before it, in order.
        Refused at once, a complete head over the limit queued behind a request in progress lost
        that request's answer (a 431 the only answer on the connection). The first refusal
        stands: it closes the connection, so nothing after it is answered."""
        if self._refusal_at_start is None:
            self._refusal_at_start = (self.scope, status, reason, message)

    def _refuse_if_due(self) -> None:
        """The refusal `_refuse_in_turn` put off, once every request before it is answered
        (unless the last answer closed the connection)."""
        if self._refusal is None or self._answers_pending() or self._writer.is_closing():
            return
        refusal, self._refusal = self._refusal, None
        self._refuse(*refusal)

    def _queued(self, cycle: RequestResponseCycle) -> bool:
        """Whether the request waits in uvicorn's pipeline, its app not started."""
        return any(queued is cycle for queued, _ in self.pipeline)

    def _answers_pending(self) -> bool:
        """Whether a request of this connection is still to be answered: queued, or in progress."""
        cycle = self.cycle
        return bool(self.pipeline) or (cycle is not None and not cycle.response_complete)

    def on_header(self, name: bytes, value: bytes) -> None:
        """uvicorn's, restated (super() would add a call to every field), and the Host fields
        counted (`_judge_hosts`); an HTTP/1.0 request's `Expect: 100-continue` is ignored, as
        RFC 9110 §10.1.1 asks (uvicorn answered it `100 Continue`, a status HTTP/1.0 does not
        have, before the request's own answer). A value loses the trailing whitespace llhttp
        keeps (RFC 9110 §5.5 excludes it), as uvicorn's own does since 0.55."""
        if self._trailer is not None:  # a trailer field: dropped (RFC 9112 §7.1.2 allows it)
            self._limit_trailer(field=len(name) + len(value) + 4)
            return
        name = name.lower()
        value = value.rstrip(b" \t")
        if name == b"host":
            self._hosts += 1
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = self.parser.get_http_version() != "1.0"
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        """uvicorn's, which makes the request and starts it, or queues it behind the one in
        progress; a head over the limit, or without its one Host field, is refused in its turn
        (`_refuse_at_start`). Measured here, every head is: measured once its chunk was parsed,
        a whole head over the limit with another request after it in the same chunk was served
        (up to a chunk, 256 KiB). Past MAX_PIPELINED queued, parsing stops here."""
        if len(self.pipeline) >= MAX_PIPELINED:
            raise _PipelineFull  # nothing after it is parsed: refused in its turn
        limit = self.limits.max_head_bytes
        # Only when the chunk it completed in and the earlier chunks of the head could hold more
        # than the limit is it measured.
        if self._partial_head + self._received > limit and self._head_size() > limit:
            self._refuse_at_start(*self._head_refusal())
        if self._hosts != 1:
            self._judge_hosts()
        super().on_headers_complete()

    def _judge_hosts(self) -> None:
        """400 for a request with more than one Host field, or an HTTP/1.1 one without, as RFC
        9112 §3.2 asks: served, a proxy in front and this server could each take it for another
        host. An HTTP/1.0 request need not name one."""
        if self._hosts > 1:
            self._refuse_at_start(400, "Bad Request", TWO_HOSTS)
        elif _http11(self.parser.get_http_version()):
            self._refuse_at_start(400, "Bad Request", NO_HOST)

    def _ignore_upgrade(self) -> None:
        """httptools took the request as bodiless (its cycle complete with an empty body) and
        stopped parsing: the cycle gets its body back, and a fresh parser, given a made-up head
        of the request's framing fields first (app.server.upgrade), reads the body and what
        follows. The app has not run: its task, made with the cycle during this parse, starts
        on a later loop pass."""
        cycle = self.cycle
        if cycle is None:  # cannot be: httptools signals an upgrade after the head's callbacks
            self.transport.close()
            return
        if not cycle.response_complete:  # not shed nor held, whose body is skipped
            cycle.more_body = True
            cycle.message_event.clear()
            if not self._queued(cycle):  # started
                self._receiving.add(self)
        self.parser = lenient(httptools.HttpRequestParser(AfterIgnoredUpgrade(self)))
        try:  # fields httptools took in this request's head: no error expected
            self.parser.feed_data(framing_head(cycle.scope["headers"], cycle.keep_alive))
        except httptools.HttpParserError:
            self._refuse_body()

    def _refuse_body(
        self, status: int = 400, reason: str = "Bad Request", message: str = NOT_FRAMED
    ) -> None:
        """The body being received is not framed as its headers say: its request's answer. If
        the request is queued behind one still being answered, the answer waits its turn and
        its app never runs (`_refuse_at_start`): refused at once, the answer in progress was
        lost (the client's only answer a 400). If its app runs, the app reads a disconnect; if
        its answer has begun (or it was shed), the connection just closes: a second answer to
        one request would be taken for the next one's."""
        cycle = self.cycle
        if cycle is not None and self._queued(cycle):
            cycle.more_body = False  # nothing more is read: the connection waits on the server
            self._refuse_at_start(status, reason, message)
            self.flow.pause_reading()
            return
        if cycle is not None and cycle.response_started:
            self.transport.close()
            return
        if cycle is not None:
            cycle.disconnected = True  # the app, already started, reads a disconnect
        self._refuse(status, reason, message)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        if self._writer.is_closing():
            # Behind a request refused (or shed, closing) in the same chunk, which the parser
            # goes on with: its app ran on the closed connection, and its answer, never sent,
            # was counted and access-logged.
            return
        if cycle.scope["http_version"] != "1.1" and self._version_refused(cycle):
            return
        refusal = self._refusal_at_start
        if refusal is not None and refusal[0] is cycle.scope:  # its turn (`_refuse_at_start`)
            self._refusal_at_start = None
            self._refuse_unstarted(cycle, *refusal[1:])
            return
        if self.flow.write_paused:  # its client reads nothing: started once it does
            self.pipeline.append((cycle, app))  # back where uvicorn took it from: next
            self.flow.pause_reading()
            self._deferred = True
            return
        self._busy.add(self)
        if self._held is not None:  # pipelined behind a held request: after its answer
            self.pipeline.appendleft((cycle, app))
            self.flow.pause_reading()
            return
        if self._closes():
            cycle.keep_alive = False  # the worker is stopping: this answer closes the connection
        if cycle.scope["path"] not in UNSHED_PATHS and self._held_or_shed(cycle):
            return
        self._writer.serve(cycle)
        super()._start_asgi_task(cycle, app)
        if cycle.more_body:  # its body's callbacks, if it came whole, have not run yet
            self._receiving.add(self)

    def resume_writing(self) -> None:
        """uvicorn's, and the request deferred while the client read nothing starts. Started at
        once, its app ran and its answer's first send waited, counted in flight: 70 connections
        of pipelined GETs never read took a worker's 64 in-flight places, and it shed every other
        request (the send timeout, `_unread`, ends such a connection 30 s later). The client
        has read down to uvicorn's low-water mark: the send timeout's clock starts again."""
        super().resume_writing()
        self._unread_since = None
        if self._deferred and self.pipeline and not self._writer.is_closing():
            self._deferred = False
            self._start_asgi_task(*self.pipeline.pop())

    def _version_refused(self, cycle: RequestResponseCycle) -> bool:
        """Whether the request is of an HTTP major version other than 1 (0.9, 2.0, 3.0…), and so
        refused now, in its turn: 505 (RFC 9110 §15.6.6; uvicorn served HTTP/2.0 and 0.9 as
        HTTP/1.1). HTTP/1.2 to 1.9 are served as HTTP/1.1, as RFC 9110 §2.5 asks of a minor
        version over the server's (they were a 505, and before that llhttp's 400)."""
        version = cycle.scope["http_version"]
        if version == "1.0":
            return False
        if _http11(version):
            cycle.scope["http_version"] = "1.1"  # ASGI's versions are 1.0, 1.1 and 2
            return False
        self._refuse_unstarted(cycle, 505, "HTTP Version Not Supported", VERSION_REFUSED)
        return True

    def _refuse_unstarted(
        self, cycle: RequestResponseCycle, status: int, reason: str, message: str
    ) -> None:
        """A request refused where its app would start: the app never runs, its body is skipped
        (a later request may have been parsed since: the answer is this one's)."""
        cycle.response_complete = True
        self._refuse(status, reason, message, scope=cycle.scope)

    def _held_or_shed(self, cycle: RequestResponseCycle) -> bool:
        """Whether the request is held until its Retry-After (`_hold`) or shed at once. Held only
        if a proxy names the same client as the last 503's sender (or none for either)."""
        if (
            self._last_shed is not None
            and self.limits.hold_early_retries
            and not self._draining
            and sender(cycle.scope["headers"]) == self._shed_for
        ):
            now = self.loop.time()
            until = hold_until(self._last_shed, now)
            if until is not None:
                self._hold(cycle, now, until)
                return True
            self._last_shed = None
        if self._past_bound():
            self._shed(cycle)
            return True
        return False

    def _past_bound(self) -> bool:
        """Whether this worker has as many requests in flight as its bound allows, or more."""
        return self._in_flight() >= self.limits.bound(len(self._busy))

    def on_chunk_header(self) -> None:
        """A chunk's size line: what follows is its data, or, after the last one (size 0, which
        httptools does not tell apart), the trailer section (`on_body` tells them apart)."""
        self._trailer = 0

    def on_body(self, body: bytes) -> None:
        """uvicorn's, restated (super() would add a call to every request's body), and the
        chunk whose size line came last is not the last one (`on_chunk_header`)."""
        self._trailer = None
        cycle = self.cycle
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        cycle.body += body
        if len(cycle.body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.message_event.set()

    def on_message_complete(self) -> None:
        """The started request's body is in (nothing later is parsed before it): it counts as
        in flight from now on. A chunked body's trailer section that closed the connection for
        llhttp closes it with the answer (`_closed_by_trailer`)."""
        super().on_message_complete()
        self._receiving.discard(self)
        self._ended_in_chunk = True
        if self._trailer is not None and not self.parser.should_keep_alive():
            self._closed_by_trailer()
        self._trailer, self._trailer_fields = None, 0
        self._hosts = 0

    def _closed_by_trailer(self) -> None:
        """llhttp takes a `Connection` (or `Proxy-Connection`) trailer field saying `close` as
        the connection's (RFC 9110 §6.5.1 lets no trailer field do so), and then parses nothing
        more: the answer, keep-alive by the head, left the connection open and every request sent
        after it unanswered (behind HAProxy, which passes trailers on, the next client's request
        on that pooled connection waited 60 s for a 504). The answer closes it instead; one
        already given (before the body was in) closes it now."""
        cycle = self.cycle
        cycle.keep_alive = False
        if self._held is None and not self._answers_pending():
            self.transport.close()

    def _hold(self, cycle: RequestResponseCycle, now: float, until: float) -> None:
        """Sent before the Retry-After of this connection's last 503: answered 503 at `until`.
        The request's body, if any came with its head, is skipped, as a shed request's (its
        cycle counts as complete for the parser). Until `until` nothing more is parsed: the
        connection is still read, so that a client that goes away is noticed at once (the
        connection is lost, `connection_lost`), but what it sends is kept unparsed, and
        reading pauses once anything is."""
        cycle.response_complete = True
        self._held, self._held_since = cycle, now
        self._release_timer = self.loop.call_at(until, self._release)

    def _release(self) -> None:
        """The held request's 503; then reading resumes (`on_response_complete`) and what came
        meanwhile is parsed. The 503 starts a new Retry-After only while the worker is still
        past its bound: once it has room, what the connection sends next is judged as any
        request. Restarted every time, a client sending steadily on a kept-alive connection (a
        pool, a proxy) got nothing but held 503s long after the overload had passed."""
        cycle, self._held, self._release_timer = self._held, None, None
        if cycle is None or self._writer.is_closing():
            return
        if self._closes():
            cycle.keep_alive = False
        overloaded = self._past_bound()
        self._shed(cycle, self.loop.time() - self._held_since)
        if not overloaded:
            self._last_shed = None
        unparsed, self._unparsed = self._unparsed, b""
        if unparsed and not self._writer.is_closing():
            self.data_received(unparsed)

    def on_response_complete(self) -> None:
        """uvicorn calls this from the task whose response just completed: from now on that
        task no longer counts against the bound, and its connection is no longer busy (`_BUSY`;
        `_shed` calls uvicorn's own)."""
        task = asyncio.current_task(self.loop)
        if task is not None and task in self.tasks:
            self._answered.add(task)
            task.add_done_callback(self._answered.discard)
            self._busy.discard(self)
            self._receiving.discard(self)  # answered before its body was in (a 413, say)
        self._wait_for_request()
        super().on_response_complete()
        self._refuse_if_due()

    def _wait_for_request(self) -> None:
        """Last of the answered ones in `_WAITING`: the one waiting for the shortest time."""
        self._idle_since = self.loop.time()
        self._unanswered.pop(self, None)
        self._answered_ones.pop(self, None)
        self._answered_ones[self] = None

    def _shed(self, cycle: RequestResponseCycle, waited: float = 0.0) -> None:
        """503, written here: no task, no app (at once, or after `waited` s held). The cycle is
        then complete as if the app had answered, so the rest of its body is skipped and
        keep-alive goes on (unless the answer closes the connection). uvicorn's
        `on_response_complete`, not ours: no task is answered here, and a request shed behind a
        pipelined one is shed from that one's task, which ours would take as answered by the app
        (the connection no longer busy)."""
        request_id = request_ids.caller_id(cycle.scope["headers"])
        head_only = cycle.scope["method"] == "HEAD"
        self.transport.write(shed_response(request_id, not cycle.keep_alive, head_only))
        self._last_shed = self.loop.time()
        self._shed_for = sender(cycle.scope["headers"])
        observe_latency(SHED_ROUTE, cycle.scope["method"], 503, waited)
        if self.log_shed:
            token = request_ids.REQUEST_ID.set(request_id)  # the line carries the answer's ID
            log_access(cycle.scope["method"], cycle.scope["path"], SHED_ROUTE, 503, waited * 1e3)
            request_ids.REQUEST_ID.reset(token)
        cycle.response_started = cycle.response_complete = True
        if not cycle.keep_alive:
            self._writer.close()  # in stages: see app.server.coalesce.LINGER
        self._wait_for_request()
        super().on_response_complete()
        self._refuse_if_due()

    def _head_size(self) -> int:
        """The parsed head's size, give or take the separators the parser drops."""
        headers = self.headers or ()
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in headers)

    def _refuse_head(self, in_turn: bool = False) -> None:
        """431; `in_turn` for a head still incomplete: after the answers to the requests before
        it (`_refuse_in_turn`)."""
        refuse = self._refuse_in_turn if in_turn else self._refuse
        refuse(*self._head_refusal())

    def _head_refusal(self) -> tuple[int, str, str]:
        """The answer to a head over the limit: status, reason, message."""
        message = f"request head over the {self.limits.max_head_bytes}-byte limit"
        return 431, "Request Header Fields Too Large", message

    def phase(self) -> str:
        """What the connection waits for from the client: `fresh` (nothing sent yet), `head`,
        `body`, or `idle` (nothing: the app is working, or a keep-alive wait)."""
        cycle = self.cycle
        if cycle is None:
            return "fresh" if self.scope is None else "head"
        if cycle.scope is not self.scope:
            return "head"  # a new request has begun on a kept-alive connection
        if cycle.more_body and not cycle.response_complete and not cycle.disconnected:
            return "body"
        return "idle"

    def sweep(self, now: float) -> None:
        """Once a second: the read timeouts, the end of a refused connection's busy window
        (`_BUSY`), and of a staged close (`_end_linger`). A (request, phase) pair seen again
        began at its first sighting, so each timeout is honoured to within one sweep."""
        if self._unread(now):
            return
        if self._writer.is_closing():
            self._end_linger(now)
            return
        if self in self._busy and self._rests(now):
            self._busy.discard(self)
        phase = self.phase()
        if phase == "idle":
            self._watched, self._watched_phase = None, phase
            return
        if self._watched is not self.scope or self._watched_phase != phase:
            self._watched, self._watched_phase, self._since = self.scope, phase, now
            return
        waited = now - self._since
        if phase == "fresh" and waited >= self.limits.head_timeout:
            self.transport.close()  # connected, never sent a byte: nothing to answer
        elif phase == "head" and waited >= self.limits.head_timeout:
            self._refuse(408, "Request Timeout", "request head not received in time", waited)
        elif phase == "body" and waited >= self.limits.body_timeout:
            if self.cycle is not None and self.cycle.response_started:
                self.transport.close()
            else:
                self._refuse(408, "Request Timeout", "request body not received in time", waited)

    def _end_linger(self, now: float) -> None:
        """Closes a connection left half-closed after its last answer (app.server.coalesce's
        staged close) once the sweep has seen it so for LINGER s, if its client has not closed
        it first."""
        if self.transport.is_closing():
            return
        if self._linger_since is None:
            self._linger_since = now
        elif now - self._linger_since >= LINGER:
            self.transport.close()

    def _unread(self, now: float) -> bool:
        """Whether the answers wait for the client to read them: writing paused (the app's next
        send waits), or a close waiting for the write buffer to empty. Dropped (abort: the
        buffer with it; the waiting send returns, its request answered) once that has lasted
        `send_timeout` s: for paused writing, since it last resumed (`resume_writing`); for a
        close, since the buffer last shrank."""
        transport = self.transport
        paused = self.flow.write_paused
        waiting = paused or self._writer.is_closing()
        buffered = transport.get_write_buffer_size() if waiting else 0
        if not buffered:
            self._unread_since = None
            return False
        if self._unread_since is None or (buffered < self._unread_bytes and not paused):
            # A first sighting, or some read of the answer a close waits on. While writing is
            # paused a request is in flight, and only reading enough to resume writing (uvicorn's
            # low-water mark) restarts the clock: restarted by any progress, a client reading a
            # byte every few seconds kept its place in flight for ever.
            self._unread_since = now
        elif now - self._unread_since >= self.limits.send_timeout:
            self.logger.warning(
                "answers not read in %.0f s: connection dropped (client %s)",
                now - self._unread_since,
                self.client,
            )
            transport.abort()
        self._unread_bytes = buffered
        return True

    def _rests(self, now: float) -> bool:
        """Nothing in progress (nor held), and no 503 within the last `crowded_window` s."""
        cycle = self.cycle
        return (
            self._held is None
            and (cycle is None or cycle.response_complete)
            and (self._last_shed is None or now - self._last_shed >= self.limits.crowded_window)
        )

    def shutdown(self) -> None:
        """Called by uvicorn when the worker stops (and by `connection_made` once it has begun
        to): drain instead of closing at once. A held request is answered now."""
        if not self._draining:
            self._draining = True
            if self._release_timer is not None:
                self._release_timer.cancel()
                self._release()
            self._drain()

    def eof_received(self) -> bool:  # type: ignore[override]  # uvicorn's returns None
        """The client has half-closed: it sends nothing more but may still read its answers.
        uvicorn's protocol lets the transport close here, so a request still being answered
        (one waiting for a merged onnxruntime call, say) and those pipelined behind it went
        unanswered. If the last request came in full, it now closes the connection once
        answered (True keeps the transport open for writing); with nothing left to answer, or
        the last body cut short, the connection closes now, as before. So does a held request
        (`_hold`): a half-close cannot be told from a client that left, whose held request is
        dropped uncounted, and all it would get is a 503. Idempotent: the event loop calls it
        again each time reading resumes (between pipelined answers)."""
        cycle = self.cycle
        if cycle is None or cycle.disconnected or self._held is not None:
            return False
        if cycle.response_complete or cycle.more_body:
            return False
        cycle.keep_alive = False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        """uvicorn's, and a held request is dropped: nothing is left to answer it later. The
        keep-alive timer is cancelled however the connection ended: uvicorn cancels it only on a
        clean close, so a connection its client reset stayed referenced by the timer for
        gunicorn's keepalive s (75), a closing answer's too since the staged close arms it
        (app.server.coalesce.LINGER)."""
        self._unset_keepalive_if_required()
        self._busy.discard(self)
        self._receiving.discard(self)
        self._unanswered.pop(self, None)
        self._answered_ones.pop(self, None)
        if self._release_timer is not None:
            self._release_timer.cancel()
            self._held = self._release_timer = None
            self._unparsed = b""
        super().connection_lost(exc)

    def _closes(self) -> bool:
        """Whether an answer now closes its connection: draining, past the server's linger (a
        connection uvicorn drains without `begin_drain` closes at once)."""
        if not self._draining:
            return False
        drain = _DRAINING.get(self.server_state)
        return drain is None or self.loop.time() >= drain.closing_from

    def _held_open(self, now: float) -> bool:
        """Whether an idle draining connection is still left open for its client to close first
        (`DRAIN_IDLE_HOLD`)."""
        drain = _DRAINING.get(self.server_state)
        return (
            drain is not None
            and now < drain.closing_by
            and now - self._idle_since < DRAIN_IDLE_HOLD
        )

    def _drain(self) -> None:
        if self.transport.is_closing():
            return
        if self._writer.is_closing():
            self._drain_linger()
            return
        if not self._closes():  # kept alive for the linger: nothing closes yet
            self.loop.call_later(DRAIN_INTERVAL, self._drain)
            return
        cycle = self.cycle
        phase = self.phase()
        if cycle is not None and not cycle.response_complete:
            if not cycle.response_started:  # its head would say keep-alive, then close under it
                cycle.keep_alive = False  # the response in progress closes the connection
            self._quiet = _UNSEEN
        elif phase in ("fresh", "idle"):
            # Nothing received (since the last answer, or since it was accepted during a
            # reload): but a request may be on its way, from a client slowed down by a busy
            # machine or one just connected. Closing now would reset it; only a connection
            # quiet for DRAIN_QUIET is taken to have none coming; and one its client may still
            # be about to use is left for that client to close (DRAIN_IDLE_HOLD).
            now = self.loop.time()
            if self._quiet is not cycle:
                self._quiet, self._quiet_since = cycle, now
            elif now - self._quiet_since >= DRAIN_QUIET and not self._held_open(now):
                self.transport.close()
                return
        self.loop.call_later(DRAIN_INTERVAL, self._drain)

    def _drain_linger(self) -> None:
        """A connection closed in stages (app.server.coalesce.LINGER) is left to its client or
        the sweep only within the drain's budget (`_Drain.closing_by`, as an idle one): the
        sweep's 2-3 s held a stopping worker past it, and a quick stop (1 s) ran out its grace,
        logging an error."""
        drain = _DRAINING.get(self.server_state)
        if drain is None or self.loop.time() >= drain.closing_by:
            self.transport.close()
        else:
            self.loop.call_later(DRAIN_INTERVAL, self._drain)

    def _refuse(
        self,
        status: int,
        reason: str,
        message: str,
        waited: float = 0.0,
        scope: HTTPScope | None = None,
    ) -> None:
        """An answer of the HTTP layer, closing the connection. `scope`: the refused request's,
        if not the one parsed last (a pipelined request refused in its turn); its ID and method
        are the answer's."""
        if scope is None:
            scope = self.scope
        headers = scope["headers"] if scope is not None else ()
        request_id = request_ids.caller_id(headers)
        # echoed as the app's answers echo it: a 400 or 431 here went without it
        traceparent = request_ids.caller_traceparent(headers)
        budget = _REFUSALS_LOGGED.get(self.server_state)
        if budget is None:
            budget = _REFUSALS_LOGGED[self.server_state] = LogBudget(
                self.logger, REFUSALS_LOGGED_PER_SECOND, "answers of the HTTP layer"
            )
        if budget.allows(self.loop, str(status)):
            token = request_ids.REQUEST_ID.set(request_id)  # the warning carries the answer's ID
            trace = request_ids.TRACE_ID.set(request_ids.trace_id(traceparent or b""))
            self.logger.warning("%s %s (client %s)", status, message, self.client)
            request_ids.TRACE_ID.reset(trace)
            request_ids.REQUEST_ID.reset(token)
        head_only = scope is not None and scope.get("method") == "HEAD"
        default_headers = self.server_state.default_headers
        if traceparent is not None:
            default_headers = [*default_headers, (request_ids.TRACEPARENT, traceparent)]
        self.transport.write(
            _response(status, reason, message, request_id, head_only, default_headers)
        )
        self._writer.close()  # in stages: see app.server.coalesce.LINGER
        self._count_refused(status, waited, scope)

    def _count_refused(self, status: int, waited: float, scope: HTTPScope | None) -> None:
        """An answer of the HTTP layer, counted under REFUSED_ROUTE with the status its client
        got. If the request's app is running (a body not received in time, or misframed), the
        app reads a disconnect and answers a closed connection (a 499, or the 415 it was about
        to give): marked ANSWERED_BY_SERVER, that answer is not counted a second time."""
        cycle = self.cycle
        if cycle is not None and cycle.scope is scope and not cycle.response_complete:
            cast(dict[str, Any], scope)[ANSWERED_BY_SERVER] = status  # a namespaced ASGI key
        method = scope.get("method", "-") if scope is not None else "-"
        observe_latency(REFUSED_ROUTE, method, status, waited)


def _longest_waiting(
    queue: _Queue, newcomer: GuardedHttpToolsProtocol
) -> GuardedHttpToolsProtocol | None:
    """The first connection of `queue` that still waits for a request (`newcomer` excepted); the
    ones passed on the way, whose request began since, leave it (each entry is passed once)."""
    while (oldest := next(iter(queue), newcomer)) is not newcomer:
        del queue[oldest]
        if oldest._waits_for_request():
            return oldest
    return None


class _Sweeper:
    """One per worker event loop: walks uvicorn's set of open connections every
    SWEEP_INTERVAL, and stops when there are none (the next connection restarts it)."""

    _running: ClassVar[dict[int, _Sweeper]] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        self.loop = loop
        self.connections = connections

    @classmethod
    def ensure(cls, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        if id(loop) not in cls._running:
            sweeper = cls._running[id(loop)] = cls(loop, connections)
            loop.call_later(SWEEP_INTERVAL, sweeper.tick)

    def tick(self) -> None:
        now = self.loop.time()
        for connection in list(self.connections):
            if isinstance(connection, GuardedHttpToolsProtocol):
                connection.sweep(now)
        if self.connections and not self.loop.is_closed():
            self.loop.call_later(SWEEP_INTERVAL, self.tick)
        else:
            del self._running[id(self.loop)]


def guarded_protocol(limits: Limits, log_shed: bool = False) -> type[GuardedHttpToolsProtocol]:
    """The protocol class uvicorn's `Config(http=...)` takes, with these limits."""
    attributes = {"limits": limits, "log_shed": log_shed}
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), attributes)

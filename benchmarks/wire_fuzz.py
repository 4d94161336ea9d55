"""Wire-level fuzzing: mutated raw HTTP/1.1 requests against the service as deployed.

    python -m benchmarks.wire_fuzz --cases 4000 --grpc-cases 2000 --seed 1    # make fuzz-wire

tests/test_fuzz.py fuzzes the ASGI app in-process, so the server's own HTTP layer is out of its
reach: uvicorn's parser under app.server.protocol's limits and app.server.coalesce's writes.
This starts gunicorn with gunicorn.conf.py (2 workers) on a free loopback port and sends it
seeded mutations of valid requests (bytes changed, inserted, deleted or copied, headers given
odd values, an HTTP/2 or WebSocket upgrade offered, chunked bodies, several requests pipelined
on one connection, odd targets), each on a connection of its own, sometimes trickled in small
pieces or half-closed after sending, a few connections at a time; the cases of bugs it found
lead every run (`regressions`). Then, on the workers' gRPC port, mutated ModelInferRequests
(both models, typed and raw contents) and random bytes to every method of the service. It
checks that no answer is a 5xx (but a 505, the answer to a mutated HTTP version) nor a gRPC
status of a server failure, that each case of whole valid requests got a 200 for every one
(trickled or half-closed too), that the server logged no traceback, that its /metrics
counted every answer and gRPC status a client received (at least as many of each: an answer
written to a client that had left counts too), that the same workers serve at the end (none
crashed) and that the service is ready, and writes what it saw to --out/wire-fuzz.json.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc

from app.inference.flights import FULL_EXAMPLE, MINIMAL_EXAMPLE
from app.observability.metrics import FLUSH_SECONDS
from benchmarks.chaos import (
    MODELS_DIR,
    Outcome,
    get_json,
    in_scratch,
    log_lines,
    served,
    started_outcome,
    worker_pids,
)
from benchmarks.compare import requests_total
from benchmarks.grpc_load import infer_request
from benchmarks.peers.bodies import infer_body
from benchmarks.stress import StressError, free_port, revision

TRACEBACKS = ("Traceback", "Exception in ASGI application")
"""Log text that means a request made the server fail somewhere."""
JUNK = (b"\x00", b"\xff", b"{", b"}", b"[", b"]", b'"', b"\\", b",", b":", b"-1", b"1e999",
        b"NaN", b"9" * 30, b"\r\n", b"\r\n\r\n", b" ", b"null", b'"\\ud800"', b"[" * 8, b"%",
        b"\xc3\x28", b"HTTP/1.1")  # fmt: skip
"""Bytes a mutation inserts: JSON and HTTP syntax, invalid UTF-8, numbers JSON cannot hold."""
HEADER_VALUES = ("", "-1", "0", "1,2", "99999999999999999999", "gzip", "100-continue", "close",
                 "chunked", "application/json; charset=latin1", "\x01", "a" * 9000)  # fmt: skip
HEADERS = ("Content-Type", "Content-Length", "Transfer-Encoding", "Content-Encoding", "Expect",
           "Connection", "Inference-Header-Content-Length", "X-Request-ID", "Accept")  # fmt: skip
ODD_TARGETS = ("/v2/models/%00/infer", "/v2/models/delay-full/versions/%ff/infer", "//predict",
               "/predict?" + "a" * 5000, "/v2/models/" + "x" * 3000, "/predict/../predict",
               "/v2/models/delay-full/versions//ready", "*", "http://other/predict")  # fmt: skip
LOG_SETTLE_S = 1.0
"""Seconds the workers get to write their last log lines before the log is read."""
GRPC_SERVICE = "/inference.GRPCInferenceService"
GRPC_METHODS = ("ModelInfer", "ModelMetadata", "ModelReady", "ServerMetadata", "ServerLive",
                "ServerReady")  # fmt: skip
GRPC_FAILURES = ("INTERNAL", "UNKNOWN", "DATA_LOSS")
"""gRPC statuses that say the server failed, not the request: a 5xx's kin."""
H2C_OFFER = {"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c",
             "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA"}  # fmt: skip
"""What `curl --http2` and Java's HttpClient add to a cleartext request."""
OFFERS = (H2C_OFFER, {"Connection": "Upgrade", "Upgrade": "websocket",
                      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                      "Sec-WebSocket-Version": "13"})  # fmt: skip
"""Protocol upgrades a mutated request may offer, which the service ignores (its body is read
all the same: app.server.upgrade)."""
_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) [^\r\n]*\r\n")
_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)\r\n", re.IGNORECASE)

Request = tuple[str, str, dict[str, str], bytes]


@dataclass(frozen=True)
class Case:
    raw: bytes
    trickle: bool = False
    """Sent in pieces of at most 64 bytes."""
    half_close: bool = False
    """The client shuts its side down once everything is sent."""
    answers: int = 0
    """How many whole valid requests it is, each to be answered 200 (0: mutated, anything
    goes but a 5xx)."""


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def valid_requests() -> list[Request]:
    """The service's own requests, each answered 200: the material mutations start from."""
    predict = {"Content-Type": "application/json"}
    bodies = [{"flights": [MINIMAL_EXAMPLE]}, {"flights": [FULL_EXAMPLE]},
              {"flights": [MINIMAL_EXAMPLE, FULL_EXAMPLE] * 3}]  # fmt: skip
    requests: list[Request] = [("POST", "/predict", predict, _json(body)) for body in bodies]
    for name, flight in (("delay-full", FULL_EXAMPLE), ("delay-minimal", MINIMAL_EXAMPLE)):
        requests.append(("POST", f"/v2/models/{name}/infer", predict, _json(infer_body(flight))))
    for target in ("/health", "/v2/health/ready", "/v2", "/v2/models/delay-full", "/metrics"):
        requests.append(("GET", target, {}, b""))
    return requests


def render(request: Request, chunked: bool = False, rng: random.Random | None = None) -> bytes:
    method, target, headers, body = request
    lines = [f"{method} {target} HTTP/1.1", "Host: fuzz"]
    if chunked and rng is not None:
        lines.append("Transfer-Encoding: chunked")
        pieces, start = [], 0
        while start < len(body):
            piece = body[start : start + rng.randint(1, max(1, len(body) // 3))]
            pieces.append(b"%x\r\n%s\r\n" % (len(piece), piece))
            start += len(piece)
        body = b"".join(pieces) + b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


def mutate(data: bytes, rng: random.Random) -> bytes:
    mutated = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        where = rng.randrange(len(mutated) + 1)
        roll = rng.random()
        if roll < 0.3 and mutated:
            mutated[min(where, len(mutated) - 1)] = rng.randrange(256)
        elif roll < 0.6:
            mutated[where:where] = rng.choice(JUNK)
        elif roll < 0.8 and mutated:
            del mutated[where : where + rng.randint(1, 8)]
        else:
            source = rng.randrange(len(mutated) + 1)
            mutated[where:where] = mutated[source : source + rng.randint(1, 40)]
    return bytes(mutated)


def regressions() -> list[Case]:
    """The bugs this fuzz found, always sent first. 2026-12-04: a request answered after a loop
    pass (a merged onnxruntime call), with a request pipelined behind it, on a connection that
    closed meanwhile (uvicorn's 400 for what followed, or the client's half-close), wrote on a
    closed transport: a traceback a request (fixed in app.server.coalesce); and, half-closed,
    neither request was answered (fixed in app.server.protocol). Then a request offering
    HTTP/2 (`Upgrade: h2c`, as `curl --http2` and Java's HttpClient send), sized or chunked,
    lost its body and the connection what followed (fixed in app.server.upgrade). Then a
    chunked body's trailer section was unbounded (one line sent on held the worker's event
    loop) and its fields joined the request's headers (fixed in app.server.protocol)."""
    by_target = {request[1]: request for request in valid_requests()}
    infer = render(by_target["/v2/models/delay-full/infer"])
    ready = render(by_target["/v2/health/ready"])
    method, target, headers, body = by_target["/predict"]
    offer = (method, target, headers | H2C_OFFER, body)
    chunked = render(by_target["/predict"], chunked=True, rng=random.Random(0))[: -len(b"\r\n")]
    return [
        Case(infer + ready + b"NOT HTTP\x00\r\n\r\n"),
        Case(infer + ready, half_close=True, answers=2),
        Case(render(offer) + ready, answers=2),
        Case(render(offer, chunked=True, rng=random.Random(0)) + ready, answers=2),
        Case(chunked + b"Host: other\r\nX-Checksum: 0\r\n\r\n" + ready, answers=2),
        Case(chunked + b"X-Big: " + b"a" * 20_000 + b"\r\n\r\n" + ready),
    ]


def cases(count: int, seed: int) -> Iterator[Case]:
    """`count` cases, the same for the same seed: the regressions, then mutations."""
    rng = random.Random(seed)
    requests = valid_requests()
    fixed = regressions()[:count]
    yield from fixed
    for _ in range(count - len(fixed)):
        method, target, headers, body = rng.choice(requests)
        headers = dict(headers)
        if rng.random() < 0.15:
            headers |= rng.choice(OFFERS)
        roll, whole = rng.random(), 0
        if roll < 0.35:  # the body
            raw = render((method, target, headers, mutate(body, rng)), rng.random() < 0.2, rng)
        elif roll < 0.5:  # a header
            headers[rng.choice(HEADERS)] = rng.choice(HEADER_VALUES)
            raw = render((method, target, headers, body), rng.random() < 0.2, rng)
        elif roll < 0.7:  # anywhere
            raw = mutate(render((method, target, headers, body)), rng)
        elif roll < 0.85:  # pipelined
            pipelined = [rng.choice(requests) for _ in range(rng.randint(2, 6))]
            raw = b"".join(render(request) for request in pipelined)
            if rng.random() < 0.5:
                raw = mutate(raw, rng)
            else:
                whole = len(pipelined)
        else:  # the request line
            verb = rng.choice(("GET", "POST", "PUT", "OPTIONS", "HEAD", "DELETE"))
            raw = render((verb, rng.choice(ODD_TARGETS), headers, body))
        yield Case(raw, trickle=rng.random() < 0.2, half_close=rng.random() < 0.3, answers=whole)


def statuses(received: bytes) -> tuple[list[int], bool]:
    """The statuses of the responses in `received`, read one after another by their
    Content-Length (a body quoting a status line is not one), and whether bytes were left that
    are not a whole response."""
    found: list[int] = []
    at = 0
    while at < len(received):
        status = _STATUS.match(received, at)
        head_end = received.find(b"\r\n\r\n", at)
        if status is None or head_end < 0:
            return found, True
        found.append(int(status.group(1)))
        length = _LENGTH.search(received, at, head_end + 2)
        at = head_end + 4 + (int(length.group(1)) if length else 0)
    return found, at > len(received)


def send(port: int, case: Case, read_timeout: float) -> bytes:
    """What the server answered `case` until it closed or `read_timeout` s passed quietly."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as connection:
        try:
            step = 64 if case.trickle else len(case.raw)
            for start in range(0, len(case.raw), step):
                connection.sendall(case.raw[start : start + step])
            if case.half_close:
                connection.shutdown(socket.SHUT_WR)
        except OSError:  # the server closed first (an early 400, say): read what it sent
            pass
        while len(received) < 4_000_000:
            try:
                chunk = connection.recv(65536)
            except (TimeoutError, OSError):
                break
            if not chunk:
                break
            received += chunk
    return received


def grpc_requests() -> list[bytes]:
    """The service's own ModelInferRequests, each answered OK: both models, typed and raw."""
    return [
        infer_request([flight], contents, model, tuple(flight))
        for model, flight in (("delay-full", FULL_EXAMPLE), ("delay-minimal", MINIMAL_EXAMPLE))
        for contents in ("typed", "raw")
    ]


def grpc_cases(count: int, seed: int) -> Iterator[tuple[str, bytes]]:
    """`count` (method, message) pairs, the same for the same seed: the valid requests, then
    mutated ModelInferRequests and, one in five, random bytes to any method."""
    rng = random.Random(seed)
    requests = grpc_requests()
    fixed = [("ModelInfer", request) for request in requests][:count]
    yield from fixed
    for _ in range(count - len(fixed)):
        if rng.random() < 0.8:
            yield "ModelInfer", mutate(rng.choice(requests), rng)
        else:
            junk = bytes(rng.randrange(256) for _ in range(rng.randint(0, 60)))
            yield rng.choice(GRPC_METHODS), junk


Failures = list[dict[str, str]]


def _send_http(port: int, args: argparse.Namespace) -> tuple[Counter[str], Failures, Failures]:
    """The HTTP cases, a few connections at a time: the statuses seen, the 5xx answers, and
    the cases of whole valid requests not answered 200 each."""
    tally: Counter[str] = Counter()
    errors: Failures = []
    unanswered: Failures = []
    with ThreadPoolExecutor(args.connections) as pool:
        answers = pool.map(lambda case: (case, send(port, case, args.read_timeout)),
                           cases(args.cases, args.seed))  # fmt: skip
        for case, received in answers:
            found, partial = statuses(received)
            tally.update(str(status) for status in found)
            tally["no answer"] += not found
            tally["answer not read to its end"] += partial  # a HEAD's, or cut by the timeout
            failure = {"sent": repr(case.raw[:300]), "received": repr(received[:300])}
            if any(status >= 500 and status != 505 for status in found):
                errors.append(failure)
            if case.answers and found != [200] * case.answers:
                unanswered.append(failure | {"half_close": str(case.half_close)})
            tally["whole valid requests"] += case.answers
    return tally, errors, unanswered


def _send_grpc(address: str, args: argparse.Namespace) -> tuple[Counter[str], list[str]]:
    """The gRPC cases, one after another: the status codes seen, and the server failures."""
    tally: Counter[str] = Counter()
    failures: list[str] = []
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=15)
        for method, message in grpc_cases(args.grpc_cases, args.seed):
            call = channel.unary_unary(f"{GRPC_SERVICE}/{method}", _identity, _identity)
            try:
                call(message, timeout=5)
                code = "OK"
            except grpc.RpcError as error:
                code = error.code().name
            tally[code] += 1
            if code in GRPC_FAILURES:
                failures.append(f"{method} {message[:200]!r}: {code}")
    return tally, failures


def counted_answers(url: str) -> tuple[dict[str, float], dict[str, float]]:
    """The answers the server's /metrics has counted by status, REST's and gRPC's, from one
    scrape."""
    rest: dict[str, float] = {}
    grpc_calls: dict[str, float] = {}
    for (_, method, status), count in requests_total(url).items():
        counted = grpc_calls if method == "GRPC" else rest
        counted[status] = counted.get(status, 0.0) + count
    return rest, grpc_calls


def _uncounted(received: Mapping[str, int], counted: Mapping[str, float]) -> dict[str, float]:
    """The statuses received more often than counted, and by how many."""
    return {status: n - counted.get(status, 0) for status, n in received.items()
            if n > counted.get(status, 0)}  # fmt: skip


def _identity(message: bytes) -> bytes:
    return message


def run(args: argparse.Namespace, workdir: Path) -> Outcome:
    outcome = started_outcome(
        "wire-fuzz",
        {
            "code": revision(),
            "cases": args.cases,
            "grpc_cases": args.grpc_cases,
            "seed": args.seed,
            "connections": args.connections,
            "read_timeout_s": args.read_timeout,
            "workers": 2,
            "regressions": len(regressions()),
        },
    )
    grpc_address = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    with served(workdir, args.models_dir, GRPC_BIND=grpc_address) as server:
        workers = sorted(worker_pids(server.process.pid))
        answers, server_errors, unanswered = _send_http(int(server.url.rsplit(":", 1)[1]), args)
        outcome.event(start, "HTTP cases sent", seconds=round(time.monotonic() - start, 1))
        codes, grpc_failures = _send_grpc(grpc_address, args)
        outcome.event(start, "gRPC cases sent", seconds=round(time.monotonic() - start, 1))
        time.sleep(max(LOG_SETTLE_S, FLUSH_SECONDS + 0.5))  # the logs, the metrics' flush
        tracebacks = log_lines(server, *TRACEBACKS)
        counted, grpc_counted = counted_answers(server.url)
        final = {
            status: n for status, n in answers.items() if status.isdigit() and int(status) >= 200
        }
        uncounted = _uncounted(final, counted) | _uncounted(codes, grpc_counted)
        workers_now = sorted(worker_pids(server.process.pid))
        outcome.checks = {
            "no 5xx answer": not server_errors,
            "every whole valid request answered 200 (trickled, half-closed too)": not unanswered,
            "no gRPC status of a server failure (INTERNAL, UNKNOWN, DATA_LOSS)": not grpc_failures,
            "no traceback in the server log": not tracebacks,
            "every answer received, REST and gRPC, counted in http_requests_total": not uncounted,
            "the same workers at the end (none crashed)": workers_now == workers,
            "ready at the end": get_json(f"{server.url}/v2/health/ready") == {"ready": True},
        }
        outcome.log_excerpt = tracebacks[:20]
    outcome.settings["answers"] = dict(sorted(answers.items()))
    outcome.settings["grpc_codes"] = dict(sorted(codes.items()))
    outcome.settings["tracebacks_logged"] = sum(line.startswith("Traceback") for line in tracebacks)
    outcome.settings["server_errors"] = server_errors[:20] + grpc_failures[:20]
    outcome.settings["unanswered_cases"] = len(unanswered)
    outcome.settings["http_requests_total_by_status"] = dict(sorted(counted.items()))
    outcome.settings["grpc_calls_counted_by_code"] = dict(sorted(grpc_counted.items()))
    outcome.settings["received_but_not_counted"] = uncounted
    outcome.settings["unanswered"] = unanswered[:20]
    return outcome


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.wire_fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--cases", type=int, default=4000)
    parser.add_argument("--grpc-cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--connections", type=int, default=8, help="cases sent at once")
    parser.add_argument("--read-timeout", type=float, default=0.5,
                        help="seconds of quiet after which a case's connection is closed")  # fmt: skip
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    parser.add_argument("--out", type=Path, default=None, help="folder for wire-fuzz.json")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        outcome = in_scratch("wire-fuzz-", run, args)
    except StressError as error:
        print(f"wire-fuzz: {error}", file=sys.stderr)
        return 2
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "wire-fuzz.json"
        path.write_text(json.dumps(asdict(outcome), indent=2) + "\n", encoding="utf-8")
        print(f"wire-fuzz: written to {path}")
    print(f"wire-fuzz: {args.cases:,} HTTP cases, answers {outcome.settings['answers']}; "
          f"{args.grpc_cases:,} gRPC cases, codes {outcome.settings['grpc_codes']}; "
          f"{outcome.settings['tracebacks_logged']} tracebacks logged")  # fmt: skip
    for check, ok in outcome.checks.items():
        print(f"wire-fuzz: {'ok  ' if ok else 'FAIL'} {check}")
    return 0 if outcome.passed else 1


if __name__ == "__main__":
    sys.exit(main())

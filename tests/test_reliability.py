"""The limits and failure modes of the service as deployed (real gunicorn, real sockets on
127.0.0.1): body, batch and head limits, slow clients, and short versions of the chaos
experiments (benchmarks/chaos.py; the 45-s runs are `make chaos`, in reports/reliability.md)."""

from __future__ import annotations

import argparse
import contextlib
import json
import select
import shutil
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import pytest

from app.server.protocol import SWEEP_INTERVAL
from app.settings import Settings
from benchmarks import chaos
from tests.test_server import Server, spawn, stop, wait_until_ready

pytestmark = pytest.mark.server

HEAD_TIMEOUT = 2
BODY_TIMEOUT = 3
FLIGHT = {"OPERA": "Grupo LATAM", "TIPOVUELO": "N", "MES": 7}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = spawn(
        tmp_path_factory.mktemp("limits"),
        HEAD_TIMEOUT=str(HEAD_TIMEOUT),
        BODY_TIMEOUT=str(BODY_TIMEOUT),
    )
    try:
        wait_until_ready(running)
        yield running
    finally:
        stop(running)


def connect(server: Server, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)


def read_answer(sock: socket.socket, data: bytes = b"") -> bytes:
    """`data` and what follows, until the server closes or the first answer is complete."""
    while not complete(data):
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    return data


def complete(data: bytes) -> bool:
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line[15:])
    return False


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer else 0


def test_a_huge_content_length_is_a_413_before_any_body(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000000\r\n\r\n"
        )
        started = time.monotonic()
        answer = read_answer(sock)
    assert status(answer) == 413, answer
    assert time.monotonic() - started < 2
    assert b'"limit":1048576' in answer


def test_a_chunked_body_is_cut_off_at_the_limit(server: Server) -> None:
    """Chunks of 64 KiB, unbounded: the 413 comes once the limit is passed, not at the end."""
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    sent = 0
    with connect(server) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        sock.settimeout(0.05)
        answer = b""
        while sent < 8 * 1_048_576 and not answer:
            try:
                sock.sendall(chunk)
                sent += 65536
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.settimeout(5)
        answer = read_answer(sock, answer)
    assert status(answer) == 413, answer[:200]
    assert sent <= 1_048_576 + 4 * 65536


def test_more_flights_than_the_batch_limit_is_a_413(server: Server) -> None:
    response = httpx.post(f"{server.url}/predict", json={"flights": [FLIGHT] * 10_001}, timeout=30)
    assert response.status_code == 413
    assert response.json()["detail"] == {"limit": 10_000}
    assert (
        httpx.post(f"{server.url}/predict", json={"flights": [FLIGHT] * 10_000}).status_code == 200
    )


@pytest.mark.parametrize("trickle", [False, True], ids=["one-write", "trickled"])
def test_a_head_over_the_limit_is_a_431(server: Server, trickle: bool) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    with connect(server) as sock:
        try:
            if trickle:
                for start in range(0, len(head), 4096):
                    sock.sendall(head[start : start + 4096])
                    time.sleep(0.01)
            else:
                sock.sendall(head)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_answer(sock)
    assert status(answer) == 431, answer
    assert b"connection: close" in answer


def test_many_headers_within_the_limit_are_fine(server: Server) -> None:
    headers = {f"X-H{i}": "v" * 50 for i in range(100)}
    assert httpx.get(f"{server.url}/health", headers=headers).status_code == 200


def test_slow_clients_do_not_block_others_and_are_cut_off(server: Server) -> None:
    """50 slowloris connections (a head byte every 0.5 s) on two workers: ordinary requests
    are answered while the slow heads are still pending, and every slow connection is answered
    408 once HEAD_TIMEOUT has passed.

    Judged by order, not by the client's clock (a max-latency bound of 1 s failed at load
    average 10 with 1.2 s): a server the slow heads blocked would answer the first round's
    requests only once it had cut them off, and it cuts none before HEAD_TIMEOUT (2 s) after
    its head began, by its own sweep, however loaded the machine. Each request on a new
    connection, so that they land on both workers."""
    slow = [connect(server) for _ in range(50)]
    for sock in slow:
        sock.sendall(b"GET /health HTTP/1.1\r\n")
    answered_while_pending = []
    fresh = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=server.url, timeout=HEAD_TIMEOUT + 10, limits=fresh) as client:
        for _ in range(4):
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.sendall(b"X")
            for _ in range(5):
                assert client.post("/predict", json={"flights": [FLIGHT]}).status_code == 200
                answered_while_pending.append(not any(map(answered, slow)))
            time.sleep(0.5)
    deadline = time.monotonic() + HEAD_TIMEOUT + 3
    answers = []
    for sock in slow:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        with sock:
            answers.append(status(read_answer(sock)))
    assert all(answered_while_pending[:5]), answered_while_pending  # the first round's
    assert answers == [408] * 50


def answered(sock: socket.socket) -> bool:
    """Whether the server has written to or closed `sock` (readable now; nothing is read)."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def test_an_idle_connection_is_closed_after_the_head_timeout(server: Server) -> None:
    with connect(server) as sock:
        started = time.monotonic()
        assert sock.recv(100) == b""
    assert HEAD_TIMEOUT <= time.monotonic() - started < HEAD_TIMEOUT + 2


def test_a_body_that_never_completes_is_a_408(server: Server) -> None:
    """Answered 408 no sooner than BODY_TIMEOUT, and well before the default a lost setting
    would give. The bound is not the sweep's precision (test_protocol.py checks that with a
    chosen clock): it is the latest a sweep decides on time, BODY_TIMEOUT + SWEEP_INTERVAL,
    and twice as much again for a loaded machine (3.9 s late, 408 after 6.9 s, was seen at
    load average 6)."""
    latest = 3 * (BODY_TIMEOUT + SWEEP_INTERVAL)
    assert 2 * latest <= Settings.body_timeout  # the default stays well beyond it
    answer = b""
    with connect(server, timeout=latest + 1) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        started = time.monotonic()
        with contextlib.suppress(TimeoutError):
            answer = read_answer(sock)
        waited = time.monotonic() - started
    assert status(answer) == 408, (answer, waited)
    assert BODY_TIMEOUT <= waited < latest


def test_protocol_answers_leak_nothing(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        answer = read_answer(sock)
    with connect(server) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        answer += read_answer(sock)
    for leak in ("Traceback", "/work/", "site-packages", "uvicorn"):
        assert leak.encode() not in answer


def test_responses_carry_a_request_id_over_the_wire(server: Server) -> None:
    response = httpx.get(f"{server.url}/health", headers={"X-Request-ID": "wire-1"})
    assert response.headers["x-request-id"] == "wire-1"
    assert "server" not in response.headers


# --- chaos, short -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chaos_args(tmp_path_factory: pytest.TempPathFactory) -> argparse.Namespace:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install wrk)")
    bodies = tmp_path_factory.mktemp("bodies") / "bodies.jsonl"
    flights = [FLIGHT, {**FLIGHT, "MES": 3}, {**FLIGHT, "OPERA": "Sky Airline", "TIPOVUELO": "I"}]
    bodies.write_text("\n".join(json.dumps({"flights": [f]}) for f in flights) + "\n")
    return argparse.Namespace(
        duration=9, connections=16, threads=1, bodies=bodies, wrk="wrk", worker_class=""
    )


def test_a_killed_worker_is_replaced_and_only_its_requests_fail(
    chaos_args: argparse.Namespace, tmp_path: Path
) -> None:
    outcome = chaos.worker_kill(chaos_args, tmp_path)
    assert outcome.passed, json.dumps(outcome.checks | {"events": outcome.events}, indent=1)


def test_sighup_swaps_models_without_a_failed_request_and_refuses_a_corrupt_release(
    chaos_args: argparse.Namespace, tmp_path: Path
) -> None:
    args = argparse.Namespace(**{**vars(chaos_args), "duration": 12})
    outcome = chaos.reload(args, tmp_path)
    assert outcome.passed, json.dumps(outcome.checks | {"events": outcome.events}, indent=1)


def test_sigterm_lets_in_flight_requests_finish(
    chaos_args: argparse.Namespace, tmp_path: Path
) -> None:
    outcome = chaos.shutdown(chaos_args, tmp_path)
    assert outcome.passed, json.dumps(outcome.checks | {"events": outcome.events}, indent=1)


def test_parallel_requests_during_load_all_succeed(server: Server) -> None:
    """A sanity check of the fixture server under a little concurrency (no lost request)."""
    with ThreadPoolExecutor(8) as pool, httpx.Client(base_url=server.url, timeout=10) as client:
        codes = list(
            pool.map(lambda _: client.post("/predict", json={"flights": [FLIGHT]}).status_code,
                     range(200))
        )  # fmt: skip
    assert codes == [200] * 200

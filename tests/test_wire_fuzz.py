"""benchmarks.wire_fuzz: its cases, how it reads answers, and a short run against a real server."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from benchmarks import wire_fuzz
from benchmarks.wire_fuzz import (
    cases,
    grpc_cases,
    grpc_requests,
    regressions,
    render,
    statuses,
    valid_requests,
)


def test_the_cases_are_the_same_for_a_seed_and_the_regressions_lead() -> None:
    first = list(cases(200, seed=5))
    assert first == list(cases(200, seed=5))
    assert first != list(cases(200, seed=6))
    assert first[: len(regressions())] == regressions()
    assert len(first) == 200
    assert any(case.trickle for case in first)
    assert any(case.half_close for case in first)
    assert any(b"\r\nUpgrade: h2c\r\n" in case.raw for case in first[len(regressions()) :])
    assert any(b"\r\nUpgrade: websocket\r\n" in case.raw for case in first)
    whole = [case for case in first if case.answers]
    assert any(case.half_close for case in whole)
    for case in whole:  # unmutated: each of its requests is one request line
        assert case.raw.count(b" HTTP/1.1\r\nHost: fuzz\r\n") == case.answers


def test_the_grpc_cases_are_the_same_for_a_seed_and_the_valid_requests_lead() -> None:
    first = list(grpc_cases(300, seed=5))
    assert first == list(grpc_cases(300, seed=5))
    assert first[:4] == [("ModelInfer", request) for request in grpc_requests()]
    assert {method for method, _ in first} > {"ModelInfer", "ServerLive"}


def test_the_requests_mutations_start_from_are_answered_200(client: TestClient) -> None:
    for method, target, headers, body in valid_requests():
        answer = client.request(method, target, headers=headers, content=body)
        assert answer.status_code == 200, (target, answer.text)


def test_pipelined_answers_are_read_by_their_length_not_by_what_their_bodies_say() -> None:
    quoting = b'{"error": "x"}HTTP/1.1 500 Internal Server Error\r\n'
    answers = (
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
        + b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n" % len(quoting)
        + quoting
    )
    assert statuses(answers) == ([200, 400], False)
    assert statuses(answers + b"HTTP/1.1 2") == ([200, 400], True)
    assert statuses(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}") == ([200], True)
    assert statuses(b"") == ([], False)


def test_a_chunked_rendering_carries_the_same_body() -> None:
    request = valid_requests()[0]
    raw = render(request, chunked=True, rng=random.Random(0))
    head, _, chunks = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert b"Content-Length" not in head
    body, rest = b"", chunks
    while (size := int(rest.split(b"\r\n", 1)[0], 16)) > 0:
        body += rest.split(b"\r\n", 1)[1][:size]
        rest = rest.split(b"\r\n", 1)[1][size + 2 :]
    assert body == request[3]


def test_a_short_run_against_the_served_service_passes(tmp_path: Path) -> None:
    """The regressions and some mutations, HTTP and gRPC, against gunicorn with 2 workers: fails
    on the code before app.server.coalesce dropped writes on a closing connection (a traceback a
    case), before app.server.protocol answered half-closed connections, and before it counted
    the answers of the HTTP layer itself in the metrics."""
    arguments = ["--cases", "60", "--grpc-cases", "60", "--seed", "0", "--out", str(tmp_path)]
    assert wire_fuzz.main(arguments) == 0
    report = json.loads((tmp_path / "wire-fuzz.json").read_text(encoding="utf-8"))
    assert all(report["checks"].values()), report["checks"]
    assert report["settings"]["tracebacks_logged"] == 0
    answers = report["settings"]["answers"]
    assert answers.get("200", 0) > 0, answers
    assert answers.get("400", 0) > 0, answers
    assert answers.get("431", 0) > 0, answers  # the regression's trailer section, at least
    assert answers["whole valid requests"] >= 2, answers  # the half-closed regression's, at least
    assert report["settings"]["unanswered_cases"] == 0
    assert report["settings"]["received_but_not_counted"] == {}
    assert report["settings"]["http_requests_total_by_status"]["400"] >= answers["400"]
    codes = report["settings"]["grpc_codes"]
    assert codes.get("OK", 0) >= len(grpc_requests()), codes  # the valid requests
    assert codes.get("INVALID_ARGUMENT", 0) > 0, codes
    assert report["settings"]["grpc_calls_counted_by_code"]["OK"] >= codes["OK"]


@pytest.mark.parametrize("count", [0, 1])
def test_fewer_cases_than_regressions_sends_that_many(count: int) -> None:
    assert len(list(cases(count, seed=0))) == count

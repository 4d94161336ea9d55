"""benchmarks/grpc_load.py's reading of h2load: its frames, its summary, and the server's counts
that stand in for the gRPC status h2load does not read (h2load against the real server:
tests/test_grpc_server.py)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from benchmarks.grpc_load import grpc_frame, parse_h2load, unexpected
from benchmarks.stress import StressError
from tests.conftest import PAYLOADS

OUTPUT = PAYLOADS / "h2load_output.txt"
"""A real h2load run's output (1 s, 2 connections of 4 streams, against the service)."""
REQUESTS = PAYLOADS / "h2load_requests.tsv"
"""Its --log-file's first 5 rows (start µs, HTTP status, µs), and a 502 row added for the test."""


def test_a_frame_is_the_message_behind_its_flag_and_big_endian_length() -> None:
    message = b"\x0a\x0ddelay-minimal" * 40
    frame = grpc_frame(message)
    assert frame[0] == 0
    assert struct.unpack(">I", frame[1:5]) == (len(message),)
    assert frame[5:] == message


def test_the_summary_gives_the_calls_answered_and_the_log_their_latencies() -> None:
    run = parse_h2load(OUTPUT.read_text(encoding="utf-8"), REQUESTS)
    assert run.requests == 2315
    assert run.latencies_us == [6490, 6513, 6515, 6516, 6413]
    assert run.failures == 1  # the 502 row


def test_failed_errored_and_timed_out_requests_are_failures(tmp_path: Path) -> None:
    output = OUTPUT.read_text(encoding="utf-8").replace(
        "2315 succeeded, 0 failed, 0 errored, 0 timeout",
        "2300 succeeded, 7 failed, 5 errored, 3 timeout",
    )
    log = tmp_path / "log"
    log.write_text("", encoding="utf-8")
    run = parse_h2load(output, log)
    assert (run.requests, run.failures) == (2300, 15)


def test_an_output_without_its_summary_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StressError, match="no summary"):
        parse_h2load("connect to 127.0.0.1 failed\n", tmp_path / "log")


def test_every_call_ok_is_no_error() -> None:
    assert unexpected({"OK": 1000.0}, 990, 64) == []


def test_a_status_other_than_ok_is_an_error_h2load_cannot_see() -> None:
    counted = {"OK": 1000.0, "NOT_FOUND": 12.0, "INVALID_ARGUMENT": 0.0}
    assert unexpected(counted, 1000, 64) == ["12 calls answered NOT_FOUND"]


def test_only_the_calls_in_flight_at_the_end_may_be_cancelled() -> None:
    assert unexpected({"OK": 1000.0, "CANCELLED": 64.0}, 1000, 64) == []
    assert unexpected({"OK": 1000.0, "CANCELLED": 65.0}, 1000, 64) == [
        "65 calls answered CANCELLED"
    ]


def test_fewer_ok_calls_than_h2load_answered_is_an_error() -> None:
    assert unexpected({"OK": 900.0}, 1000, 64) == ["the server counted 900 OK calls, h2load 1000"]

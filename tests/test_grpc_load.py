"""benchmarks/grpc_load.py's reading of h2load: its frames, its summary, and the server's counts
that stand in for the gRPC status h2load does not read (h2load against the real server:
tests/test_grpc_server.py)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from benchmarks.grpc_load import grpc_frame, parse_h2load, rest_errors, unexpected
from benchmarks.stress import StressError
from benchmarks.stress_report import summary_from_json
from tests.conftest import PAYLOADS
from tests.test_stress_report import sample

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


def _summary(succeeded: int, failed: int, errored: int, timeout: int) -> str:
    """The real output with other counts on its `requests:` line."""
    return OUTPUT.read_text(encoding="utf-8").replace(
        "2315 succeeded, 0 failed, 0 errored, 0 timeout",
        f"{succeeded} succeeded, {failed} failed, {errored} errored, {timeout} timeout",
    )


def test_the_summary_gives_the_calls_answered_and_the_log_their_latencies() -> None:
    # h2load counts the log's 502 in `failed` (a status other than 2xx or 3xx)
    run = parse_h2load(_summary(2314, 1, 0, 0), REQUESTS)
    assert run.requests == 2314
    assert run.latencies_us == [6490, 6513, 6515, 6516, 6413]
    assert run.failures == 1  # the 502 row, once


def test_failed_errored_and_timed_out_requests_are_failures(tmp_path: Path) -> None:
    """h2load's `errored` is part of its `failed`, and `timeout` part of `errored` (man h2load):
    7 failed, of which 5 errored, of which 3 timed out, are 7 failures, not 15."""
    log = tmp_path / "log"
    log.write_text("".join(f"{start}\t-1\t2000000\n" for start in range(5)), encoding="utf-8")
    run = parse_h2load(_summary(2300, 7, 5, 3), log)
    assert (run.requests, run.failures) == (2300, 7)


def test_a_success_other_than_200_is_a_failure_h2load_does_not_count(tmp_path: Path) -> None:
    """h2load counts any 2xx or 3xx as succeeded: a gRPC call is answered 200 or is not one."""
    log = tmp_path / "log"
    log.write_text("1\t200\t6000\n2\t204\t900\n3\t302\t800\n", encoding="utf-8")
    run = parse_h2load(_summary(3, 0, 0, 0), log)
    assert (run.requests, run.failures, run.latencies_us) == (1, 2, [6000])


def test_a_rest_rows_errors_count_a_timeout_once() -> None:
    """wrk's timeouts are already among its socket errors (stress_report.Errors.socket)."""
    errors = {"connect": 0, "read": 2, "write": 0, "status": 4, "timeout": 3}
    raw = sample(errors=errors, non_2xx=4, bad_bodies=1)
    assert rest_errors(summary_from_json(raw)) == 2 + 3 + 4 + 1


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

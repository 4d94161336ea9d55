"""benchmarks.grpc_reload's verdict and report, on outcomes made here, and its callers against a
stub server (the real server's reloads are tests/test_grpc_server.py's)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from benchmarks.grpc_reload import LIVE, Callers, Outcome, Reload, render


def outcome(*reloads: Reload) -> Outcome:
    return Outcome("abc1234", "2026-12-03 07:00:00 UTC", "CPU", 2, "0.1 0.2 0.3", "cmd", 2, 2,
                   list(reloads), 0.52, [])  # fmt: skip


def test_a_reload_counts_every_status_but_ok_as_failed() -> None:
    reload = Reload(0.7, {"OK": 900, "UNAVAILABLE": 12, "DEADLINE_EXCEEDED": 1})
    assert reload.failed == 13
    assert Reload(0.5, {"OK": 10}).failed == 0


def test_the_report_passes_only_when_no_call_failed() -> None:
    clean = outcome(Reload(0.6, {"OK": 1000}), Reload(0.8, {"OK": 1200}), Reload(0.7, {"OK": 5}))
    report = render(clean)
    assert "**PASS: no call failed** of 2,205 calls over 3 reloads" in report
    assert "0.70 s (median; 0.60-0.80 s)" in report
    assert "| 2 | 0.80 | 1,200 | 0 | OK 1,200 |" in report
    failing = outcome(Reload(0.6, {"OK": 1000}), Reload(0.5, {"OK": 10, "UNAVAILABLE": 3000}))
    failing.failures = ["UNAVAILABLE: failed to connect to all addresses"]
    report = render(failing)
    assert "**FAIL: 3,000 failed** of 4,010 calls" in report
    assert "- `UNAVAILABLE: failed to connect to all addresses`" in report


def test_the_report_says_how_the_clients_connect() -> None:
    new = render(outcome(Reload(0.6, {"OK": 10})))
    assert "each call on a new connection" in new
    kept = outcome(Reload(0.6, {"OK": 10}))
    kept.kept_connections = True
    assert "each thread on one connection it keeps for all its calls" in render(kept)
    assert render(kept).startswith("# gRPC across model reloads (`make grpc-reload-kept`)")


def test_the_report_says_whether_the_clients_retry() -> None:
    plain = outcome(Reload(0.6, {"OK": 10}))
    assert "a failed call not retried" in render(plain)
    retrying = outcome(Reload(0.6, {"OK": 10}))
    retrying.kept_connections = retrying.retrying = True
    assert "retrying as `deploy/grpc/service-config.json` says" in render(retrying)
    assert render(retrying).startswith(
        "# gRPC across model reloads (`make grpc-reload-kept-retrying`)"
    )
    retrying.kept_connections = False  # no target runs it: its command names it
    assert render(retrying).startswith("# gRPC across model reloads (`cmd`)")


@pytest.fixture
def cancelling_first_attempts() -> Iterator[str]:
    """A server whose ServerLive cancels every other call it receives (a reload's CANCELLED):
    a retried call's second attempt is answered. Its address."""
    received = 0
    lock = threading.Lock()

    def live(request: bytes, context: grpc.ServicerContext) -> bytes:
        nonlocal received
        with lock:
            received += 1
            first = received % 2 == 1
        if first:
            context.abort(grpc.StatusCode.CANCELLED, "cancelled on purpose")
        return b""

    service, method = LIVE.strip("/").split("/")
    server = grpc.server(ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                service, {method: grpc.unary_unary_rpc_method_handler(live)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


@pytest.mark.parametrize("retrying", [False, True])
def test_retrying_callers_use_the_advised_configuration(
    cancelling_first_attempts: str, retrying: bool
) -> None:
    """--retrying's clients are given deploy/grpc/service-config.json: each CANCELLED first
    attempt is retried and answered; without it, half the calls fail."""
    with Callers(cancelling_first_attempts, 1, kept_connections=True, retrying=retrying) as callers:
        time.sleep(0.3)
    counts = callers.counts()
    assert counts["OK"] > 0
    assert (counts["CANCELLED"] == 0) is retrying, counts

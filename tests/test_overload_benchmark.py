"""benchmarks.overload's verdicts and table, on made-up runs (no server): each kind of client
and each bound is judged against its own unloaded rows; the bound off is never judged. And its
CPU accounting, on made-up /proc lines and snapshots; its idle pool, against a small local
HTTP server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from benchmarks.chaos import Tally, wait_for
from benchmarks.overload import (
    P99_MIN_SAMPLES,
    CpuSnapshot,
    cpu_split,
    cpu_table,
    idle_pool,
    probe_figures,
    table,
    verdicts,
)
from benchmarks.stress import CLOCK_TICKS, machine_cpu_s, process_cpu_s

NO_ERRORS = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}


def run(ok: int, p99: float, shed: int = 0, timeouts: int = 0) -> dict[str, Any]:
    return {
        "ok_per_s": ok, "shed_per_s": shed, "ok_p50_ms": p99 / 2, "ok_p99_ms": p99,
        "other_statuses": 0, "socket_errors": NO_ERRORS | {"timeout": timeouts}, "probe_lost": 0,
    }  # fmt: skip


def rows(loaded: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {"16": [run(20_000, 1.0)], "64": [run(30_000, 3.0)], "1024": [loaded]}


def test_each_client_is_judged_against_its_own_unloaded_rows() -> None:
    result = {
        "overload": {
            # 90 % of 30,000 and 5 x 1.0 ms are the targets
            "backoff": {"64": rows(run(27_000, 5.0, shed=900))},
            "at-once": {"64": rows(run(26_999, 5.1, shed=30_000, timeouts=1)),
                        "off": rows(run(1, 100.0))},
        }
    }  # fmt: skip
    checks = verdicts(result)
    assert checks["backoff, bound 64, 1024: p99 of 200s <= 5 x unloaded p99 (16 connections)"]
    assert checks["backoff, bound 64, 1024: 200/s >= 90 % of the unloaded maximum"]
    assert checks["backoff, bound 64, 1024: zero wrk timeouts (2 s)"]
    assert not checks["at-once, bound 64, 1024: p99 of 200s <= 5 x unloaded p99 (16 connections)"]
    assert not checks["at-once, bound 64, 1024: 200/s >= 90 % of the unloaded maximum"]
    assert not checks["at-once, bound 64, 1024: zero wrk timeouts (2 s)"]
    assert not any("bound off" in check for check in checks)


def test_the_table_has_a_row_per_client_bound_and_connections() -> None:
    result = {"overload": {"backoff": {"64": rows(run(27_000, 5.0, shed=900))}}}
    lines = table(result).splitlines()
    assert len(lines) == 2 + 3
    assert lines[-1].startswith("| backoff | 64 | 1,024 | 27,000 [27,000-27,000] | 900 |")


def test_a_row_whose_probe_got_no_200_is_a_missed_p99_and_printed_as_such() -> None:
    starved = run(25_000, 0.0) | {"ok_p50_ms": None, "ok_p99_ms": None}
    result = {"overload": {"at-once": {"64": rows(starved)}}}
    checks = verdicts(result)
    assert not checks["at-once, bound 64, 1024: p99 of 200s <= 5 x unloaded p99 (16 connections)"]
    (line,) = [row for row in table(result).splitlines() if "| 1,024 |" in row]
    assert "| n/a | n/a |" in line


def test_a_process_cpu_is_read_past_a_command_name_with_spaces_and_parentheses() -> None:
    ticks = CLOCK_TICKS
    fields = ["S", "1", "2", "3", "0", "-1", "4194560", "10", "0", "0", "0"]
    stat = f"4242 (gunicorn: ) worker (x)) {' '.join(fields)} {3 * ticks} {ticks} 0 0 20 0 1"
    assert process_cpu_s(stat) == 4.0  # utime 3 s + stime 1 s


def test_the_machine_cpu_is_busy_all_but_idle_and_iowait() -> None:
    ticks = CLOCK_TICKS
    line = " ".join(str(n * ticks) for n in (5, 1, 2, 10, 3, 0, 1, 0, 7, 0))  # guest: in user
    busy, capacity = machine_cpu_s(f"cpu  {line}\ncpu0 1 2 3\n")
    assert (busy, capacity) == (9.0, 22.0)


def test_the_cpu_split_charges_each_part_and_the_rest_to_other() -> None:
    before = CpuSnapshot(at=10.0, workers={1: 5.0, 2: 7.0}, own=1.0, children=2.0,
                         busy=100.0, capacity=200.0)  # fmt: skip
    # worker 2 replaced by 3 during the run: 2's last figure is lost with it, 3 counts from 0
    after = CpuSnapshot(at=20.0, workers={1: 11.0, 3: 2.0}, own=1.5, children=6.0,
                        busy=118.0, capacity=220.0)  # fmt: skip
    split = cpu_split(before, after, ok=60_000, shed=20_000)
    assert split["seconds"] == 10.0
    assert split["capacity_s"] == 20.0
    assert split["workers_s"] == 8.0
    assert split["wrk_s"] == 4.0
    assert split["probe_s"] == 0.5
    assert split["other_s"] == 18.0 - 8.0 - 4.0 - 0.5
    assert split["workers_us_per_200"] == round(8.0 / 60_000 * 1e6, 1)
    assert split["workers_us_per_answer"] == 100.0
    assert cpu_split(before, before, ok=0, shed=0)["workers_us_per_200"] is None


def test_the_cpu_table_gives_median_shares_and_the_workers_cpu_per_answer() -> None:
    def cpu(workers: float, per_200: float | None) -> dict[str, Any]:
        return {"capacity_s": 20.0, "workers_s": workers, "wrk_s": 4.0, "probe_s": 1.0,
                "workers_us_per_200": per_200, "workers_us_per_answer": 50.0}  # fmt: skip

    runs = [run(20_000, 1.0) | {"cpu": cpu(w, p)} for w, p in ((10.0, 60.0), (12.0, 70.0))]
    runs.append(run(0, 1.0) | {"cpu": cpu(14.0, None)})  # no 200: no CPU per 200
    result = {"overload": {"at-once": {"64": {"1024": runs, "16": [run(1, 1.0)]}}}}
    lines = cpu_table(result).splitlines()
    assert len(lines) == 2 + 1  # the row without CPU figures (an older file) is left out
    assert lines[-1] == "| at-once | 64 | 1,024 | 60% | 20% | 5% | 15% | 65 µs | 50 µs |"


def test_the_probe_gives_a_p99_only_from_enough_200s() -> None:
    """A p99 of fewer than P99_MIN_SAMPLES 200s is None (the 503s do not count); the p50 and
    the maximum are given from any."""
    few = Tally(timed=[(200, 0.001)] * (P99_MIN_SAMPLES - 2) + [(200, 0.2)] + [(503, 1.0)] * 50)
    figures = probe_figures(few)
    assert figures["ok_p99_ms"] is None
    assert (figures["ok_p50_ms"], figures["ok_max_ms"]) == (1.0, 200.0)
    enough = Tally(timed=[(200, 0.001)] * (P99_MIN_SAMPLES - 1) + [(200, 0.2)])
    assert probe_figures(enough)["ok_p99_ms"] == 1.0


def test_64_connections_are_judged_never_shed_and_named_with_the_idle_pool() -> None:
    shed = {"16": [run(20_000, 1.0)], "64": [run(30_000, 3.0, shed=12)]}
    result = {
        "settings": {"idle_pool": 600},
        "overload": {"backoff": {"64": rows(run(27_000, 5.0)), "32": shed, "128": shed}},
    }
    checks = verdicts(result)
    name = "bound {}, 64: no 503 (64 clients are never shed), beside 600 idle connections"
    assert checks[f"backoff, {name.format(64)}"]
    assert not checks[f"backoff, {name.format(128)}"]
    assert not any(check.startswith("backoff, bound 32, 64: no 503") for check in checks)
    assert table(result).splitlines()[3].startswith("| backoff | 64 | 64 + 600 idle | 30,000 ")


class Health(BaseHTTPRequestHandler):
    """GET /health: 200, kept alive (HTTP/1.1), or as `status` and `close` say; counts the
    connections it holds open in `open`."""

    protocol_version = "HTTP/1.1"
    status, close, open = 200, False, 0
    lock = threading.Lock()

    def setup(self) -> None:
        super().setup()
        with Health.lock:
            Health.open += 1

    def finish(self) -> None:
        super().finish()
        with Health.lock:
            Health.open -= 1

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/health" else 404)
        self.send_header("Content-Length", "2")
        if self.close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def health_server(status: int = 200, close: bool = False) -> Iterator[int]:
    handler = type("Handler", (Health,), {"status": status, "close": close})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_the_idle_pool_holds_its_connections_open_each_answered_once_and_closes_them() -> None:
    Health.open = 0
    with health_server() as port:
        with idle_pool(port, 7) as pool:
            assert len(pool) == 7
            assert all(connection.sock is not None for connection in pool)  # kept alive
            assert wait_for(lambda: Health.open == 7, 5, 0.01)
        assert wait_for(lambda: Health.open == 0, 5, 0.01)


@pytest.mark.parametrize(("status", "close"), [(503, False), (200, True)])
def test_an_idle_pool_the_server_does_not_keep_is_an_error(status: int, close: bool) -> None:
    with (
        health_server(status, close) as port,
        pytest.raises(RuntimeError, match="idle pool"),
        idle_pool(port, 3),
    ):
        pass

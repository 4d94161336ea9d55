"""benchmarks.overload's verdicts and table, on made-up runs (no server): each kind of client
and each bound is judged against its own unloaded rows; the bound off is never judged."""

from __future__ import annotations

from typing import Any

from benchmarks.overload import table, verdicts

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

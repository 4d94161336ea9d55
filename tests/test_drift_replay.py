"""benchmarks.drift_replay without a server: the month streams, the alert's reading of the
gauges and the report (the replay against a real server on the real data:
tests/test_server_observability.py)."""

from __future__ import annotations

from datetime import datetime

import pytest

from app.inference.flights import Flight, Schedule
from benchmarks.drift_replay import ALERT_RATE, Month, alerting, main, month_stream, render


def scheduled(month: int, airline: str = "LAN") -> Flight:
    departure = datetime(2017, month, 3, 10, 0)
    return Flight("Grupo LATAM", "N", month, Schedule(departure, "SCIE", airline, "100"))


def test_a_month_stream_holds_that_month_alone_half_without_schedule() -> None:
    flights = [scheduled(month) for month in (1, 2, 2, 3)] + [scheduled(2, "SKU")]
    drawn = month_stream(flights, 2, 1000, seed=0)
    assert len(drawn) == 1000
    assert {flight.month for flight in drawn} == {2}
    assert sum(flight.schedule is None for flight in drawn) == 500
    airlines = {flight.schedule.airline for flight in drawn if flight.schedule is not None}
    assert airlines == {"LAN", "SKU"}  # drawn from all of the month's flights
    assert month_stream(flights, 2, 1000, seed=0) == drawn  # the same for the same seed


def test_the_alert_reads_every_input_but_the_seasonal_ones_and_not_the_alert_rate() -> None:
    month = Month(
        7,
        {
            "delay-full": {"MES": 8.3, "OPERA": 0.21, "hour": 0.2, ALERT_RATE: 0.9},
            "delay-minimal": {"MES": 8.3, "OPERA": 0.05, ALERT_RATE: 0.4},
        },
    )
    assert alerting(month) == {"delay-full": ["OPERA"], "delay-minimal": []}


def test_the_report_marks_what_is_over_the_alert_line_and_sums_up_each_model() -> None:
    months = [
        Month(1, {"delay-minimal": {"OPERA": 0.12, "MES": 8.18, ALERT_RATE: 0.386}}),
        Month(2, {"delay-minimal": {"OPERA": 0.03, "MES": 4.6, ALERT_RATE: 0.39}}),
    ]
    report = render(months, "- setup")
    assert "| 1 | 0.120 | **8.180** | 0.386 |" in report
    assert "| 2 | 0.030 | **4.600** | 0.390 |" in report
    assert "Largest PSI of a watched input: 0.120; MES: 4.60 to 8.18." in report
    assert "## delay-minimal" in report
    assert "- setup" in report


def test_a_stream_too_small_to_replace_the_windows_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--workers", "2", "--window", "1500", "--count", "6600"])
    assert "each model needs more than the 3300 flights" in capsys.readouterr().err


def test_the_replay_server_has_one_worker_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """With two, a month stayed mixed with the one before in the window of a worker that had
    scored fewer flights than its window holds (the accepts split unevenly): MES 8.05 and 8.13
    in the report at 5a4f82f where one worker gives 8.65 and 8.58."""
    from types import SimpleNamespace

    from benchmarks import drift_replay

    started: dict[str, str] = {}

    class Started(Exception):
        pass

    def served(*args: object, env: dict[str, str]) -> None:
        started.update(env)
        raise Started

    monkeypatch.setattr(drift_replay, "served", served)
    monkeypatch.setattr(
        drift_replay, "load", lambda path: SimpleNamespace(flights=lambda schedule: [])
    )
    with pytest.raises(Started):
        main([])
    assert started["WORKERS"] == "1"

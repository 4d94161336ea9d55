"""Input drift on the data's own months: each month of the SCL data streamed alone through a real
server and its drift gauges scraped (`make drift-replay` writes reports/drift-replay.md).

Live traffic is the flights of about one month at a time, so a month alone is what the drift
monitor sees in production. The replay shows which gauges move by design on the very flights
the models learnt from (`MES`: one month's flights against the training year's twelve) and which
stay quiet there: the drift alert (deploy/k8s/monitoring/prometheusrule.yaml) leaves the first
out (app.observability.drift.SEASONAL_INPUTS), or it would fire all year round.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx2 as httpx
from prometheus_client.parser import text_string_to_metric_families

from app.inference.flights import Flight
from app.observability.drift import PSI_ALERT, SEASONAL_INPUTS
from app.observability.metrics import FLUSH_SECONDS
from benchmarks.stress import (
    GUNICORN,
    defaults_environment,
    free_port,
    load_average,
    revision,
    served,
)
from train.data import data_location, load
from train.provenance import machine

ALERT_RATE = "alert_rate"
"""Beside the inputs' PSIs in a model's gauges: `drift_alert_rate`, the share labelled delayed."""
BATCH = 100

Gauges = dict[str, dict[str, float]]
"""A model's name -> its inputs' (and `proba`'s) PSI, and its ALERT_RATE."""


@dataclass(frozen=True)
class Month:
    month: int
    gauges: Gauges


def month_stream(flights: Sequence[Flight], month: int, count: int, seed: int) -> list[Flight]:
    """`count` of the month's flights, drawn with replacement, every other one without its
    schedule: half of them for each model."""
    rng = random.Random(seed * 100 + month)
    pool = [flight for flight in flights if flight.month == month]
    drawn = [pool[rng.randrange(len(pool))] for _ in range(count)]
    return [
        flight if i % 2 else Flight(flight.operator, flight.flight_type, flight.month)
        for i, flight in enumerate(drawn)
    ]


def stream(url: str, flights: Sequence[Flight]) -> None:
    """`flights` to /predict in batches, a new connection each, so that every worker scores some."""
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=url, timeout=30, limits=limits) as client:
        for start in range(0, len(flights), BATCH):
            batch = [flight.request_fields() for flight in flights[start : start + BATCH]]
            client.post("/predict", json={"flights": batch}).raise_for_status()


def gauges(metrics_url: str) -> Gauges:
    """The drift gauges /metrics shows once every worker has flushed its window."""
    time.sleep(FLUSH_SECONDS + 0.5)
    text = httpx.get(metrics_url + "/metrics", timeout=30).text
    found: Gauges = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "drift_psi":
                found.setdefault(sample.labels["model"], {})[sample.labels["feature"]] = (
                    sample.value
                )
            elif sample.name == "drift_alert_rate":
                found.setdefault(sample.labels["model"], {})[ALERT_RATE] = sample.value
    return found


def replay(
    url: str, metrics_url: str, flights: Sequence[Flight], count: int, seed: int = 0
) -> list[Month]:
    """Each month present in `flights` (full-schedule ones), streamed alone, and the gauges after
    it. `count` must exceed what the workers' windows hold, so a month replaces the one before."""
    months = sorted({flight.month for flight in flights})
    return [
        _after(url, metrics_url, month_stream(flights, month, count, seed), month)
        for month in months
    ]


def _after(url: str, metrics_url: str, flights: list[Flight], month: int) -> Month:
    stream(url, flights)
    return Month(month, gauges(metrics_url))


def alerting(month: Month) -> dict[str, list[str]]:
    """Per model, the inputs over PSI_ALERT that the drift alert watches (SEASONAL_INPUTS out)."""
    return {
        model: [
            name
            for name, value in values.items()
            if name != ALERT_RATE and name not in SEASONAL_INPUTS and value > PSI_ALERT
        ]
        for model, values in month.gauges.items()
    }


def render(months: Sequence[Month], setup: str) -> str:
    """The report: a table per model, months as rows, gauges as columns."""
    lines = [
        "# Input drift on the data's own months (`make drift-replay`)",
        "",
        setup,
        "",
        f"A PSI over {PSI_ALERT} is marked **bold**. The drift alert (`LatamDelayInputDrift`) "
        f"watches every input but {', '.join(f'`{name}`' for name in SEASONAL_INPUTS)}: "
        "live traffic is always the flights of about one month, which against the training "
        "year's twelve gives a large PSI whatever the flights are.",
    ]
    models = sorted({model for month in months for model in month.gauges})
    for model in models:
        columns = [name for name in months[0].gauges.get(model, {}) if name != ALERT_RATE]
        lines += [
            "",
            f"## {model}",
            "",
            "| month | " + " | ".join(f"`{name}`" for name in columns) + " | alert rate |",
            "| ---: | " + " | ".join("---:" for _ in columns) + " | ---: |",
        ]
        for month in months:
            values = month.gauges.get(model, {})
            cells = [_psi(values.get(name)) for name in columns]
            lines.append(
                f"| {month.month} | " + " | ".join(cells) + f" | {_share(values.get(ALERT_RATE))} |"
            )
        watched = [
            value
            for month in months
            for name, value in month.gauges.get(model, {}).items()
            if name != ALERT_RATE and name not in SEASONAL_INPUTS
        ]
        seasonal = [
            value
            for month in months
            for name, value in month.gauges.get(model, {}).items()
            if name in SEASONAL_INPUTS
        ]
        lines += [
            "",
            f"Largest PSI of a watched input: {max(watched, default=float('nan')):.3f}; "
            f"{', '.join(SEASONAL_INPUTS)}: {min(seasonal, default=float('nan')):.2f} to "
            f"{max(seasonal, default=float('nan')):.2f}.",
        ]
    return "\n".join(lines) + "\n"


def _psi(value: float | None) -> str:
    if value is None:
        return "-"
    return f"**{value:.3f}**" if value > PSI_ALERT else f"{value:.3f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=data_location())
    # One worker: its window is sure to hold the month alone. With two, the month is alone only
    # if each worker scored more than its window holds, and the accepts split unevenly: at
    # 5a4f82f two workers left months 4 and 5 mixed with the month before (MES PSI 8.05 and 8.13
    # where one worker gives 8.65 and 8.58), and a later run one at 5.44.
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--window", type=int, default=1500, help="DRIFT_WINDOW, flights a worker")
    parser.add_argument("--count", type=int, default=8000, help="flights streamed a month")
    parser.add_argument("--out", type=Path, help="directory to write drift-replay.md into")
    arguments = parser.parse_args(argv)
    held = arguments.workers * arguments.window * 1.1
    if arguments.count / 2 <= held:
        parser.error(f"--count {arguments.count}: each model needs more than the {held:.0f} "
                     "flights its workers' windows hold")  # fmt: skip
    flights = load(arguments.data).flights(schedule=True)
    _, cpu, cores = machine()
    load_before = load_average()
    scratch = Path(tempfile.mkdtemp(prefix="drift-replay-"))
    env = {
        "WORKERS": str(arguments.workers),
        "DRIFT_WINDOW": str(arguments.window),
        "TMPDIR": str(scratch),
    }
    try:
        with served(
            GUNICORN, free_port(), 60, scratch / "server.log",
            env=defaults_environment(env),
        ) as server:  # fmt: skip
            months = replay(server.url, server.url, flights, arguments.count)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    workers = "1 worker" if arguments.workers == 1 else f"{arguments.workers} workers"
    alone = "" if arguments.workers == 1 else (
        " if every worker scored more than its window holds (the accepts may split unevenly)"
    )  # fmt: skip
    setup = (
        f"- Code: {revision()}; {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC; {cpu}, {cores} cores; "
        f"load average before: {load_before}, after: {load_average()}.\n"
        f"- A real server (`make serve`'s command), {workers}, "
        f"`DRIFT_WINDOW={arguments.window}`, the committed models. Each month of "
        f"`{arguments.data.name}`: {arguments.count:,} of its flights drawn with replacement "
        "(half without their schedule, for the minimal model), sent to `/predict` in batches of "
        f"{BATCH}, then `/metrics` scraped. The server's windows hold at most "
        f"{held:,.0f} flights per model, so each month's gauges are of that month alone"
        f"{alone}.\n"
        f"- Command: `python -m benchmarks.drift_replay {' '.join(argv or sys.argv[1:])}`"
    )
    report = render(months, setup)
    print(report)
    if arguments.out:
        (arguments.out / "drift-replay.md").write_text(report)


if __name__ == "__main__":
    main()

"""The stress report and its pass/fail rule, from a sample wrk summary: no server, no wrk."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from benchmarks.stress_report import (
    CpuUse,
    RunInfo,
    failures,
    parse_summary,
    plot_latency,
    render_markdown,
    summary_from_json,
)

WRK_TEXT = """Running 45s test @ http://127.0.0.1:40123
  2 threads and 64 connections
  52345 requests in 45.01s, 7.10MB read
Requests/sec:   1162.97
"""


def sample(**changes: Any) -> dict[str, Any]:
    """What wrk/common.lua prints in done(), with `changes` merged in."""
    raw: dict[str, Any] = {
        "tool": "wrk",
        "script": "predict",
        "bodies_file": "build/wrk/minimal.jsonl",
        "threads": 2,
        "checked": True,
        "duration_us": 45_010_000,
        "requests": 52_345,
        "bytes": 7_444_000,
        "requests_per_s": 1162.97,
        "errors": {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0},
        "statuses": {"200": 52_345},
        "non_2xx": 0,
        "bad_bodies": 0,
        "latency_us": {"min": 1200, "mean": 50210.4, "stdev": 10110.2, "p50": 48340,
                       "p90": 63740, "p99": 80370, "p99_9": 86550, "max": 96650},
        "distribution": [[p, 30_000 + 500 * p] for p in range(1, 100)]
        + [[99.5, 85_000], [99.9, 86_550], [99.99, 96_000], [100, 96_650]],
    }  # fmt: skip
    raw.update(changes)
    return raw


def output(**changes: Any) -> str:
    return WRK_TEXT + json.dumps(sample(**changes), separators=(",", ":")) + "\n"


RUN = RunInfo(
    date_utc="2026-01-02 03:04:05",
    uname="Linux vm 6.1 x86_64 GNU/Linux",
    cpu_model="AMD EPYC",
    nproc=2,
    load_average="0.10 0.20 0.30",
    command="python -m benchmarks.stress --duration 45",
    server_command=".venv/bin/gunicorn -c gunicorn.conf.py 'app.main:create_app()'",
    wrk_command="wrk --threads=2 --connections=64 --duration=45s",
    workers=2,
    connections=64,
    wrk_output=WRK_TEXT,
)


def test_parse_reads_the_summary_line_after_wrk_text() -> None:
    summary = parse_summary(output())
    assert summary.requests == 52_345
    assert summary.duration_s == pytest.approx(45.01)
    assert summary.latency.p99 == 80_370
    assert summary.statuses == {200: 52_345}
    assert summary.distribution[-1] == (100, 96_650)


def test_parse_without_a_summary_line_fails() -> None:
    with pytest.raises(ValueError, match="no wrk summary"):
        parse_summary(WRK_TEXT)


def test_markdown_carries_the_numbers_and_the_caveat() -> None:
    text = render_markdown(parse_summary(output()), RUN, min_requests=50_000)
    for expected in (
        "**PASS**", "52,345", "1,162.97", "48.34 ms", "63.74 ms", "80.37 ms", "86.55 ms",
        "96.65 ms", "0 / 0 / 0 / 0", "2026-01-02 03:04:05", "AMD EPYC", "2 cores",
        RUN.uname, RUN.command, RUN.wrk_command, "same 2-core machine", "latency.png",
    ):  # fmt: skip
        assert expected in text


def test_the_title_names_the_body_mix_and_its_path() -> None:
    run = replace(RUN, mix="full-schedule single flights: onnxruntime full")
    text = render_markdown(parse_summary(output()), run, min_requests=50_000)
    assert text.startswith(
        "# Stress test of `POST /predict`: full-schedule single flights: onnxruntime full\n"
    )


def test_passing_run_has_no_failures() -> None:
    assert failures(parse_summary(output()), min_requests=50_000) == []


def test_too_few_requests_fail() -> None:
    (reason,) = failures(parse_summary(output()), min_requests=60_000)
    assert "fewer than the 60,000 required" in reason


def test_non_2xx_fails_even_when_wrk_counts_none() -> None:
    # A 3xx is not an error for wrk (errors.status counts > 399): the Lua hook counts it.
    summary = parse_summary(output(statuses={"200": 52_000, "302": 345}, non_2xx=345))
    (reason,) = failures(summary, min_requests=1)
    assert "345 non-2xx" in reason
    assert "302" in reason
    assert "**FAIL**" in render_markdown(summary, RUN, min_requests=1)


def test_wrk_status_errors_count_without_the_lua_hook() -> None:
    errors = {"connect": 0, "read": 0, "write": 0, "status": 12, "timeout": 0}
    summary = summary_from_json(sample(errors=errors, non_2xx=None, statuses={}))
    assert summary.non_2xx == 12
    assert failures(summary, min_requests=1)


@pytest.mark.parametrize("kind", ["connect", "read", "write", "timeout"])
def test_any_socket_error_fails(kind: str) -> None:
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0, kind: 1}
    (reason,) = failures(parse_summary(output(errors=errors)), min_requests=1)
    assert "1 socket errors" in reason
    assert f"{kind} 1" in reason


def test_a_200_without_predictions_fails() -> None:
    (reason,) = failures(parse_summary(output(bad_bodies=3)), min_requests=1)
    assert "3 responses with status 200 but no" in reason


def test_plot_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "stress" / "latency.png"
    plot_latency(parse_summary(output()), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_cpu_spent_is_shown_per_request_beside_the_rest_of_the_machine() -> None:
    """52,345 requests in 45.01 s on 2 cores: 7.5 s of server CPU is 143.3 µs a request, and
    9 s of other work 10 % of the machine's 90.02 CPU-seconds."""
    run = replace(RUN, cpu=CpuUse(server_s=7.5, wrk_s=20.25, other_s=9.0))
    text = render_markdown(parse_summary(output()), run, min_requests=50_000)
    assert "| server CPU (master and workers) | 7.5 s, 143.3 µs a request |" in text
    assert "| wrk's CPU | 20.2 s |" in text
    assert "| other work on the machine | 9.0 s, 10% of its CPU |" in text
    replaced = replace(RUN, cpu=CpuUse(server_s=None, wrk_s=20.0, other_s=-0.4))
    text = render_markdown(parse_summary(output()), replaced, min_requests=50_000)
    assert "| server CPU (master and workers) | n/a: a worker was replaced during the run |" in text
    assert "| other work on the machine | 0.0 s, 0% of its CPU |" in text  # clock skew, not work
    assert "server CPU" not in render_markdown(parse_summary(output()), RUN, 50_000)

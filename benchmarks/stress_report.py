"""Turns the wrk summary line printed by `wrk/common.lua` into a verdict, Markdown and a chart.

Pure functions over plain data, so the report and the pass/fail rule are tested without a server.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Errors:
    connect: int
    read: int
    write: int
    status: int
    """wrk's own count: responses with a status above 399."""
    timeout: int

    @property
    def socket(self) -> int:
        return self.connect + self.read + self.write + self.timeout


@dataclass(frozen=True, slots=True)
class Latency:
    """Microseconds, as wrk measures them."""

    mean: float
    p50: float
    p90: float
    p99: float
    p99_9: float
    max: float


@dataclass(frozen=True, slots=True)
class WrkSummary:
    script: str
    bodies_file: str
    threads: int
    duration_s: float
    requests: int
    bytes: int
    requests_per_s: float
    errors: Errors
    statuses: Mapping[int, int]
    non_2xx: int
    """From the Lua response() hook when it ran (it sees 3xx too), else wrk's errors.status."""
    bad_bodies: int
    latency: Latency
    distribution: tuple[tuple[float, float], ...]
    """(percentile, latency in microseconds), ascending."""


@dataclass(frozen=True, slots=True)
class WrkRunInfo:
    """Where and how a wrk run happened: what a reader needs to trust or redo the numbers (the
    stress run's and `make compare`'s records add their own)."""

    date_utc: str
    uname: str
    cpu_model: str
    nproc: int
    load_average: str
    """/proc/loadavg before the (first) run: other work on the machine skews every number."""
    command: str
    server_command: str
    wrk_command: str


@dataclass(frozen=True, slots=True)
class CpuUse:
    """CPU-seconds spent while wrk ran, as `make compare` counts them (benchmarks.stress.clocks):
    a run's requests/s alone cannot say whether the server got slower or the machine busier."""

    server_s: float | None
    """The gunicorn master and workers; None when a worker was replaced during the run."""
    wrk_s: float
    other_s: float
    """Every core's busy time minus the server's and wrk's: the rest of the machine."""


def other_share(other_s: float, duration_s: float, nproc: int) -> float:
    """The share of the machine's CPU that other work took over a run: none where the readings'
    rounding makes it negative."""
    return max(other_s, 0.0) / (duration_s * nproc)


@dataclass(frozen=True, slots=True)
class RunInfo(WrkRunInfo):
    """A stress run's record."""

    workers: int | None
    connections: int
    wrk_output: str
    mix: str = ""
    """What the bodies are and which path serves them."""
    revision: str = ""
    """The commit measured (and whether the work tree differed from it)."""
    cpu: CpuUse | None = None


def parse_summary(output: str) -> WrkSummary:
    """Reads the last `{"tool":"wrk",...}` line of wrk's stdout."""
    for line in reversed(output.splitlines()):
        if line.startswith('{"tool":"wrk"'):
            return summary_from_json(json.loads(line))
    raise ValueError("no wrk summary line in the output: was wrk run with wrk/predict.lua?")


def summary_from_json(raw: Mapping[str, Any]) -> WrkSummary:
    errors = Errors(**{key: int(raw["errors"][key]) for key in Errors.__slots__})
    latency = raw["latency_us"]
    non_2xx = raw.get("non_2xx")
    return WrkSummary(
        script=str(raw["script"]),
        bodies_file=str(raw["bodies_file"]),
        threads=int(raw["threads"]),
        duration_s=int(raw["duration_us"]) / 1e6,
        requests=int(raw["requests"]),
        bytes=int(raw["bytes"]),
        requests_per_s=float(raw["requests_per_s"]),
        errors=errors,
        statuses={int(status): int(count) for status, count in raw["statuses"].items()},
        non_2xx=errors.status if non_2xx is None else max(int(non_2xx), errors.status),
        bad_bodies=int(raw.get("bad_bodies") or 0),
        latency=Latency(**{key: float(latency[key]) for key in Latency.__slots__}),
        distribution=tuple((float(p), float(us)) for p, us in raw["distribution"]),
    )


def failures(summary: WrkSummary, min_requests: int) -> list[str]:
    """Why the run fails; empty when it passes."""
    reasons = []
    if summary.requests < min_requests:
        reasons.append(f"{summary.requests:,} requests, fewer than the {min_requests:,} required")
    if summary.errors.socket:
        e = summary.errors
        reasons.append(
            f"{e.socket:,} socket errors (connect {e.connect}, read {e.read}, "
            f"write {e.write}, timeout {e.timeout})"
        )
    if summary.non_2xx:
        other = {s: n for s, n in sorted(summary.statuses.items()) if not 200 <= s < 300}
        reasons.append(f"{summary.non_2xx:,} non-2xx responses {other or ''}".rstrip())
    if summary.bad_bodies:
        reasons.append(f"{summary.bad_bodies:,} responses with status 200 but no 'predict' list")
    return reasons


def ms(microseconds: float) -> str:
    return f"{microseconds / 1000:,.2f} ms"


def render_markdown(summary: WrkSummary, run: RunInfo, min_requests: int) -> str:
    reasons = failures(summary, min_requests)
    verdict = "**PASS**" if not reasons else "**FAIL**: " + "; ".join(reasons)
    e, lat = summary.errors, summary.latency
    statuses = ", ".join(f"{s}: {n:,}" for s, n in sorted(summary.statuses.items())) or "n/a"
    lines = [
        "# Stress test of `POST /predict`" + (f": {run.mix}" if run.mix else ""),
        "",
        f"{verdict} (rule: at least {min_requests:,} requests, no socket error, no non-2xx).",
        "",
        f"- Date (UTC): {run.date_utc}",
        *([f"- Code: {run.revision}"] if run.revision else []),
        f"- Machine: `{run.uname}`",
        f"- CPU: {run.cpu_model}, {run.nproc} cores (`nproc`); "
        f"load average before the run: {run.load_average}",
        f"- Server: `{run.server_command}`, {_workers(run.workers)}",
        f"- Bodies: `{summary.bodies_file}` (wrk script `{summary.script}`)",
        "",
        "Command:",
        "",
        "```sh",
        run.command,
        "```",
        "",
        "which ran:",
        "",
        "```sh",
        run.wrk_command,
        "```",
        "",
        "## Results",
        "",
        "| metric | value |",
        "| --- | ---: |",
        f"| duration | {summary.duration_s:,.2f} s |",
        f"| requests | {summary.requests:,} |",
        f"| requests/s | {summary.requests_per_s:,.2f} |",
        f"| latency p50 | {ms(lat.p50)} |",
        f"| latency p90 | {ms(lat.p90)} |",
        f"| latency p99 | {ms(lat.p99)} |",
        f"| latency p99.9 | {ms(lat.p99_9)} |",
        f"| latency max | {ms(lat.max)} |",
        f"| latency mean | {ms(lat.mean)} |",
        f"| bytes received | {summary.bytes:,} |",
        f"| HTTP statuses | {statuses} |",
        f"| non-2xx responses | {summary.non_2xx:,} |",
        f"| socket errors: connect / read / write / timeout | "
        f"{e.connect} / {e.read} / {e.write} / {e.timeout} |",
        *_cpu_rows(run, summary),
        "",
        "![latency distribution](latency.png)",
        "",
        "## Caveats",
        "",
        f"- wrk runs on the same {run.nproc}-core machine as the server and takes CPU from it: "
        "the throughput is a lower bound of what the server alone would do, and the latency "
        "includes time spent waiting for a core.",
        f"- wrk keeps {run.connections} connections busy back to back (a closed "
        "loop): latency is measured at saturation, and wrk does not correct for coordinated "
        "omission, so the tail is what a saturated server gives, not what an open stream of "
        "clients would see.",
        "- Traffic goes to 127.0.0.1: no network, TLS or proxy in the path.",
        "",
        "## wrk's own output",
        "",
        "```text",
        run.wrk_output.strip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def _cpu_rows(run: RunInfo, summary: WrkSummary) -> list[str]:
    """The server's CPU a request, wrk's, and the share of the machine other work took."""
    if run.cpu is None:
        return []
    cpu = run.cpu
    if cpu.server_s is None:
        server = "n/a: a worker was replaced during the run"
    else:
        per_request = cpu.server_s * 1e6 / summary.requests if summary.requests else 0.0
        server = f"{cpu.server_s:,.1f} s, {per_request:,.1f} µs a request"
    share = other_share(cpu.other_s, summary.duration_s, run.nproc) if summary.duration_s else 0.0
    return [
        f"| server CPU (master and workers) | {server} |",
        f"| wrk's CPU | {cpu.wrk_s:,.1f} s |",
        f"| other work on the machine | {max(cpu.other_s, 0.0):,.1f} s, {share:.0%} of its CPU |",
    ]


def _workers(workers: int | None) -> str:
    return "workers unknown" if workers is None else f"{workers} worker process(es)"


def plot_latency(summary: WrkSummary, path: Path, title: str = "POST /predict latency") -> None:
    """Latency against percentile, the percentile axis stretched toward the tail (HDR style)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullLocator

    points = [(p, us) for p, us in summary.distribution if p < 100]
    x = [1 / (1 - p / 100) for p, _ in points]
    y = [us / 1000 for _, us in points]
    figure, axes = plt.subplots(figsize=(8, 4.5))
    axes.plot(x, y, marker=".", linewidth=1.5)
    axes.axhline(summary.latency.max / 1000, color="grey", linestyle=":", label="max")
    axes.set_xscale("log")
    axes.set_yscale("log")
    ticks: Sequence[float] = (0, 50, 90, 99, 99.9, 99.99)
    axes.set_xticks([1 / (1 - p / 100) for p in ticks], [f"{p:g}%" for p in ticks])
    axes.xaxis.set_minor_locator(NullLocator())
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.set_xlabel("percentile")
    axes.set_ylabel("latency (ms, log scale)")
    axes.set_title(
        f"{title}: {summary.requests:,} requests, {summary.requests_per_s:,.0f} req/s, "
        f"{summary.threads} wrk threads"
    )
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)

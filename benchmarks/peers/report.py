"""The pure half of `make compare-peers`: per-group medians, ratios and goals, Markdown, JSON.

Each group compares variants on one route with one body set; its first variant is the
service, the baseline of its ratios. Ratios are taken within a round, then their median (and
range) over rounds is reported, as in benchmarks.compare_report.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.compare_report import (
    CAVEAT,
    SETTLE_S,
    RunInfo,
    RunResult,
    Summary,
    Variant,
    _errors,
    _num,
    flagged,
    other_load,
    ratios,
    summarize,
)
from benchmarks.peers.check import Outcome
from benchmarks.peers.junit import CaseOutcome

PEER_GOAL = 10.0
"""The service's requests/s over each peer's, on the same route with real inference."""
SERVER_GOAL = 1.20
"""Granian's requests/s over gunicorn + uvicorn's needed to become a supported server."""


SHARE_NOTE = (
    "- Reading these rows: each Granian worker answers HTTP on a Rust thread beside its Python "
    "thread, gunicorn's uvicorn worker on its one thread, so where other work competes for the "
    "cores Granian's workers get a larger share of them. Server CPU per request, which that "
    "share does not change, is the steadier comparison of the two servers' costs."
)


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    title: str
    variants: tuple[str, ...]
    """The service's variant first: the group's baseline."""
    kind: str
    """"peer": goal PEER_GOAL x each other variant; "server": another server for the same app,
    goal SERVER_GOAL x the service."""

    @property
    def baseline(self) -> str:
        return self.variants[0]


@dataclass(frozen=True, slots=True)
class Verdict:
    variant: str
    ratio: float
    """Median over rounds of the goal's ratio (service / peer, or Granian / service)."""
    low: float
    high: float
    goal: float
    cpu: float | None = None
    """Median over rounds of the same ratio in server CPU-seconds per request (peer / service,
    or service / Granian): above 1, the winner also does less work per request."""

    @property
    def word(self) -> str:
        if self.low >= self.goal:
            return "met"
        if self.high < self.goal:
            return "not met"
        return "inside the noise (rounds on both sides of the goal): not counted as met"


def verdicts(group: Group, runs: Sequence[RunResult]) -> list[Verdict]:
    """Per non-baseline variant, the group's goal ratio: median and range over rounds."""
    mine = [run for run in runs if run.variant in group.variants]
    per_round = ratios(mine, lambda run: run.requests_per_s, group.baseline)
    cpu = ratios(mine, lambda run: run.cpu_s_per_1k, group.baseline)
    found = []
    for name in group.variants[1:]:
        values = per_round.get(name, [])
        if not values:
            continue
        costs = cpu.get(name, [])
        if group.kind == "peer":  # the service over the peer
            values = [1 / value for value in values if value]
        else:  # the service's CPU per request over Granian's
            costs = [1 / value for value in costs if value]
        goal = PEER_GOAL if group.kind == "peer" else SERVER_GOAL
        found.append(
            Verdict(
                name,
                statistics.median(values),
                min(values),
                max(values),
                goal,
                statistics.median(costs) if costs else None,
            )
        )
    return found


@dataclass(frozen=True, slots=True)
class Results:
    """Everything one `make compare-peers` run produced."""

    info: RunInfo
    groups: Sequence[Group]
    variants: Sequence[Variant]
    runs: Sequence[RunResult]
    checked: Mapping[str, Outcome]
    """Each variant's label check."""
    dropped: Mapping[str, str]
    """Variants left out of the timing (not installed, did not start, labels differ): why."""
    versions: Mapping[str, str]
    """Each framework's installed version."""
    reliability: Sequence[CaseOutcome] = ()
    """The real-server suites run against Granian (`make granian-reliability`), if they ran."""


def _table(group: Group, summaries: Sequence[Summary], labels: Mapping[str, str]) -> list[str]:
    lines = [
        f"| variant | req/s | x `{group.baseline}` | p50 ms | p99 ms | server CPU-s / 1k req | "
        "CPU x service | RSS MB, each process | ready s | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in summaries:
        name = f"**{s.variant}**" if s.variant == group.baseline else f"`{s.variant}`"
        ratio = "1" if s.variant == group.baseline else _span(s)
        cpu = "n/a" if s.cpu_ratio is None else f"x{s.cpu_ratio:.2f}"
        lines.append(
            f"| {name} {labels.get(s.variant, '')} | {_num(s.requests_per_s)} | {ratio} | "
            f"{_num(s.p50_ms, 2)} | {_num(s.p99_ms, 2)} | {_num(s.cpu_s_per_1k, 3)} | {cpu} | "
            f"{_num(s.rss_per_worker_mb, 0)} x {s.workers} | {_num(s.ready_s, 2)} | "
            f"{_errors(s.errors)} |"
        )
    return lines


def _span(summary: Summary) -> str:
    return "n/a" if summary.flights_ratio is None else f"x{summary.flights_ratio:.3f}"


def _reliability(outcomes: Sequence[CaseOutcome]) -> list[str]:
    failed = [o for o in outcomes if o.outcome != "passed"]
    lines = [
        "## The real-server test suites under Granian",
        "",
        "`make granian-reliability`: tests/test_server.py and tests/test_reliability.py, "
        "unchanged, with the server they start swapped for the same app under Granian "
        "(benchmarks/peers/under_granian.py). "
        f"{len(outcomes) - len(failed)} passed, {len(failed)} did not:",
        "",
        "| test | outcome | first line of the failure |",
        "| --- | --- | --- |",
    ]
    for o in failed:
        lines.append(f"| `{o.name}` | {o.outcome} | {o.message.replace('|', '/')} |")
    passed = ", ".join(f"`{o.name.split('::')[-1]}`" for o in outcomes if o.outcome == "passed")
    verdict = (
        "every behaviour the suites check holds under Granian"
        if not failed
        else f"{len(failed)} of the suites' checks do not hold under Granian, so it is not made "
        "a supported server whatever its requests/s"
    )
    return [*lines, "", f"Passed: {passed}.", "", f"Reliability half of the bar: {verdict}.", ""]


def render_markdown(results: Results) -> str:
    info, runs, checked, dropped = results.info, results.runs, results.checked, results.dropped
    versions, groups, variants = results.versions, results.groups, results.variants
    noise = other_load(runs, info.nproc)
    described = {variant.name: variant for variant in variants}
    labels = {name: f"({described[name].description})" for name in described}
    lines = [
        "# The service against the serving frameworks a user would pick instead",
        "",
        f"`make compare-peers`, {info.date_utc} to {info.finished_utc} UTC, at revision "
        f"`{info.revision}`, on `{info.uname}`: {info.nproc} cores of {info.cpu_model}. "
        f"Load average before the run: {info.load_average}."
        + (
            f" Other work on the machine (other helpers' builds, tests and benchmarks) took a "
            f"median {noise[0]:.0%} of its CPU during the runs ({noise[1]:.0%}-{noise[2]:.0%})."
            if noise
            else ""
        ),
        "",
        CAVEAT.format(nproc=info.nproc),
        "",
        f"{info.rounds} alternating rounds, each variant on a freshly started server: "
        f"{info.warmup_s} s of discarded warm-up, a {SETTLE_S} s pause (`SETTLE_S` in "
        f"benchmarks/compare_report.py), then {info.duration_s} s measured, "
        f"{info.connections} connections. Command:",
        "",
        "```sh",
        info.command,
        "```",
        "",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()) + ".",
        "Each peer serves the same `models/*.onnx` with onnxruntime on every request (no table), "
        "through the project's own validation and feature encoder (`benchmarks/peers/scoring.py`),"
        " with 2 workers (Triton: 2 instances of each model); the service runs as `make serve` "
        "runs it, with 2 gunicorn workers: on `/predict` and the OIP route it scores the "
        "onnxruntime requests a worker has in hand at once in one call (micro-batching, "
        "`MICROBATCH=1`, its default; app/inference/microbatch.py), each peer one call per request.",
        "",
        "## Labels checked before timing",
        "",
        "| variant | flights | differing | first differences |",
        "| --- | ---: | ---: | --- |",
    ]
    for name, outcome in checked.items():
        first = "; ".join(f"`{m}`" for m in outcome.mismatches) or "none"
        lines.append(f"| `{name}` | {outcome.flights} | {outcome.differing} | {first} |")
    lines += [
        "",
        "The flights: the minimal model's whole domain (every airline x I/N x 12 months) and "
        "the first full-schedule flights of the wrk bodies, one request each, on the route "
        "the variant is timed on; expected: the service's own labels.",
        "",
    ]
    if dropped:
        lines += ["## Dropped", ""]
        lines += [f"- `{name}`: {why.splitlines()[0]}" for name, why in dropped.items()]
        lines += [""]
    problems = flagged(runs)
    if problems:
        lines += ["## Flagged runs", ""] + [f"- {problem}" for problem in problems] + [""]
    for group in groups:
        mine = [run for run in runs if run.variant in group.variants]
        if not mine:
            continue
        lines += [f"## {group.title}", "", *_table(group, summarize(mine, group.baseline), labels)]
        lines += [""]
        for verdict in verdicts(group, runs):
            cpu = "n/a" if verdict.cpu is None else f"x{verdict.cpu:.2f}"
            if group.kind == "peer":
                lines.append(
                    f"- `{group.baseline}` / `{verdict.variant}`: x{verdict.ratio:.1f} requests/s "
                    f"(rounds x{verdict.low:.1f}-x{verdict.high:.1f}); goal x{verdict.goal:.0f}: "
                    f"**{verdict.word}**. Server CPU per request, `{verdict.variant}` / "
                    f"`{group.baseline}`: {cpu}."
                )
            else:
                lines.append(
                    f"- `{verdict.variant}` / `{group.baseline}`: x{verdict.ratio:.3f} "
                    f"requests/s (rounds x{verdict.low:.3f}-x{verdict.high:.3f}); the "
                    f"requests/s half of the bar for a supported server, x{verdict.goal:.2f}: "
                    f"**{verdict.word}**. Server CPU per request, `{group.baseline}` / "
                    f"`{verdict.variant}`: {cpu} (below 1: Granian spends more per request)."
                )
        if group.kind == "server":
            lines.append(SHARE_NOTE)
        lines += [""]
    if results.reliability:
        lines += _reliability(results.reliability)
    lines += [
        "## Every run",
        "",
        "| round | variant | req/s | p50 ms | p99 ms | server CPU-s | CPU-s / 1k req | "
        "other CPU-s | ready s | load before | errors |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        lines.append(
            f"| {run.round} | `{run.variant}` | {_num(run.requests_per_s)} | "
            f"{_num(run.p50_ms, 2)} | {_num(run.p99_ms, 2)} | {_num(run.server_cpu_s, 2)} | "
            f"{_num(run.cpu_s_per_1k, 3)} | {_num(run.other_cpu_s, 1)} | "
            f"{_num(run.ready_s, 2)} | {run.load_before:.2f} | {_errors(run.errors)} |"
        )
    lines += [
        "",
        "## How the numbers are taken",
        "",
        "- Each run is `benchmarks.compare.measure`, as in `make compare`: wrk's own req/s, p50 "
        "and p99; errors are socket errors, non-2xx answers and 200s without the route's "
        "answer key (`predict`, or `outputs` for OIP).",
        "- Server CPU is utime + stime of every process the server started (workers, inference "
        "processes, tritonserver and its Python stubs), from /proc, before and after the run. "
        "RSS is each of those processes but the first after the run.",
        "- ready s: from spawning to the framework's readiness route answering 200 (for "
        "PyTriton, both models' ready routes).",
        "- `x service`: median over rounds of the variant's requests/s over the service's in "
        "the same round; the goal lines give the range over rounds, and a goal is only met "
        "when every round meets it.",
        "",
    ]
    return "\n".join(lines)


def to_json(results: Results) -> str:
    runs = results.runs

    def run_json(run: RunResult) -> dict[str, Any]:
        return {**asdict(run), "errors": run.errors, "cpu_s_per_1k": run.cpu_s_per_1k}

    document = {
        "info": asdict(results.info),
        "versions": dict(results.versions),
        "groups": [
            {
                **asdict(group),
                "summary": [
                    asdict(s)
                    for s in summarize(
                        [run for run in runs if run.variant in group.variants], group.baseline
                    )
                ],
                "verdicts": [{**asdict(v), "verdict": v.word} for v in verdicts(group, runs)],
            }
            for group in results.groups
        ],
        "variants": [asdict(variant) for variant in results.variants],
        "checked": {name: asdict(outcome) for name, outcome in results.checked.items()},
        "dropped": dict(results.dropped),
        "granian_reliability": [asdict(outcome) for outcome in results.reliability],
        "runs": [run_json(run) for run in runs],
        "flagged": flagged(runs),
    }
    return json.dumps(document, indent=1, default=str) + "\n"


def write_all(out: Path, results: Results) -> list[Path]:
    """peers.md and peers.json in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "peers.md", out / "peers.json"]
    paths[0].write_text(render_markdown(results), encoding="utf-8")
    paths[1].write_text(to_json(results), encoding="utf-8")
    return paths

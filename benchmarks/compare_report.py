"""The pure half of `make compare`: medians, ratios to the product, Markdown, chart and JSON.

Plain data in, text and files out, so the arithmetic and the report are tested without a server.
Ratios are taken within a round (both runs saw the same moment of a noisy shared machine), then
their median over rounds is reported: steadier than a ratio of medians.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from benchmarks.stress_report import WrkRunInfo, other_share

SETTLE_S = 1.5
"""Seconds between wrk and the measured run's start, and after its end: every worker has added
its tallies to the shared metrics by then (app.observability.metrics.FLUSH_SECONDS, once a second),
so a scrape of /metrics sees the run whole and nothing of the warm-up."""

BASELINE = "service"
MERGE_METRIC = "microbatch_call_requests"
"""app.observability.metrics' histogram of the requests each merged onnxruntime call scored
(app.inference.microbatch)."""
CALL_METRIC = "model_call_seconds"
"""app.observability.metrics' histogram of each onnxruntime model call's wall time."""
CAVEAT = (
    "**wrk runs on the same {nproc}-core machine as the server and takes CPU from it: every "
    "throughput here is a lower bound of what the server alone would do, and latency includes "
    "waiting for a core. Compare variants with each other (the ratios), not with other machines.**"
)


@dataclass(frozen=True, slots=True)
class Variant:
    """One way of serving `POST /predict`, as compare.py starts it."""

    name: str
    description: str
    app: str
    env: Mapping[str, str] = field(default_factory=dict)
    gunicorn_args: tuple[str, ...] = ()
    bodies: str = "minimal.jsonl"
    """A file of the bodies directory (build/wrk)."""
    script: str = "wrk/predict.lua"
    connections: int | None = None
    """None: the run's --connections."""
    flights_per_request: int = 1
    reference: bool = False
    """Not the product: its errors are flagged in the report but do not fail the run."""
    merges: bool = False
    """Micro-batched (app.inference.microbatch): the run records what the server merged
    (`Merged`)."""


@dataclass(frozen=True, slots=True)
class Goal:
    """A target the report judges: `variant`'s metric per round (a ratio to `against` in the
    same round when given), its median against `target`."""

    name: str
    variant: str
    metric: Callable[[RunResult], float | None]
    unit: str
    target: float
    against: str | None = None
    at_most: bool = False
    """The target is a ceiling (RSS, start-up), not a floor."""

    def values(self, runs: Sequence[RunResult]) -> list[float]:
        """One value per round in which the variant (and `against`) ran."""
        if self.against is None:
            found = (self.metric(run) for run in runs if run.variant == self.variant)
            return [value for value in found if value is not None]
        return ratios(runs, self.metric, self.against).get(self.variant, [])

    def verdict(self, values: Sequence[float]) -> str:
        """met: every round on the right side; missed: the median on the wrong side; within
        the noise otherwise (the median meets it, some round does not)."""
        if not values:
            return "not measured"
        passes = [
            value <= self.target if self.at_most else value >= self.target for value in values
        ]
        median_passes = (
            statistics.median(values) <= self.target
            if self.at_most
            else statistics.median(values) >= self.target
        )
        if all(passes):
            return "met"
        return "within the noise (some rounds miss)" if median_passes else "**missed**"


@dataclass(frozen=True, slots=True)
class Merged:
    """What app.inference.microbatch merged during one run: how much the server's MERGE_METRIC
    histogram (every model) grew between a scrape just before the run and one after it."""

    calls: int
    """Merged onnxruntime calls."""
    requests: int
    """Requests scored by them; the run's other requests were scored at once, each alone in
    its worker."""
    bounds: tuple[float, ...]
    """The histogram's finite bucket bounds."""
    counts: tuple[int, ...]
    """Calls of at most each bound's requests and more than the bound before it; the last:
    above the last bound."""
    model_calls: int = 0
    """onnxruntime model calls in the run (CALL_METRIC's count): the merged ones and those of
    requests scored at once."""
    model_s: float = 0.0
    """Their wall time, features' encoding included (CALL_METRIC's sum)."""

    @property
    def mean(self) -> float | None:
        """Requests a merged call."""
        return self.requests / self.calls if self.calls else None

    @property
    def model_call_us(self) -> float | None:
        """Wall microseconds an onnxruntime model call, in the running server."""
        return self.model_s / self.model_calls * 1e6 if self.model_calls else None

    def labels(self) -> list[str]:
        """Each bucket's range of requests: "1", "2", "3-4", ..., "over 64"."""
        labels, low = [], 1
        for bound in self.bounds:
            high = int(bound)
            labels.append(f"{low}" if low == high else f"{low}-{high}")
            low = high + 1
        return [*labels, f"over {int(self.bounds[-1])}"]


def merged_between(before: str, after: str) -> Merged:
    """`Merged` from two Prometheus text scrapes of the same server, before and after."""
    start, end = _samples(before, MERGE_METRIC), _samples(after, MERGE_METRIC)
    grown = {key: end.get(key, 0.0) - start.get(key, 0.0) for key in end}
    calls_before, calls_after = _samples(before, CALL_METRIC), _samples(after, CALL_METRIC)
    model_calls, model_s = (
        calls_after.get((kind, ""), 0.0) - calls_before.get((kind, ""), 0.0)
        for kind in ("count", "sum")
    )
    cumulative = sorted(
        (float(key[1]), count) for key, count in grown.items() if key[0] == "bucket"
    )
    bounds = tuple(bound for bound, _ in cumulative[:-1])  # the last: +Inf
    counts = [round(count) for _, count in cumulative]
    return Merged(
        calls=round(grown.get(("count", ""), 0.0)),
        requests=round(grown.get(("sum", ""), 0.0)),
        bounds=bounds,
        counts=tuple(high - low for low, high in zip([0, *counts[:-1]], counts, strict=True)),
        model_calls=round(model_calls),
        model_s=model_s,
    )


def _samples(text: str, metric: str) -> dict[tuple[str, str], float]:
    """A histogram's count, sum and cumulative buckets (by bound), summed over models."""
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != metric:
            continue
        for sample in family.samples:
            kind = sample.name.removeprefix(metric + "_")
            key = (kind, sample.labels.get("le", "") if kind == "bucket" else "")
            found[key] = found.get(key, 0.0) + sample.value
    return found


@dataclass(frozen=True, slots=True)
class RunResult:
    """One measured wrk run against a freshly started server."""

    variant: str
    round: int
    requests: int
    duration_s: float
    requests_per_s: float
    flights_per_request: int
    p50_ms: float
    p99_ms: float
    socket_errors: int
    """wrk's connect, read, write and timeout errors."""
    non_2xx: int
    bad_bodies: int
    server_cpu_s: float | None
    """utime + stime of the gunicorn master and workers over the run; None if a worker changed."""
    wrk_cpu_s: float
    rss_mb: tuple[float, ...]
    """VmRSS of each worker after the run."""
    pss_mb: tuple[float, ...]
    """Pss of each worker (shared pages split between the processes sharing them)."""
    ready_s: float
    """From spawn to the first 200 of /v2/health/ready."""
    load_before: float
    timeouts: int = 0
    """The part of socket_errors that wrk timed out: those requests are not in p50 or p99."""
    other_cpu_s: float | None = None
    """Busy CPU-seconds of the machine during the run less the server's and wrk's: the noise."""
    notes: tuple[str, ...] = ()
    wrk: Mapping[str, Any] = field(default_factory=dict)
    """wrk/common.lua's summary line, as printed."""
    merged: Merged | None = None
    """What the server merged during the run: for a variant that `merges` only."""

    @property
    def errors(self) -> int:
        return self.socket_errors + self.non_2xx + self.bad_bodies

    @property
    def flights_per_s(self) -> float:
        return self.requests_per_s * self.flights_per_request

    @property
    def cpu_s_per_1k(self) -> float | None:
        """Server CPU-seconds per 1,000 requests."""
        if self.server_cpu_s is None or self.requests == 0:
            return None
        return self.server_cpu_s / self.requests * 1000

    @property
    def cpu_s_per_1k_flights(self) -> float | None:
        per_1k = self.cpu_s_per_1k
        return None if per_1k is None else per_1k / self.flights_per_request

    @property
    def rss_per_worker_mb(self) -> float | None:
        return statistics.fmean(self.rss_mb) if self.rss_mb else None


@dataclass(frozen=True, slots=True)
class Summary:
    """A variant's medians over its rounds."""

    variant: str
    rounds: int
    requests_per_s: float
    flights_per_s: float
    flights_ratio: float | None
    """Median over rounds of flights/s divided by the baseline's flights/s in that round."""
    p50_ms: float
    p99_ms: float
    cpu_s_per_1k: float | None
    cpu_s_per_1k_flights: float | None
    cpu_ratio: float | None
    """Median over rounds of CPU-s per flight divided by the baseline's in that round."""
    rss_per_worker_mb: float | None
    workers: int
    ready_s: float
    errors: int
    """Summed over rounds, not a median: one error is one too many."""
    flights_per_s_range: tuple[float, float]


@dataclass(frozen=True, slots=True)
class RunInfo(WrkRunInfo):
    """A `make compare` run's record: its rounds and their shape."""

    rounds: int
    duration_s: int
    warmup_s: int
    connections: int
    threads: int
    wrk_dir: str
    finished_utc: str = ""
    revision: str = ""
    """The git commit measured, marked when the work tree had uncommitted changes."""
    aborted: str = ""
    """Why the run stopped before its last round, if it did: the report then holds what ran."""


def _median(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def ratios(
    runs: Sequence[RunResult], metric: Callable[[RunResult], float | None], baseline: str
) -> dict[str, list[float]]:
    """Per variant, metric(run) / metric(baseline run of the same round), round by round."""
    base = {run.round: metric(run) for run in runs if run.variant == baseline}
    out: dict[str, list[float]] = {}
    for run in runs:
        value, reference = metric(run), base.get(run.round)
        if value is not None and reference:
            out.setdefault(run.variant, []).append(value / reference)
    return out


def summarize(runs: Sequence[RunResult], baseline: str = BASELINE) -> list[Summary]:
    """One Summary per variant, in the order the variants first ran."""
    throughput = ratios(runs, lambda run: run.flights_per_s, baseline)
    cpu = ratios(runs, lambda run: run.cpu_s_per_1k_flights, baseline)
    by_variant: dict[str, list[RunResult]] = {}
    for run in runs:
        by_variant.setdefault(run.variant, []).append(run)
    summaries = []
    for name, group in by_variant.items():
        flights = [run.flights_per_s for run in group]
        summaries.append(
            Summary(
                variant=name,
                rounds=len(group),
                requests_per_s=statistics.median(run.requests_per_s for run in group),
                flights_per_s=statistics.median(flights),
                flights_ratio=_median(throughput.get(name, [])),
                p50_ms=statistics.median(run.p50_ms for run in group),
                p99_ms=statistics.median(run.p99_ms for run in group),
                cpu_s_per_1k=_median(run.cpu_s_per_1k for run in group),
                cpu_s_per_1k_flights=_median(run.cpu_s_per_1k_flights for run in group),
                cpu_ratio=_median(cpu.get(name, [])),
                rss_per_worker_mb=_median(run.rss_per_worker_mb for run in group),
                workers=max(len(run.rss_mb) for run in group),
                ready_s=statistics.median(run.ready_s for run in group),
                errors=sum(run.errors for run in group),
                flights_per_s_range=(min(flights), max(flights)),
            )
        )
    return summaries


def flagged(runs: Sequence[RunResult]) -> list[str]:
    """One line per run whose numbers cannot be trusted as they are."""
    lines = []
    for run in runs:
        where = f"round {run.round} {run.variant}"
        if run.errors:
            share = run.errors / max(run.requests + run.socket_errors, 1)
            lines.append(
                f"{where}: {run.errors:,} errors, {share:.2%} of its requests "
                f"({run.socket_errors:,} socket of which {run.timeouts:,} timeouts, "
                f"{run.non_2xx:,} non-2xx, {run.bad_bodies:,} 200 without 'predict')"
            )
        lines.extend(f"{where}: {note}" for note in run.notes)
    return lines


def failing(runs: Sequence[RunResult], variants: Sequence[Variant]) -> list[str]:
    """The flagged runs that fail `make compare`: all but the reference's, a finding about it."""
    references = {variant.name for variant in variants if variant.reference}
    return flagged([run for run in runs if run.variant not in references])


def _num(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"x{value:.2f}"


def _errors(count: int) -> str:
    return f"**⚠ {count:,}**" if count else "0"


def headline(
    summaries: Sequence[Summary], references: Collection[str] = (), baseline: str = BASELINE
) -> list[str]:
    """The comparisons a reader looks for first, as sentences (none for what was not run)."""
    by_name = {s.variant: s for s in summaries}
    lines = []
    ceiling = by_name.get("noop")
    if ceiling and ceiling.flights_ratio:
        lines.append(
            f"- `{baseline}` answers {1 / ceiling.flights_ratio:.0%} of the requests/s of the "
            f"framework ceiling (`noop`), which alone takes {_ratio(ceiling.cpu_ratio)} of the "
            "service's CPU per request: the rest is the service's own work."
        )
    for name in references:
        reference = by_name.get(name)
        if reference and reference.flights_ratio:
            cpu = (
                f", at 1/{reference.cpu_ratio:.0f} of its CPU per request"
                if reference.cpu_ratio
                else ""
            )
            lines.append(
                f"- `{baseline}` answers {1 / reference.flights_ratio:,.1f} times the requests/s "
                f"of the reference `{name}`{cpu}."
            )
    for s in summaries:
        if s.requests_per_s and s.flights_per_s > s.requests_per_s * 1.5:
            lines.append(
                f"- `{s.variant}`: {_num(s.flights_per_s)} flights/s, {_num(s.flights_ratio, 1)} "
                f"times the flights/s of single-flight `{baseline}`, at "
                f"{_num(s.cpu_s_per_1k_flights, 3)} server CPU-s per 1,000 flights."
            )
    return [*lines, ""] if lines else []


def goal_lines(goals: Sequence[Goal], runs: Sequence[RunResult]) -> list[str]:
    """The goals table: median, range over rounds, target, verdict."""
    if not goals:
        return []
    lines = [
        "## Goals",
        "",
        "Each measured per round (a ratio is taken between two runs of the same round), then the "
        "median over rounds; the range shows how far single rounds spread on this machine.",
        "",
        "| goal | variant | median | rounds' range | target | verdict |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for goal in goals:
        values = goal.values(runs)
        shown = (
            (f"{statistics.median(values):,.2f}", f"{min(values):,.2f} to {max(values):,.2f}")
            if values
            else ("n/a", "n/a")
        )
        against = f" / `{goal.against}`" if goal.against else ""
        bound = "≤" if goal.at_most else "≥"
        lines.append(
            f"| {goal.name} | `{goal.variant}`{against} | {shown[0]} {goal.unit} | {shown[1]} | "
            f"{bound} {_target(goal.target)} {goal.unit} | {goal.verdict(values)} |"
        )
    return [*lines, ""]


def _target(value: float) -> str:
    """A goal's target as written (0.9, 200,000), or to 3 decimals where it has more (1/0.90):
    the shown figure only; the verdict compares the exact one."""
    return f"{value:,}" if value == round(value, 2) else f"{value:,.3f}"


def other_load(runs: Sequence[RunResult], nproc: int) -> tuple[float, float, float] | None:
    """Median, min and max share of the machine's CPU that other work took during the runs."""
    shares = [
        other_share(run.other_cpu_s, run.duration_s, nproc)
        for run in runs
        if run.other_cpu_s is not None and run.duration_s > 0
    ]
    return (statistics.median(shares), min(shares), max(shares)) if shares else None


def render_markdown(
    info: RunInfo,
    variants: Sequence[Variant],
    runs: Sequence[RunResult],
    chart: str = "benchmarks.png",
    baseline: str = BASELINE,
    goals: Sequence[Goal] = (),
) -> str:
    summaries = summarize(runs, baseline)
    described = {variant.name: variant for variant in variants}
    references = [variant.name for variant in variants if variant.reference]
    problems = flagged(runs) + ([f"ABORTED: {info.aborted}"] if info.aborted else [])
    noise = other_load(runs, info.nproc)
    lines = [
        "# HTTP benchmark: the service and its variants, side by side",
        "",
        f"- Date (UTC): {info.date_utc}"
        + (f" to {info.finished_utc}" if info.finished_utc else ""),
        f"- Machine: `{info.uname}`",
        *([f"- Code: {info.revision}"] if info.revision else []),
        f"- CPU: {info.cpu_model}, {info.nproc} cores (`nproc`); "
        f"load average before the first run: {info.load_average}",
        f"- {info.rounds} rounds; each round runs every variant once, in the order below, on a "
        f"freshly started server: ready, {info.warmup_s} s of wrk discarded, a "
        f"{SETTLE_S} s pause (`SETTLE_S`), then {info.duration_s} s measured with "
        f"{info.threads} wrk threads and {info.connections} connections (unless the variant "
        "says otherwise)",
        f"- Medians over rounds; `x {baseline}` is the median over rounds of the ratio to "
        f"`{baseline}` in the same round (the product as the README serves it)",
        *(
            [
                f"- Other work on the machine during the measured runs took a median "
                f"{noise[0]:.0%} of its CPU (from {noise[1]:.0%} to {noise[2]:.0%}; the "
                "`other CPU-s` column below)"
            ]
            if noise
            else []
        ),
        "",
        CAVEAT.format(nproc=info.nproc),
        "",
        "Command:",
        "",
        "```sh",
        info.command,
        "```",
        "",
    ]
    if problems:
        lines += [
            f"> **⚠ {len(problems)} run(s) FLAGGED: their numbers are not a clean measurement.**",
            ">",
            *(f"> - {problem}" for problem in problems),
            "",
        ]
    if any(run.errors and run.variant in references for run in runs):
        lines += [
            f"The reference's errors ({', '.join(f'`{r}`' for r in references)}) are what it "
            "does under the same load as the product; a request wrk timed out is in no latency "
            "figure, so the reference's p50 and p99 flatter it.",
            "",
        ]
    lines += [
        "## Results (medians)",
        "",
        f"| variant | req/s | flights/s | x {baseline} (flights/s) | p50 ms | p99 ms | "
        f"CPU-s / 1k req | CPU per flight x {baseline} | RSS / worker MB | workers | "
        "ready s | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in summaries:
        name = f"**{s.variant}**" if s.variant == baseline else f"`{s.variant}`"
        lines.append(
            f"| {name} | {_num(s.requests_per_s)} | {_num(s.flights_per_s)} | "
            f"{_ratio(s.flights_ratio)} | {_num(s.p50_ms, 2)} | {_num(s.p99_ms, 2)} | "
            f"{_num(s.cpu_s_per_1k, 3)} | {_ratio(s.cpu_ratio)} | "
            f"{_num(s.rss_per_worker_mb, 1)} | {s.workers} | {_num(s.ready_s, 2)} | "
            f"{_errors(s.errors)} |"
        )
    lines += [
        "",
        *headline(summaries, references, baseline),
        f"![median flights/s and server CPU per 1,000 flights by variant]({chart})",
        "",
        *goal_lines(goals, runs),
        "## Variants",
        "",
        "| variant | what | server | bodies, script, connections |",
        "| --- | --- | --- | --- |",
    ]
    for s in summaries:
        v = described.get(s.variant)
        if v is None:
            continue
        server = " ".join([*(f"{k}={val}" for k, val in v.env.items()), *v.gunicorn_args, v.app])
        conns = v.connections or info.connections
        per = f", {v.flights_per_request:,} flights/request" if v.flights_per_request > 1 else ""
        lines.append(
            f"| `{v.name}` | {v.description} | `{server}` | "
            f"`{info.wrk_dir}/{v.bodies}`, `{v.script}`, {conns}{per} |"
        )
    lines += [
        "",
        f"Every server: `BIND=127.0.0.1:<free port> [env] {info.server_command} [args] <app>`; "
        "the service's own settings (WORKERS, TABULATE_MINIMAL, ORT_THREADS, ACCESS_LOG, "
        "LOG_LEVEL, MODELS_DIR, ...) are cleared from the environment first, so each variant "
        "differs from the README's defaults by exactly what its row says.",
        "",
        f"wrk: `{info.wrk_command}`",
        "",
        "## Every run",
        "",
        "| round | variant | req/s | flights/s | p50 ms | p99 ms | server CPU-s | CPU-s / 1k req "
        "| wrk CPU-s | other CPU-s | RSS per worker MB | ready s | load 1 min before | errors |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: "
        "| ---: |",
    ]
    for run in runs:
        rss = " / ".join(f"{mb:.1f}" for mb in run.rss_mb) or "n/a"
        lines.append(
            f"| {run.round} | `{run.variant}` | {_num(run.requests_per_s)} | "
            f"{_num(run.flights_per_s)} | {_num(run.p50_ms, 2)} | {_num(run.p99_ms, 2)} | "
            f"{_num(run.server_cpu_s, 2)} | {_num(run.cpu_s_per_1k, 3)} | "
            f"{_num(run.wrk_cpu_s, 2)} | {_num(run.other_cpu_s, 2)} | {rss} | {_num(run.ready_s, 2)} | "
            f"{run.load_before:.2f} | {_errors(run.errors)} |"
        )
    lines += ["", *merged_lines(runs)]
    lines += [
        "## How the numbers are taken",
        "",
        "- req/s, p50 and p99 come from wrk's own summary (`wrk/common.lua`); errors are wrk's "
        "socket errors plus every non-2xx answer plus every 200 without a `predict` list.",
        "- flights/s is req/s x flights per request: the same as req/s except for the batch "
        "variant, whose ratio therefore compares flights scored, not requests.",
        "- Server CPU is utime + stime of the gunicorn master and its workers, read from "
        "`/proc/PID/stat` just before and just after the measured run: the processes' own "
        "accounting, so time stolen by wrk or by other work on the machine does not inflate it "
        "the way it inflates wall-clock latency. CPU per flight is the steadiest column here.",
        "- wrk CPU-s is wrk's own utime + stime; other CPU-s is the machine's busy time "
        f"(`/proc/stat`, all {info.nproc} cores) during the run less the server's and wrk's: "
        "the other work on this shared machine that the alternating rounds average over. "
        f"A {info.duration_s} s run has {info.duration_s * info.nproc} CPU-s in all.",
        "- RSS is each worker's VmRSS after the run; it counts shared pages (Python, libraries, "
        "pages inherited from the master) in every worker, so workers x RSS overstates the total. "
        "`benchmarks.json` also holds each worker's Pss, which splits shared pages.",
        "- ready s: from spawning gunicorn to the first 200 of `/v2/health/ready` (the first "
        "worker with its models loaded); the run then also waits for every worker's start-up line.",
        "- Each run starts its own server: no warm cache survives from one variant to the next.",
        "- wrk keeps every connection busy back to back (a closed loop at saturation, no "
        "coordinated-omission correction): p99 is the tail of a saturated server.",
        "- Traffic goes to 127.0.0.1: no network, TLS or proxy in the path.",
        "",
    ]
    return "\n".join(lines)


def merged_lines(runs: Sequence[RunResult]) -> list[str]:
    """Per run of a micro-batched variant: its req/s beside what the server merged."""
    measured = [run for run in runs if run.merged is not None]
    if not measured:
        return []
    first = measured[0].merged
    assert first is not None
    buckets = first.labels()
    lines = [
        "## Requests merged into one onnxruntime call (app.inference.microbatch)",
        "",
        f"From the server's `{MERGE_METRIC}` histogram (app.observability.metrics), scraped just before and "
        "just after each measured run of a micro-batched variant, each time after a pause in "
        "which every worker adds its tallies to the shared metrics (`SETTLE_S` in "
        "benchmarks/compare_report.py, before every variant's measured run alike): the merged "
        "onnxruntime calls of the run, the requests they scored and how "
        "many of the run's requests (wrk's count) that is; the rest were scored at once, each "
        "alone in its worker. The last columns: the share of the merged calls that scored that "
        f"many requests. The model-call columns come from its `{CALL_METRIC}` histogram, scraped "
        "alike: every onnxruntime call of the run (merged or not), its mean wall time with the "
        "features' encoding (in a server that wrk shares the cores with: time waiting for a core "
        "included), and that time a request of the run.",
        "",
        "| round | variant | req/s | CPU-s / 1k req | merged calls | requests in them | share "
        "of the run's requests | requests a call, mean | model calls | µs a model call | model "
        "µs a request | " + " | ".join(buckets) + " |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        + " ---: |" * len(buckets),
    ]
    for run in measured:
        merged = run.merged
        assert merged is not None
        share = f"{merged.requests / run.requests:.0%}" if run.requests else "n/a"
        spread = [
            f"{count / merged.calls:.0%}" if merged.calls else "n/a" for count in merged.counts
        ]
        lines.append(
            f"| {run.round} | `{run.variant}` | {_num(run.requests_per_s)} | "
            f"{_num(run.cpu_s_per_1k, 3)} | {merged.calls:,} | {merged.requests:,} | {share} | "
            f"{_num(merged.mean, 1)} | {merged.model_calls:,} | {_num(merged.model_call_us, 1)} | "
            f"{_num(merged.model_s / run.requests * 1e6 if run.requests else None, 1)} | "
            + " | ".join(spread)
            + " |"
        )
    return [*lines, ""]


def plot(
    runs: Sequence[RunResult],
    path: Path,
    references: Collection[str] = (),
    baseline: str = BASELINE,
) -> None:
    """Two panels: median flights/s (with the min-max over rounds) and CPU-s per 1k flights."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summaries = summarize(runs, baseline)
    names = [s.variant for s in summaries]
    colours = [
        "tab:orange"
        if s.variant == baseline
        else "tab:grey"
        if s.variant in references
        else "tab:blue"
        for s in summaries
    ]
    rows = list(range(len(summaries)))
    figure, (speed, cpu) = plt.subplots(
        1, 2, figsize=(12, 0.55 * len(summaries) + 1.8), sharey=True
    )
    medians = [s.flights_per_s for s in summaries]
    spread = [
        [m - s.flights_per_s_range[0] for m, s in zip(medians, summaries, strict=True)],
        [s.flights_per_s_range[1] - m for m, s in zip(medians, summaries, strict=True)],
    ]
    speed.barh(rows, medians, xerr=spread, color=colours, capsize=3)
    speed.set_xscale("log")
    for row, s in zip(rows, summaries, strict=True):
        label = f" {s.flights_per_s:,.0f}" + (
            f"  {_ratio(s.flights_ratio)}" if s.flights_ratio is not None else ""
        )
        speed.text(s.flights_per_s_range[1] * 1.05, row, label, va="center", fontsize=8)
    speed.set_yticks(rows, names)
    speed.invert_yaxis()
    speed.set_xlabel("flights/s, median (= req/s except batch; log scale; bars: min-max)")
    speed.set_title(f"throughput, x {baseline} in the same round")
    measured = [(row, s.cpu_s_per_1k_flights) for row, s in zip(rows, summaries, strict=True)]
    known = [(row, value) for row, value in measured if value]
    cpu.barh(
        [row for row, _ in known], [value for _, value in known],
        color=[colours[row] for row, _ in known],
    )  # fmt: skip
    for row, value in known:
        cpu.text(value, row, f" {value:.3f}", va="center", fontsize=8)
    cpu.set_xscale("log")
    cpu.set_xlabel("server CPU-s per 1,000 flights, median (log scale; lower is better)")
    cpu.set_title("server CPU cost (/proc utime+stime)")
    if known:
        values = [value for _, value in known]
        cpu.set_xlim(min(values) / 2, max(values) * 6)
    for axes in (speed, cpu):
        axes.grid(True, axis="x", alpha=0.3)
    speed.set_xlim(min(medians, default=1.0) / 2, max(medians, default=1.0) * 6)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def to_json(info: RunInfo, variants: Sequence[Variant], runs: Sequence[RunResult]) -> str:
    """Everything measured, for whoever wants other statistics than medians."""

    def run_json(run: RunResult) -> dict[str, Any]:
        derived = {
            "errors": run.errors,
            "flights_per_s": run.flights_per_s,
            "cpu_s_per_1k": run.cpu_s_per_1k,
            "rss_per_worker_mb": run.rss_per_worker_mb,
        }
        return {**asdict(run), **derived}

    document = {
        "info": asdict(info),
        "baseline": BASELINE,
        "variants": [asdict(variant) for variant in variants],
        "summary": [asdict(summary) for summary in summarize(runs)],
        "runs": [run_json(run) for run in runs],
        "flagged": flagged(runs),
    }
    return json.dumps(document, indent=1, default=str) + "\n"


def write_all(
    out: Path,
    info: RunInfo,
    variants: Sequence[Variant],
    runs: Sequence[RunResult],
    goals: Sequence[Goal] = (),
) -> list[Path]:
    """benchmarks.md, benchmarks.png and benchmarks.json in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "benchmarks.md", out / "benchmarks.png", out / "benchmarks.json"]
    paths[0].write_text(
        render_markdown(info, variants, runs, paths[1].name, goals=goals), encoding="utf-8"
    )
    plot(runs, paths[1], [variant.name for variant in variants if variant.reference])
    paths[2].write_text(to_json(info, variants, runs), encoding="utf-8")
    return paths

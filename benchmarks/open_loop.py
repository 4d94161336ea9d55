"""Latency at a fixed arrival rate (open loop): what a pooled client sees below saturation.

    python -m benchmarks.open_loop --bodies build/wrk --out reports/open-loop

Every other latency in reports/ is wrk's, a closed loop at saturation: each connection sends
its next request only once answered, so while the server stalls wrk stops sending and the
requests that would have arrived then are never timed (coordinated omission), and no pod is
meant to run saturated (the HPA targets 60 % CPU; deploy/README.md's capacity plan). Here
requests arrive at Poisson times at a set rate whatever the server does, over a pool of
keep-alive connections (a request due while every connection is busy waits for one, as a
pooled client's does), and each latency runs from the moment the request was due.

The server runs `--workers` workers on the first CPUs; this process and wrk share the last one.
wrk's closed loop first finds the most each body mix is answered a second (saturation); each
`--loads` fraction of it then runs open-loop, mix after mix, round after round. Each run
reports the CPU utilisation of the workers (what the HPA sees), the worker CPU a request, the
p50/p90/p99/p99.9/max latency, how late this process wrote its requests (its own share of the
latency: a wait for a free connection, its event loop's millisecond timers), what else ran on
the server's CPUs, statuses and lost requests; and deploy/README.md's queueing estimate of the
p99 beside the measured one. With `--scrape-every` (`make hpa-signal`: every second) the
service's `/metrics` is scraped as Prometheus would: `requests_in_flight{transport="rest"}`
(each scrape samples it) and the mean of `event_loop_lag_seconds` over the run, the signals an
HPA might read beside the CPU utilisation; off by default, since the no-op ceiling, which has no
metrics, would not pay for the scrapes.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.chaos import Wrk, percentile, post, read_answer, worker_pids
from benchmarks.stress import (
    APP,
    GUNICORN,
    Server,
    StressError,
    defaults_environment,
    free_port,
    load_average,
    machine_cpu_s,
    process_cpu_s,
    publish,
    revision,
    scrape,
    served,
)
from benchmarks.stress import MIXES as STRESS_MIXES
from train.provenance import machine

ROOT = Path(__file__).resolve().parent.parent
MIXES = ("minimal", "full")
"""The body mixes, by their file's stem in --bodies (benchmarks.stress.MIXES says what each
measures: issue 10's every figure names its path)."""
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
SERVERS = {
    "service": APP,
    "noop": "benchmarks.noop_app:create_app()",
}
"""The served app, and the framework ceiling (reads the body, answers a constant) at the same
arrival rates: what of each latency and CPU is the service's own."""
SETTINGS = (
    "seconds", "warmup", "connections", "rounds", "seed", "saturation_seconds", "scrape_every"
)  # fmt: skip
"""The arguments a report records."""
DRAIN_S = 10.0
"""Seconds the last requests may take once arrivals stop, before they count as lost."""


@dataclass
class Timings:
    """One run's requests, in the order they were answered."""

    latency: list[float] = field(default_factory=list)
    """Seconds from when each request was due to its whole answer."""
    send_lag: list[float] = field(default_factory=list)
    """Seconds from when each request was due to when it was written."""
    from_write: list[float] = field(default_factory=list)
    """Seconds from when each request was written to its whole answer."""
    statuses: Counter[int] = field(default_factory=Counter)
    lost: Counter[str] = field(default_factory=Counter)
    """Requests sent and never answered, by error."""
    due: int = 0
    """Requests due in the measured window (after the warm-up)."""
    answered_all: int = 0
    """Requests answered, the warm-up's included: what the workers' CPU was spent on."""
    scrapes: list[Scrape] = field(default_factory=list)
    """The server's /metrics, scraped in the measured window (empty: not scraped)."""


@dataclass(frozen=True)
class Scrape:
    """What one scrape of the service's /metrics read."""

    in_flight: float
    """`requests_in_flight{transport="rest"}`."""
    lag_sum: float
    """`event_loop_lag_seconds_sum`: seconds late, summed over every sample so far."""
    lag_count: float
    """`event_loop_lag_seconds_count`: the samples so far."""


SCRAPED = {
    ("requests_in_flight", "rest"): "in_flight",
    ("event_loop_lag_seconds_sum", None): "lag_sum",
    ("event_loop_lag_seconds_count", None): "lag_count",
}
"""(sample name, its `transport` label) → the Scrape field it fills."""


def read_scrape(exposition: str) -> Scrape:
    """The figures a Scrape holds, from a /metrics answer."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            field_name = SCRAPED.get((sample.name, sample.labels.get("transport")))
            if field_name is not None:
                found[field_name] = sample.value
    missing = [name for (name, _), field_name in SCRAPED.items() if field_name not in found]
    if missing:
        raise StressError(f"the /metrics answer has no {', '.join(missing)}")
    return Scrape(**found)


class MetricsScraper(threading.Thread):
    """Scrapes `url`'s /metrics every `every` seconds while perf_counter() is in
    [`measured_from`, `measured_until`), into `samples`, until stopped: a scrape on its own
    connection, as Prometheus's (not after the arrivals end, while the last ones drain)."""

    def __init__(self, url: str, every: float, measured_from: float, measured_until: float) -> None:
        super().__init__(daemon=True)
        self.url, self.every = url, every
        self.measured_from, self.measured_until = measured_from, measured_until
        self.samples: list[Scrape] = []
        self.error: Exception | None = None
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.every):
            if not self.measured_from <= time.perf_counter() < self.measured_until:
                continue
            try:
                self.samples.append(read_scrape(scrape(self.url, timeout=5)))
            except (OSError, StressError) as error:
                self.error = error
                return

    def stop(self) -> list[Scrape]:
        self._stopped.set()
        self.join()
        if self.error is not None:
            raise StressError(f"scraping {self.url}/metrics: {self.error}")
        return self.samples


def arrivals(rate: float, seconds: float, rng: random.Random) -> list[float]:
    """Poisson arrival offsets (s) from 0 to `seconds` at `rate` a second: many independent
    clients, each on its own schedule."""
    offsets, at = [], rng.expovariate(rate)
    while at < seconds:
        offsets.append(at)
        at += rng.expovariate(rate)
    return offsets


async def _send(
    port: int,
    requests: Sequence[bytes],
    due: asyncio.Queue[tuple[float, int] | None],
    timings: Timings,
    measured_from: float,
) -> None:
    """One pooled keep-alive connection: takes the next due request, writes it, reads its
    answer; reconnects after a loss or a `Connection: close`."""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while (item := await due.get()) is not None:
        at, index = item
        try:
            if writer is None or reader is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            written = time.perf_counter()
            writer.write(requests[index % len(requests)])
            status, head = await read_answer(reader, writer)
            timings.answered_all += 1
        except (OSError, asyncio.IncompleteReadError) as error:
            if at >= measured_from:
                timings.lost[type(error).__name__] += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            continue
        if at >= measured_from:
            answered = time.perf_counter()
            timings.latency.append(answered - at)
            timings.send_lag.append(written - at)
            timings.from_write.append(answered - written)
            timings.statuses[status] += 1
        if b"connection: close" in head.lower():
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def _run(
    port: int, requests: Sequence[bytes], offsets: Sequence[float], connections: int,
    start: float, warmup: float,
) -> Timings:  # fmt: skip
    """Each request due at `start` + its offset (perf_counter seconds)."""
    queue: asyncio.Queue[tuple[float, int] | None] = asyncio.Queue()
    timings = Timings()
    measured_from = start + warmup
    senders = [
        asyncio.create_task(_send(port, requests, queue, timings, measured_from))
        for _ in range(connections)
    ]
    for index, offset in enumerate(offsets):
        at = start + offset
        wait = at - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        queue.put_nowait((at, index))
        timings.due += at >= measured_from
    for _ in senders:
        queue.put_nowait(None)
    done, pending = await asyncio.wait(senders, timeout=DRAIN_S)
    for task in pending:
        task.cancel()
    unanswered = timings.due - len(timings.latency) - sum(timings.lost.values())
    if unanswered:
        timings.lost["unanswered"] += unanswered
    for task in done:
        task.result()
    return timings


def open_loop(
    port: int, requests: Sequence[bytes], rate: float, seconds: float, connections: int,
    warmup: float, seed: int, scrape_every: float = 0.0,
) -> Timings:  # fmt: skip
    """`rate` requests a second for `seconds` over `connections` pooled connections to
    127.0.0.1:`port`, in this thread; the first `warmup` seconds' requests are not timed, nor
    scraped (its /metrics every `scrape_every` seconds; 0: not scraped)."""
    offsets = arrivals(rate, seconds, random.Random(seed))
    start = time.perf_counter() + 0.05  # time for the loop and its senders to start
    run = _run(port, requests, offsets, connections, start, warmup)
    if not scrape_every:
        return uvloop.run(run)
    scraper = MetricsScraper(
        f"http://127.0.0.1:{port}", scrape_every, start + warmup, start + seconds
    )
    scraper.start()
    try:
        timings = uvloop.run(run)
    finally:
        samples = scraper.stop()
    timings.scrapes = samples
    return timings


def read_requests(path: Path) -> list[bytes]:
    try:
        lines = path.read_bytes().splitlines()
    except OSError as error:
        raise StressError(f"cannot read the bodies {path}: {error} (make bodies)") from None
    return [post(line) for line in lines if line.strip()]


@dataclass(frozen=True)
class CpuClock:
    """CPU seconds so far: the server's workers, the server's CPUs all told, this process."""

    at: float
    workers: float
    cpus_busy: float
    own: float

    @classmethod
    def read(cls, master: int, cpus: Sequence[int]) -> CpuClock:
        workers = 0.0
        for pid in worker_pids(master):
            try:
                workers += process_cpu_s(Path(f"/proc/{pid}/stat").read_text())
            except OSError:
                continue
        own = resource.getrusage(resource.RUSAGE_SELF)
        busy, _ = machine_cpu_s(Path("/proc/stat").read_text(), cpus)
        return cls(time.perf_counter(), workers, busy, own.ru_utime + own.ru_stime)


def figures(
    timings: Timings, before: CpuClock, after: CpuClock, workers: int, rate: float, window: float
) -> dict[str, Any]:
    """One run's figures (milliseconds, shares of a CPU); `window` the seconds timed."""
    wall = after.at - before.at
    worker_cpu = after.workers - before.workers
    latency, lag = sorted(timings.latency), sorted(timings.send_lag)
    from_write = sorted(timings.from_write)

    def ms(values: list[float], p: float) -> float | None:
        return round(percentile(values, p) * 1e3, 3) if values else None

    return {
        "rate": round(rate),
        "answered_per_s": round(len(latency) / window),
        "utilisation": round(worker_cpu / wall / workers, 3),
        "worker_us_per_request": (
            round(worker_cpu / timings.answered_all * 1e6, 1) if timings.answered_all else None
        ),
        "latency_ms": {**{f"p{p:g}": ms(latency, p) for p in PERCENTILES}, "max": ms(latency, 100)},
        "send_lag_ms": {"p50": ms(lag, 50), "p99": ms(lag, 99)},
        "from_write_ms": {"p50": ms(from_write, 50), "p99": ms(from_write, 99)},
        "others_on_server_cpus": round(
            max(0.0, after.cpus_busy - before.cpus_busy - worker_cpu) / wall / workers, 3
        ),
        "client_cpu": round((after.own - before.own) / wall, 3),
        "statuses": {str(status): count for status, count in sorted(timings.statuses.items())},
        "lost": dict(timings.lost),
        "due": timings.due,
        "in_flight": _in_flight(timings, window),
    }


def _in_flight(timings: Timings, window: float) -> dict[str, Any] | None:
    """The scraped `requests_in_flight`: its mean, one scrape's standard deviation, and what
    Little's law gives from this client's timings (answered a second x mean seconds from the
    write, which includes loopback and this client's read); and the mean event-loop lag between
    the first scrape and the last (None with fewer than two)."""
    if not timings.scrapes:
        return None
    samples = [scrape.in_flight for scrape in timings.scrapes]
    little = len(timings.from_write) / window * statistics.fmean(timings.from_write or [0.0])
    first, last = timings.scrapes[0], timings.scrapes[-1]
    lags = last.lag_count - first.lag_count
    return {
        "mean": round(statistics.fmean(samples), 2),
        "sd": round(statistics.pstdev(samples), 2),
        "samples": len(samples),
        "little": round(little, 2),
        "loop_lag_ms": round((last.lag_sum - first.lag_sum) / lags * 1e3, 3) if lags else None,
    }


def plan_p99_ms(service_ms: float, utilisation: float) -> float | None:
    """deploy/README.md's estimate of one worker's p99 wait at utilisation u."""
    if not 0.01 < utilisation < 1:
        return None
    return service_ms / (1 - utilisation) * math.log(100 * utilisation)


def measure(
    args: argparse.Namespace, server: Server, server_cpus: list[int], requests: Sequence[bytes],
    rate: float, seed: int, scrape_every: float,
) -> dict[str, Any]:  # fmt: skip
    port, master = int(server.url.rsplit(":", 1)[1]), server.process.pid
    before = CpuClock.read(master, server_cpus)
    timings = open_loop(
        port, requests, rate, args.seconds, args.connections, args.warmup, seed, scrape_every
    )
    after = CpuClock.read(master, server_cpus)
    return figures(timings, before, after, args.workers, rate, args.seconds - args.warmup)


def saturation(args: argparse.Namespace, server: Server, bodies: Path) -> dict[str, Any]:
    """wrk's closed loop (one thread, on this process's CPU): the most the server answers."""
    summary = Wrk(
        server.url, args.saturation_seconds, args.connections, 1, bodies, args.wrk
    ).result()
    if summary.non_2xx or summary.errors.socket:
        raise StressError(f"the saturation run had errors: {summary.errors}, {summary.statuses}")
    return {"requests_per_s": round(summary.requests_per_s),
            "p99_ms": round(summary.latency.p99 / 1000, 3)}  # fmt: skip


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < args.workers + 1:
        raise StressError(f"{args.workers} worker(s) and this client need {args.workers + 1} CPUs")
    server_cpus, client_cpus = cpus[: args.workers], cpus[-1:]
    host, cpu_model, cores = machine()
    measured = args.revision or revision()  # now: the tree may change while this runs
    bodies = {mix: read_requests(args.bodies / f"{mix}.jsonl") for mix in args.mixes}
    env = defaults_environment({"WORKERS": str(args.workers), "METRICS_BIND": ""})
    runs: list[dict[str, Any]] = []
    saturated: dict[str, dict[str, Any]] = {}
    with ExitStack() as stack:
        os.sched_setaffinity(0, server_cpus)  # the servers inherit these CPUs
        try:
            servers = {
                name: stack.enter_context(
                    served(GUNICORN, free_port(), 60, workdir / f"{name}.log", app, env)
                )
                for name, app in SERVERS.items()
                if name in args.servers
            }
        finally:
            os.sched_setaffinity(0, client_cpus)
        rated = servers.get("service") or next(iter(servers.values()))
        for mix in bodies:
            saturated[mix] = saturation(args, rated, args.bodies / f"{mix}.jsonl")
        for round_ in range(args.rounds):
            for mix, requests in bodies.items():
                for load in args.loads:
                    rate, seed = load * saturated[mix]["requests_per_s"], args.seed + round_
                    for name, server in servers.items():  # the same arrivals for each
                        scrape = args.scrape_every if name == "service" else 0.0  # no-op: none
                        figures_ = measure(args, server, server_cpus, requests, rate, seed, scrape)
                        runs.append({"round": round_ + 1, "server": name, "mix": mix,
                                     "load": load, **figures_})  # fmt: skip
                        print(_line(runs[-1]), flush=True)
    return {
        "command": args.command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "revision": measured,
        "machine": {"uname": host, "cpu": cpu_model, "cores": cores},
        "load_average_after": load_average(),
        "server": {
            "workers": args.workers,
            "cpus": server_cpus,
            "client_cpus": client_cpus,
            "ready_s": {name: round(server.ready_s, 2) for name, server in servers.items()},
        },
        "settings": {key: getattr(args, key) for key in SETTINGS},
        "saturation": saturated,
        "runs": runs,
    }


def _line(run: dict[str, Any]) -> str:
    latency = run["latency_ms"]
    return (
        f"round {run['round']} {run['server']:<7} {run['mix']:<7} load {run['load']:.2f} u {run['utilisation']:.2f} "
        f"{run['answered_per_s']:>6}/s p50 {latency.get('p50')} p99 {latency.get('p99')} "
        f"p99.9 {latency.get('p99.9')} max {latency.get('max')} ms, lost {sum(run['lost'].values())}"
    )


def summary(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per body mix, load and server, the medians over the rounds."""
    groups: dict[tuple[str, float, str], list[dict[str, Any]]] = {}
    for run in result["runs"]:
        groups.setdefault((run["mix"], run["load"], run["server"]), []).append(run)
    rows = []
    for (mix, load, server), runs in groups.items():
        utilisation = statistics.median(run["utilisation"] for run in runs)
        service_ms = statistics.median(run["worker_us_per_request"] for run in runs) / 1e3

        def median(key: str, sub: str, runs: list[dict[str, Any]] = runs) -> float | None:
            values = [run[key][sub] for run in runs if run[key].get(sub) is not None]
            return round(statistics.median(values), 2) if values else None

        rows.append({
            "mix": mix, "load": load, "server": server, "utilisation": utilisation,
            "answered_per_s": statistics.median(run["answered_per_s"] for run in runs),
            "p50": median("latency_ms", "p50"), "p99": median("latency_ms", "p99"),
            "written_p99": median("from_write_ms", "p99"),
            "p99.9": median("latency_ms", "p99.9"), "max": median("latency_ms", "max"),
            "p99_range": [min(r["latency_ms"]["p99"] for r in runs),
                          max(r["latency_ms"]["p99"] for r in runs)],
            "send_lag_p99": median("send_lag_ms", "p99"),
            "service_us": round(service_ms * 1e3, 1),
            "plan_p99": _rounded(plan_p99_ms(service_ms, utilisation)),
            "others": statistics.median(run["others_on_server_cpus"] for run in runs),
            "client_cpu": statistics.median(run["client_cpu"] for run in runs),
            "non_200": sum(n for run in runs for s, n in run["statuses"].items() if s != "200"),
            "lost": sum(sum(run["lost"].values()) for run in runs),
            "in_flight": _median_in_flight(runs),
        })  # fmt: skip
    return rows


def _median_in_flight(runs: list[dict[str, Any]]) -> dict[str, float] | None:
    """The rounds' medians of the scraped in-flight mean, of one scrape's standard deviation,
    of Little's estimate and of the mean loop lag (None: not scraped)."""
    scraped = [run["in_flight"] for run in runs if run.get("in_flight")]
    if not scraped:
        return None
    medians: dict[str, float] = {}
    for key, digits in (("mean", 2), ("sd", 2), ("little", 2), ("loop_lag_ms", 3)):
        values = [figures[key] for figures in scraped if figures.get(key) is not None]
        if values:
            medians[key] = round(statistics.median(values), digits)
    return medians


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def render(result: dict[str, Any]) -> str:
    settings, server = result["settings"], result["server"]
    ceiling = (
        "; `noop`: the framework ceiling (benchmarks/noop_app.py, reads the body and answers a "
        "constant) served the same way, at the same rates, alternated with it"
        if "noop" in server.get("ready_s", SERVERS)
        else " (the service alone: no framework ceiling beside it)"
    )
    lines = [
        f"# Latency at a fixed arrival rate (`{result.get('command', 'make open-loop')}`)",
        "",
        f"- Date: {result['date']}; code: {result['revision']}",
        f"- Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores "
        f"(`{result['machine']['uname']}`); load average after: {result['load_average_after']}",
        f"- Server: gunicorn as `make serve`, WORKERS={server['workers']} on CPU "
        f"{','.join(map(str, server['cpus']))}{ceiling}; this client (Python, uvloop) and wrk on CPU "
        f"{','.join(map(str, server['client_cpus']))}, 127.0.0.1. The machine is shared: "
        "`others` is the share of the server's CPUs that other processes took.",
        f"- Saturation: the service under wrk's closed loop, 1 thread, "
        f"{settings['connections']} connections, {settings['saturation_seconds']} s a body mix.",
        f"- Load: a fraction of that rate, Poisson arrivals, {settings['connections']} pooled "
        f"keep-alive connections, {settings['seconds']} s a run of which the first "
        f"{settings['warmup']} s untimed, {settings['rounds']} rounds (mix after mix, load after "
        "load in each); medians of the rounds, the p99's range in brackets. Latency runs from "
        "when a request was due, not when it was written (no coordinated omission); `send lag` "
        "is this client's own part of it (a wait for a free connection, its event loop's "
        "millisecond timers), `written p99` the p99 from the write.",
        "- `u`: the workers' CPU / wall time / workers, what the HPA's CPU target reads; `s`: the "
        "workers' CPU a request. `plan p99` is deploy/README.md's estimate for one worker's "
        "queue, `s / (1 - u) x ln(100 u)`.",
        _scraped_bullet(settings.get("scrape_every", 0)),
        "",
        "| body mix | saturation req/s (wrk) | wrk p99 ms |",
        "| --- | ---: | ---: |",
    ]
    for mix, saturated in result["saturation"].items():
        description = STRESS_MIXES[f"{mix}.jsonl"]
        lines.append(f"| {description} | {saturated['requests_per_s']:,} | {saturated['p99_ms']} |")
    lines += [
        "",
        "| body mix | load | server | req/s | u | s µs | p50 ms | p99 ms | p99.9 ms | max ms | plan p99 ms "
        "| send lag p99 ms | written p99 ms | others | client CPU | non-200 | lost "
        "| in flight | a scrape's sd | λW | loop lag ms |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
        "---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in summary(result):
        low, high = row["p99_range"]
        scraped = row["in_flight"] or {}
        lines.append(
            f"| {row['mix']} | {row['load']:.2f} | {row['server']} | {row['answered_per_s']:,.0f} | "
            f"{row['utilisation']:.2f} | {row['service_us']} | {row['p50']} | "
            f"**{row['p99']}** [{low}-{high}] | {row['p99.9']} | {row['max']} | "
            f"{row['plan_p99']} | {row['send_lag_p99']} | {row['written_p99']} | "
            f"{row['others']:.0%} | {row['client_cpu']:.0%} | {row['non_200']} | {row['lost']} | "
            f"{scraped.get('mean', '')} | {scraped.get('sd', '')} | {scraped.get('little', '')} | "
            f"{scraped.get('loop_lag_ms', '')} |"
        )
    return "\n".join(lines + signals(result)) + "\n"


def _scraped_bullet(every: float) -> str:
    if not every:
        return (
            "- `in flight`, `a scrape's sd`, `λW`, `loop lag ms`: the service's /metrics was not "
            "scraped in this run (`--scrape-every`, as `make hpa-signal` runs it)."
        )
    return (
        f'- `in flight`: the service\'s `requests_in_flight{{transport="rest"}}` scraped every '
        f"{every} s of the timed window (each scrape samples it, as Prometheus's would), the "
        "mean of a run's scrapes; `a scrape's sd`: how far one scrape strays from it; `λW`: "
        "Little's law from this client's timings (answered a second x mean seconds from the "
        "write). What an HPA on that gauge would read, beside `u`. `loop lag ms`: the mean of "
        "`event_loop_lag_seconds` between a run's first scrape and its last (how late the "
        "worker's loop ran a timer due every 0.1 s: the wait of a request arriving then, unread)."
    )


def signals(result: dict[str, Any]) -> list[str]:
    """What each candidate HPA signal reads at each load, as a multiple of what it read at the
    mix's lowest load, beside the multiple of the requests/s: an HPA sizes a step as
    `ceil(current x metric / target)`, right only for a metric proportional to the load."""
    rows = [row for row in summary(result) if row["in_flight"]]
    if not rows:
        return []
    lines = [
        "",
        "Candidate HPA signals, each as a multiple of its value at the mix's lowest load (the "
        "service's rows): a signal proportional to the load reads what the req/s column does.",
        "",
        "| body mix | load | req/s | u | in flight | λW | loop lag |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lowest: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda row: (row["mix"], row["load"])):
        base = lowest.setdefault(row["mix"], row)

        def times(value: float | None, of: float | None) -> str:
            return f"{value / of:.2f}" if value is not None and of else ""

        lines.append(
            f"| {row['mix']} | {row['load']:.2f} | "
            f"{times(row['answered_per_s'], base['answered_per_s'])} | "
            f"{times(row['utilisation'], base['utilisation'])} | "
            f"{times(row['in_flight']['mean'], base['in_flight']['mean'])} | "
            f"{times(row['in_flight']['little'], base['in_flight']['little'])} | "
            f"{times(row['in_flight'].get('loop_lag_ms'), base['in_flight'].get('loop_lag_ms'))} |"
        )
    return lines


def _fraction(raw: str) -> float:
    value = float(raw)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{raw}: a load is a fraction of saturation, in (0, 1)")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bodies", type=Path, default=ROOT / "build" / "wrk",
                        help="directory of make bodies' <mix>.jsonl files")  # fmt: skip
    parser.add_argument("--mixes", nargs="+", choices=MIXES, default=list(MIXES))
    parser.add_argument("--loads", nargs="+", type=_fraction, default=[0.25, 0.5, 0.7, 0.85, 0.95])
    parser.add_argument("--servers", nargs="+", choices=tuple(SERVERS), default=list(SERVERS))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--saturation-seconds", type=int, default=10)
    parser.add_argument("--wrk", default="wrk")
    parser.add_argument("--seed", type=int, default=2017)
    parser.add_argument("--scrape-every", type=float, default=0.0,
                        help="seconds between scrapes of the service's requests_in_flight "
                        "(0: none)")  # fmt: skip
    parser.add_argument("--revision", help="the revision to name (default: git's)")
    parser.add_argument("--command", default="make open-loop",
                        help="the command the report's title names")  # fmt: skip
    parser.add_argument("--out", type=Path, help="write open-loop.json and open-loop.md here")
    args = parser.parse_args(argv)
    if not 0 <= args.warmup < args.seconds:
        # the timed window is seconds - warmup: none, and every rate was a division by it
        parser.error(f"--warmup must be at least 0 and less than --seconds ({args.seconds:g})")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="open-loop-") as workdir:
            result = run(args, Path(workdir))
    except StressError as error:
        print(f"open-loop: {error}", file=sys.stderr)
        return 1
    publish(result, render(result), args.out, "open-loop")
    return 0


if __name__ == "__main__":
    sys.exit(main())

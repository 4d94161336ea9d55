"""`make compare`: the service and its variants under the same wrk load, side by side, in one run.

The machine is shared and noisy, so variants alternate (A B C ... A B C ...) over --rounds, each
run on a freshly started server: a burst of other work hits one round of every variant rather
than every round of one. Per run: wrk's req/s, p50 and p99, errors, the server's own CPU-seconds
(/proc utime+stime of master and workers), each worker's RSS, spawn-to-ready seconds, and for a
micro-batched variant what its server merged (its /metrics scraped before and after). Writes
benchmarks.md, benchmarks.png and benchmarks.json to --out; exits 1 when any run saw an error.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from benchmarks import stress
from benchmarks.compare_report import (
    BASELINE,
    SETTLE_S,
    Goal,
    Merged,
    RunInfo,
    RunResult,
    Variant,
    failing,
    flagged,
    merged_between,
    write_all,
)
from benchmarks.stress import (
    GUNICORN,
    Server,
    StressError,
    _display,
    clocks,
    cpu_use,
    free_port,
    load_average,
    process_tree,
    revision,
    run_wrk,
    scrape,
)
from benchmarks.stress_report import parse_summary
from train.provenance import machine

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "app.main:create_app()"


def variants(reference_model: str) -> tuple[Variant, ...]:
    """Every variant, in the order a round runs them. Each names its path: the table (minimal
    flights answered from the 552-flight table), onnxruntime minimal, or onnxruntime full."""
    return (
        Variant("noop", "framework ceiling: reads the body, answers a constant",
                "benchmarks.noop_app:create_app()"),
        Variant(BASELINE, "table path, minimal single flights: the product as the README "
                "serves it", SERVICE),
        Variant("service-full", "onnxruntime full, full-schedule single flights (concurrent "
                "requests of a worker merged into one onnxruntime call: app.inference.microbatch)",
                SERVICE, bodies="full.jsonl", merges=True),
        Variant("service-full-unbatched", "onnxruntime full, full-schedule single flights, one "
                "onnxruntime call per request (MICROBATCH=0)", SERVICE,
                env={"MICROBATCH": "0"}, bodies="full.jsonl"),
        Variant("service-no-table", "onnxruntime minimal, minimal single flights "
                "(TABULATE_MINIMAL=0)", SERVICE, env={"TABULATE_MINIMAL": "0"}, merges=True),
        Variant("service-1-worker", "table path, one gunicorn worker instead of one per core",
                SERVICE, env={"WORKERS": "1"}),
        Variant("service-h11-asyncio", "table path, uvicorn without uvloop and httptools",
                SERVICE, gunicorn_args=("-k", "benchmarks.workers.PurePythonWorker")),
        Variant("service-access-log", "table path, gunicorn access log on (to the log file)",
                SERVICE, env={"ACCESS_LOG": "-"}),
        Variant("fastapi-pandas-pickle", "REFERENCE, not the product: FastAPI + pydantic + "
                "pandas get_dummies + pickled scikit-learn LogisticRegression",
                "benchmarks.reference_fastapi:create_app()",
                env={"REFERENCE_MODEL": reference_model}, reference=True),
        Variant("service-batch-1000", "onnxruntime full, 1,000 full-schedule flights per "
                "request (wrk/batch.lua)", SERVICE, bodies="batch.jsonl", script="wrk/batch.lua",
                connections=4, flights_per_request=1000),
        Variant("service-batch-1000-ort-2-threads", "onnxruntime full, 1,000 full-schedule "
                "flights per request, 2 onnxruntime threads per worker", SERVICE,
                env={"ORT_THREADS": "2"}, bodies="batch.jsonl", script="wrk/batch.lua",
                connections=4, flights_per_request=1000),
        Variant("service-batch-minimal-1000", "table path, 1,000 minimal flights per request "
                "(wrk/batch.lua)", SERVICE, bodies="batch-minimal.jsonl",
                script="wrk/batch.lua", connections=4, flights_per_request=1000),
    )  # fmt: skip


def _requests_per_s(run: RunResult) -> float:
    return run.requests_per_s


def _cpu(run: RunResult) -> float | None:
    return run.cpu_s_per_1k


def _p99(run: RunResult) -> float:
    return run.p99_ms


def _worst_rss(run: RunResult) -> float | None:
    return max(run.rss_mb) if run.rss_mb else None


GOALS = (
    Goal("table path, req/s / the ceiling's", BASELINE, _requests_per_s, "x", 0.90,
         against="noop"),
    Goal("onnxruntime minimal, req/s / the ceiling's", "service-no-table", _requests_per_s,
         "x", 0.80, against="noop"),
    Goal("onnxruntime full, req/s / the ceiling's", "service-full", _requests_per_s, "x", 0.70,
         against="noop"),
    # The same three targets in server CPU per request (the processes' own accounting, steadier
    # than req/s on a shared machine): 0.90 x the ceiling's req/s = at most 1/0.90 its CPU,
    # exactly (rounded, 1/0.70 became 1.43 and met 1.429; 1/0.90 became 1.11 and missed 1.111).
    Goal("table path, server CPU per request / the ceiling's", BASELINE, _cpu, "x",
         1 / 0.90, against="noop", at_most=True),
    Goal("onnxruntime minimal, server CPU per request / the ceiling's", "service-no-table", _cpu,
         "x", 1 / 0.80, against="noop", at_most=True),
    Goal("onnxruntime full, server CPU per request / the ceiling's", "service-full", _cpu, "x",
         1 / 0.70, against="noop", at_most=True),
    # Issue 10's rule for micro-batching: kept only with >= 15 % more req/s at 64 connections
    # and a p99 at most 20 % higher than one onnxruntime call per request.
    Goal("micro-batching, req/s / unbatched", "service-full", _requests_per_s, "x", 1.15,
         against="service-full-unbatched"),
    Goal("micro-batching, p99 / unbatched", "service-full", _p99, "x", 1.20,
         against="service-full-unbatched", at_most=True),
    Goal("1,000-flight full-schedule batches, 2 workers", "service-batch-1000",
         lambda run: run.flights_per_s, "flights/s", 200_000),
    Goal("RSS per worker (the largest)", "service-batch-1000", _worst_rss, "MB", 150,
         at_most=True),
    Goal("start-up to ready", BASELINE, lambda run: run.ready_s, "s", 2, at_most=True),
)  # fmt: skip
"""What `make compare` judges (issue 10); a variant not run leaves its goal "not measured"."""


@contextmanager
def served(variant: Variant, args: argparse.Namespace, log_dir: Path) -> Iterator[Server]:
    """The variant's gunicorn on a free loopback port, from an environment cleared of the
    service's own settings, so that a variant differs from the README's defaults by its row."""
    with stress.served(
        args.gunicorn, free_port(), args.ready_timeout, log_dir / f"{variant.name}.log",
        variant.app, stress.defaults_environment(variant.env), variant.gunicorn_args,
    ) as server:  # fmt: skip
        yield server


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, Pss) in MB; 0 where the file is missing."""
    return _kb(f"/proc/{pid}/status", "VmRSS:") / 1024, _kb(
        f"/proc/{pid}/smaps_rollup", "Pss:"
    ) / 1024


def _kb(path: str, key: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def wrk_command(args: argparse.Namespace, variant: Variant, seconds: int, url: str) -> list[str]:
    connections = variant.connections or args.connections
    return [
        args.wrk,
        f"--threads={min(args.threads, connections)}",
        f"--connections={connections}",
        f"--duration={seconds}s",
        f"--timeout={args.timeout}s",
        f"--script={ROOT / variant.script}",
        url,
    ]


Serve = Callable[[Variant, argparse.Namespace, Path], AbstractContextManager[Server]]
"""How a variant's server is started: `served` (gunicorn), or benchmarks.peers' launchers."""


def measure(
    variant: Variant, round_: int, args: argparse.Namespace, scratch: Path, serve: Serve = served
) -> RunResult:
    """Fresh server, warm-up (discarded), SETTLE_S, then the measured run between two clock
    readings; for a variant that `merges`, what the server merged in it (two scrapes)."""
    bodies = args.wrk_dir / variant.bodies
    merged: Merged | None = None
    with serve(variant, args, scratch) as server:
        if args.warmup > 0:
            run_wrk(wrk_command(args, variant, args.warmup, server.url), bodies, args.warmup)
        time.sleep(SETTLE_S)
        scraped = scrape(server.url) if variant.merges else ""
        load = float(load_average().split()[0])
        pids = process_tree(server.process.pid)
        before = clocks(pids)
        measured = wrk_command(args, variant, args.duration, server.url)
        output = run_wrk(measured, bodies, args.duration)
        after = clocks(pids)
        if variant.merges:
            time.sleep(SETTLE_S)
            merged = merged_between(scraped, scrape(server.url))
        if server.process.poll() is not None:
            raise StressError(
                f"{variant.name}: the server died during the run:\n{server.log_tail()}"
            )
        now = process_tree(server.process.pid)
        memory = [memory_mb(pid) for pid in now[1:]]
    spent = cpu_use(before, after, same_workers=now == pids)
    notes = []
    if spent.server_s is None:
        notes.append(f"worker processes changed during the run ({pids[1:]} -> {now[1:]})")
    summary = parse_summary(output)
    raw = next(line for line in reversed(output.splitlines()) if line.startswith('{"tool":"wrk"'))
    return RunResult(
        variant=variant.name,
        round=round_,
        requests=summary.requests,
        duration_s=summary.duration_s,
        requests_per_s=summary.requests_per_s,
        flights_per_request=variant.flights_per_request,
        p50_ms=summary.latency.p50 / 1000,
        p99_ms=summary.latency.p99 / 1000,
        socket_errors=summary.errors.socket,
        timeouts=summary.errors.timeout,
        non_2xx=summary.non_2xx,
        bad_bodies=summary.bad_bodies,
        server_cpu_s=spent.server_s,
        wrk_cpu_s=spent.wrk_s,
        rss_mb=tuple(rss for rss, _ in memory),
        pss_mb=tuple(pss for _, pss in memory),
        ready_s=server.ready_s,
        load_before=load,
        other_cpu_s=spent.other_s,
        notes=tuple(notes),
        wrk=json.loads(raw),
        merged=merged,
    )


def requests_total(url: str) -> dict[tuple[str, str, str], float]:
    """The server's `http_requests_total`, by (route, method, status), from one scrape."""
    counts: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(scrape(url)):
        for sample in family.samples:
            if sample.name == "http_requests_total":
                labels = sample.labels
                key = (labels["route"], labels["method"], labels["status"])
                counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def preflight(chosen: Sequence[Variant], args: argparse.Namespace) -> None:
    """Everything a run needs, checked before the first server starts, not at minute six."""
    if shutil.which(args.wrk) is None:
        raise StressError(f"{args.wrk!r} is not on PATH (apt-get install wrk)")
    if not Path(args.gunicorn).is_file():
        raise StressError(f"no gunicorn at {args.gunicorn}: run `make install`")
    for variant in chosen:
        if not (args.wrk_dir / variant.bodies).is_file():
            raise StressError(f"no bodies at {args.wrk_dir / variant.bodies}: run `make bodies`")
        model = variant.env.get("REFERENCE_MODEL")
        if model and not (ROOT / model).is_file():
            raise StressError(f"no reference model at {model}: run `make reference`")


def run_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """The options of every alternating-rounds wrk run (this one, benchmarks.peers.run)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="measured seconds per run")
    parser.add_argument("--warmup", type=int, default=2, help="discarded seconds of wrk per run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--timeout", type=int, default=5, help="wrk's per-request timeout, s")
    parser.add_argument("--wrk-dir", type=Path, default=Path("build/wrk"), help="bodies")
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--ready-timeout", type=float, default=60, help="seconds")
    parser.add_argument("--wrk", default="wrk", help="the wrk executable")
    parser.add_argument(
        "--gunicorn", type=Path, default=GUNICORN,
        help="the project's .venv/bin/gunicorn",
    )  # fmt: skip
    return parser


def parse_run(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration < 1 or args.warmup < 0:
        parser.error("--rounds and --duration must be at least 1, --warmup at least 0")
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads (wrk gives each thread a share)")
    return args


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = run_parser("python -m benchmarks.compare", __doc__)
    parser.add_argument("--variants", help="comma-separated subset (default: all)")
    parser.add_argument("--reference-model", type=Path, default=Path("build/reference/model.pkl"))
    args = parse_run(parser, argv)
    known = {variant.name: variant for variant in variants("")}
    wanted = args.variants.split(",") if args.variants else list(known)
    unknown = [name for name in wanted if name not in known]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {', '.join(known)}")
    # The server runs in the project directory: a path relative to it works there.
    args.chosen = [v for v in variants(_display(args.reference_model)) if v.name in wanted]
    return args


def run_info(args: argparse.Namespace, command: str, load: str) -> RunInfo:
    uname, cpu, nproc = machine()
    shown = (
        f"WRK_BODIES=<bodies> {args.wrk} --threads={args.threads} "
        f"--connections={args.connections} --duration={args.duration}s "
        f"--timeout={args.timeout}s --script=<script> http://127.0.0.1:<free port>"
    )
    return RunInfo(
        date_utc=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        uname=uname,
        cpu_model=cpu,
        nproc=nproc,
        load_average=load,
        command=command,
        server_command=f"{_display(args.gunicorn)} -c gunicorn.conf.py",
        wrk_command=shown,
        rounds=args.rounds,
        duration_s=args.duration,
        warmup_s=args.warmup,
        connections=args.connections,
        threads=args.threads,
        wrk_dir=_display(args.wrk_dir),
        revision=revision(),
    )


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    info = run_info(args, shlex.join(["python", "-m", "benchmarks.compare", *raw]), load_average())
    runs: list[RunResult] = []
    aborted = ""
    try:
        preflight(args.chosen, args)
        with tempfile.TemporaryDirectory(prefix="compare-") as scratch:
            for round_ in range(1, args.rounds + 1):
                for variant in args.chosen:
                    run = measure(variant, round_, args, Path(scratch))
                    runs.append(run)
                    print(_progress(run, args.rounds), flush=True)
    except StressError as error:
        aborted = str(error)
        print(f"compare: {error}", file=sys.stderr)
    if not runs:
        return 2
    finished = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    info = replace(info, finished_utc=finished, aborted=aborted)
    paths = write_all(args.out, info, args.chosen, runs, GOALS)
    print("compare: wrote " + ", ".join(_display(path) for path in paths))
    for problem in flagged(runs):
        print(f"compare: FLAGGED: {problem}", file=sys.stderr)
    return 2 if aborted else 1 if failing(runs, args.chosen) else 0


def _progress(run: RunResult, rounds: int) -> str:
    cpu = "n/a" if run.cpu_s_per_1k is None else f"{run.cpu_s_per_1k:.3f}"
    rss = "/".join(f"{mb:.0f}" for mb in run.rss_mb)
    return (
        f"round {run.round}/{rounds} {run.variant:<22} {run.requests_per_s:>9,.0f} req/s "
        f"p50 {run.p50_ms:6.2f} ms p99 {run.p99_ms:7.2f} ms CPU-s/1k {cpu} RSS {rss} MB "
        f"ready {run.ready_s:.2f} s errors {run.errors}"
    )


if __name__ == "__main__":
    sys.exit(main())

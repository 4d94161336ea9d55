"""`make bench-ort`: onnxruntime session options for the served tree ensembles, in-process.

Each option set gets its own session on the committed model; the sets take turns (A B C ...
A B C ...) over --rounds, each turn timing --calls runs of the same encoded batch, so a burst
of other work on the shared machine hits one turn of every set rather than every turn of one.
Reports the median over rounds of each set's median call, and its ratio to the served options
(`served`: what app/inference/model.py uses) in the same round. Writes benchmarks-ort.md and .json.

The options tried are the ones that can matter for a TreeEnsemble graph: the graph
optimisation level (the graph is one or two nodes, so little is expected) and intra-op threads
(onnxruntime parallelises a tree ensemble over trees or rows for large batches only), with and
without the thread pool's spin-waiting, which burns a core between calls.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort

from app.inference.flights import FlightValidator
from app.inference.model import MODEL_NAMES, ONNX_INPUT, ONNX_PROBABILITIES, OnnxModel
from benchmarks.conftest import MODELS_DIR, make_flights
from benchmarks.stress import load_average, revision
from train.provenance import machine

LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True, slots=True)
class Options:
    name: str
    level: str = "all"
    threads: int = 1
    spinning: bool = True
    large_only: bool = False
    """Only worth trying on large batches (threads)."""

    def session(self, onnx: bytes) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.graph_optimization_level = LEVELS[self.level]
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if not self.spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])


SERVED = "served"
OPTIONS = (
    Options(SERVED),  # app/inference/model.py: onnxruntime's default level (all), one thread
    Options("optimisation disabled", level="disabled"),
    Options("optimisation basic", level="basic"),
    Options("optimisation extended", level="extended"),
    Options("2 threads", threads=2, large_only=True),
    Options("2 threads, no spinning", threads=2, spinning=False, large_only=True),
)


@dataclass
class Case:
    model: str
    size: int
    features: np.ndarray
    times: dict[str, list[float]] = field(default_factory=dict)
    """Option set -> its median call (µs), round by round."""


def cases(sizes: Sequence[int]) -> list[Case]:
    found = []
    for name in MODEL_NAMES:
        model = OnnxModel.load(MODELS_DIR, name)
        validator = FlightValidator(model.card.operators, max(sizes))
        for size in sizes:
            batch = validator.batch(make_flights(size, model.card.encoder.schedule))
            found.append(Case(name, size, model.card.encoder.encode(batch.flights())))
    return found


def time_calls(session: ort.InferenceSession, features: np.ndarray, calls: int) -> float:
    """The median of `calls` timed runs, in µs."""
    run, feeds, outputs = session.run, {ONNX_INPUT: features}, [ONNX_PROBABILITIES]
    run(outputs, feeds)
    timings = []
    for _ in range(calls):
        start = time.perf_counter()
        run(outputs, feeds)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings) * 1e6


def measure(all_cases: list[Case], rounds: int, budget_s: float) -> None:
    sessions = {
        (name, options.name): options.session((MODELS_DIR / f"{name}.onnx").read_bytes())
        for name in MODEL_NAMES
        for options in OPTIONS
    }
    for case in all_cases:
        calls = max(5, int(budget_s * 1e6 / (10 + case.size * 12)))
        for _ in range(rounds):
            for options in OPTIONS:
                if options.large_only and case.size < 1000:
                    continue
                session = sessions[case.model, options.name]
                case.times.setdefault(options.name, []).append(
                    time_calls(session, case.features, calls)
                )


@dataclass
class Merge:
    """What micro-batching could save at most: `size` one-row calls against one call of
    `size` rows, with the served options."""

    model: str
    size: int
    separate: list[float] = field(default_factory=list)
    merged: list[float] = field(default_factory=list)


def merges(sizes: Sequence[int], rounds: int, budget_s: float) -> list[Merge]:
    found = []
    for name in MODEL_NAMES:
        onnx = (MODELS_DIR / f"{name}.onnx").read_bytes()
        session = Options(SERVED).session(onnx)
        model = OnnxModel.load(MODELS_DIR, name)
        validator = FlightValidator(model.card.operators, max(sizes))
        for size in sizes:
            batch = validator.batch(make_flights(size, model.card.encoder.schedule))
            rows = model.card.encoder.encode(batch.flights())
            singles = [rows[i : i + 1] for i in range(size)]
            merge = Merge(name, size)
            calls = max(5, int(budget_s * 1e6 / (10 + size * 12)))
            for _ in range(rounds):
                merge.merged.append(time_calls(session, rows, calls))
                merge.separate.append(
                    sum(time_calls(session, single, max(5, calls // size)) for single in singles)
                )
            found.append(merge)
    return found


def render_merges(found: list[Merge]) -> list[str]:
    lines = [
        "",
        "## The most micro-batching could save",
        "",
        "Concurrent single-flight requests merged into one onnxruntime call save at most the "
        "difference between their separate calls and one call of all their rows (before "
        "paying for the merge itself: a future and a wake-up per request, concatenating and "
        "splitting). Served options, medians over rounds.",
        "",
        "| model | requests merged | µs, separate calls | µs, one call | saved per request µs |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for merge in found:
        separate, merged = statistics.median(merge.separate), statistics.median(merge.merged)
        lines.append(
            f"| `{merge.model}` | {merge.size} | {separate:,.1f} | {merged:,.1f} | "
            f"{(separate - merged) / merge.size:,.1f} |"
        )
    return lines


def render(all_cases: list[Case], info: dict[str, str], found: list[Merge]) -> str:
    lines = [
        "# onnxruntime session options for the served models (in-process)",
        "",
        f"- Date (UTC): {info['date']}; code: {info['revision']}",
        f"- Machine: `{info['uname']}`; CPU: {info['cpu']}, {info['nproc']} cores; load "
        f"average before: {info['load']}",
        f"- Command: `{info['command']}`",
        "- Per model and batch size, the option sets take turns over the rounds; each turn is "
        "the median of many calls on the same encoded batch; the table gives the median over "
        "rounds, and `x served` the median over rounds of the ratio to the served options in "
        "the same round (below 1: faster).",
        "- In-process, one call at a time: this says what a call costs, not what two workers "
        "and wrk sharing 2 cores do with 2 threads each (`make compare`'s "
        "`service-batch-1000-ort-2-threads` measures that).",
        "",
        "| model | flights | options | µs per call | x served | µs per flight |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for case in all_cases:
        served = case.times[SERVED]
        for name, times in case.times.items():
            ratio = statistics.median(t / s for t, s in zip(times, served, strict=True))
            median = statistics.median(times)
            lines.append(
                f"| `{case.model}` | {case.size:,} | {name} | {median:,.1f} | x{ratio:.2f} | "
                f"{median / case.size:,.2f} |"
            )
    return "\n".join([*lines, *render_merges(found), ""])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ort_options", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", default="1,100,1000", help="flights per call")
    parser.add_argument("--budget", type=float, default=0.3, help="seconds per turn")
    parser.add_argument("--out", type=Path, default=Path("reports"))
    args = parser.parse_args(argv)
    uname, cpu, nproc = machine()
    info = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "revision": revision(),
        "uname": uname,
        "cpu": cpu,
        "nproc": str(nproc),
        "load": load_average(),
        "command": " ".join(["python -m benchmarks.ort_options", *(argv or sys.argv[1:])]),
    }
    all_cases = cases([int(size) for size in args.sizes.split(",")])
    measure(all_cases, args.rounds, args.budget)
    found = merges([4, 16, 32], args.rounds, args.budget)
    text = render(all_cases, info, found)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmarks-ort.md").write_text(text, encoding="utf-8")
    results = [
        {"model": case.model, "flights": case.size, "microseconds_per_round": case.times}
        for case in all_cases
    ]
    merged = [
        {"model": m.model, "requests": m.size, "separate_us": m.separate, "merged_us": m.merged}
        for m in found
    ]
    (args.out / "benchmarks-ort.json").write_text(
        json.dumps({"info": info, "options": results, "merges": merged}, indent=2) + "\n",
        encoding="utf-8",
    )
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

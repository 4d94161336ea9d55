"""`make compare-peers`: the service against the frameworks a user would pick instead, and
against itself under Granian, on identical routes with identical bodies, in one run.

Every variant runs on a freshly started server, in alternating rounds, measured by
benchmarks.compare.measure (the same wrk load, clocks and memory readings as `make compare`).
Before a variant's first timed run its labels are checked equal to the service's over the
minimal model's whole domain and a sample of full-schedule flights (benchmarks.peers.check);
a variant that differs, or does not start, is dropped from the timing and reported as such.
Writes peers.md and peers.json to --out.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import compare
from benchmarks.compare import SERVICE, measure, parse_run, run_info, run_parser
from benchmarks.compare_report import RunResult, Variant
from benchmarks.peers import bodies
from benchmarks.peers.check import Case, Outcome, cases, check
from benchmarks.peers.junit import outcomes
from benchmarks.peers.launch import LAUNCHERS, launched
from benchmarks.peers.report import Group, Results, write_all
from benchmarks.stress import ROOT, Server, StressError, load_average

OIP_SCRIPT = "benchmarks/peers/wrk/oip-{}.lua"


@dataclass(frozen=True, slots=True)
class Entry:
    variant: Variant
    route: str
    """"predict" or "oip": what check.check sends."""
    launcher: str | None = None
    """A benchmarks.peers.launch.LAUNCHERS key; None: gunicorn, as `make serve` runs it."""


def _predict(name: str, what: str, launcher: str | None, bodies: str, **env: str) -> Entry:
    app = SERVICE if launcher is None else f"{launcher} (benchmarks/peers)"
    return Entry(Variant(name, what, app, env, bodies=bodies), "predict", launcher)


def _oip(name: str, what: str, launcher: str | None, model: str, **env: str) -> Entry:
    app = SERVICE if launcher is None else f"{launcher} (benchmarks/peers)"
    variant = Variant(name, what, app, env, bodies=f"oip-{model}.jsonl",
                      script=OIP_SCRIPT.format(model))  # fmt: skip
    return Entry(variant, "oip", launcher)


NO_TABLE = {"TABULATE_MINIMAL": "0"}
ENTRIES = {
    entry.variant.name: entry
    for entry in (
        _predict("service-full", "the service, full-schedule flights", None, "full.jsonl"),
        _predict("bentoml-full", "BentoML service, full-schedule flights", "bentoml", "full.jsonl"),
        _predict("litserve-full", "LitServe API, full-schedule flights", "litserve", "full.jsonl"),
        _predict("service-no-table", "the service, minimal flights through onnxruntime", None,
                 "minimal.jsonl", **NO_TABLE),
        _predict("bentoml-minimal", "BentoML service, minimal flights", "bentoml",
                 "minimal.jsonl"),
        _predict("litserve-minimal", "LitServe API, minimal flights", "litserve",
                 "minimal.jsonl"),
        _oip("service-oip-full", "the service's OIP route, delay-full", None, "full"),
        _oip("mlserver-oip-full", "MLServer custom runtime, delay-full", "mlserver", "full"),
        _oip("pytriton-oip-full", "PyTriton (Triton HTTP), delay-full", "pytriton", "full"),
        _oip("service-oip-no-table", "the service's OIP route, delay-minimal through "
             "onnxruntime", None, "minimal", **NO_TABLE),
        _oip("mlserver-oip-minimal", "MLServer custom runtime, delay-minimal", "mlserver",
             "minimal"),
        _oip("pytriton-oip-minimal", "PyTriton (Triton HTTP), delay-minimal", "pytriton",
             "minimal"),
        _predict("service", "the service as `make serve` runs it (gunicorn + uvicorn), minimal "
                 "flights from the table", None, "minimal.jsonl"),
        _predict("granian", "the same app under Granian, minimal flights from the table",
                 "granian", "minimal.jsonl"),
        _predict("granian-full", "the same app under Granian, full-schedule flights", "granian",
                 "full.jsonl"),
    )
}  # fmt: skip
GROUPS = (
    Group("predict-full", "POST /predict, single full-schedule flights through onnxruntime "
          "(the service micro-batched, the peers one call per request)",
          ("service-full", "bentoml-full", "litserve-full"), "peer"),
    Group("predict-minimal", "POST /predict, single minimal flights through onnxruntime "
          "(the service with TABULATE_MINIMAL=0, micro-batched)",
          ("service-no-table", "bentoml-minimal", "litserve-minimal"), "peer"),
    Group("oip-full", "POST /v2/models/delay-full/infer (Open Inference Protocol), one flight "
          "(the service micro-batched)",
          ("service-oip-full", "mlserver-oip-full", "pytriton-oip-full"), "peer"),
    Group("oip-minimal", "POST /v2/models/delay-minimal/infer, one flight, through onnxruntime "
          "(the service with TABULATE_MINIMAL=0, micro-batched)",
          ("service-oip-no-table", "mlserver-oip-minimal", "pytriton-oip-minimal"), "peer"),
    Group("granian-table", "gunicorn + uvicorn vs Granian, POST /predict, minimal flights "
          "(the table: the default path)", ("service", "granian"), "server"),
    Group("granian-full", "gunicorn + uvicorn vs Granian, POST /predict, full-schedule flights",
          ("service-full", "granian-full"), "server"),
)  # fmt: skip


class Mismatch(Exception):
    """A variant's labels differ from the service's: its timing would compare other work."""


def serving(checked: dict[str, Outcome], expected: Sequence[Case]) -> compare.Serve:
    """compare.measure's `serve`: gunicorn or a peer, its labels checked on its first start."""

    @contextmanager
    def serve(variant: Variant, args: argparse.Namespace, scratch: Path) -> Iterator[Server]:
        entry = ENTRIES[variant.name]
        if entry.launcher is None:
            started = compare.served(variant, args, scratch)
        else:
            log = scratch / f"{variant.name}.log"
            started = launched(LAUNCHERS[entry.launcher], log, args.ready_timeout, variant.env)
        with started as server:
            if variant.name not in checked:
                checked[variant.name] = check(server.url, entry.route, expected)
            if not checked[variant.name].ok:
                raise Mismatch(f"{variant.name}: labels differ from the service's")
            yield server

    return serve


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = run_parser("python -m benchmarks.peers.run", __doc__)
    parser.add_argument("--groups", help="comma-separated subset (default: all)")
    parser.add_argument("--full-sample", type=int, default=200,
                        help="full-schedule flights in the label check")  # fmt: skip
    parser.add_argument("--reliability", type=Path, help="make granian-reliability's JUnit XML")
    parser.set_defaults(ready_timeout=120)  # MLServer and PyTriton take seconds to load
    args = parse_run(parser, argv)
    known = {group.name: group for group in GROUPS}
    wanted = args.groups.split(",") if args.groups else list(known)
    unknown = [name for name in wanted if name not in known]
    if unknown:
        parser.error(f"unknown group(s) {unknown}; known: {', '.join(known)}")
    args.groups = [known[name] for name in wanted]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    command = shlex.join(["python", "-m", "benchmarks.peers.run", *raw])
    info = run_info(args, command, load_average())
    names = list(dict.fromkeys(name for group in args.groups for name in group.variants))
    chosen = [ENTRIES[name] for name in names]
    bodies.write(args.wrk_dir)
    expected = cases(ROOT / "models", args.wrk_dir / "full.jsonl", args.full_sample)
    checked: dict[str, Outcome] = {}
    dropped: dict[str, str] = {}
    runs: list[RunResult] = []
    serve = serving(checked, expected)
    with tempfile.TemporaryDirectory(prefix="peers-") as scratch:
        for round_ in range(1, args.rounds + 1):
            for entry in chosen:
                name = entry.variant.name
                if name in dropped:
                    continue
                try:
                    run = measure(entry.variant, round_, args, Path(scratch), serve)
                except (StressError, Mismatch) as error:
                    dropped[name] = str(error)
                    print(f"peers: dropped {name}: {error}", file=sys.stderr, flush=True)
                    continue
                runs.append(run)
                print(compare._progress(run, args.rounds), flush=True)
    info = replace(info, finished_utc=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"))
    versions = {name: launcher.version() for name, launcher in LAUNCHERS.items()}
    variants = [entry.variant for entry in chosen]
    reliability = outcomes(args.reliability) if args.reliability else []
    results = Results(info, args.groups, variants, runs, checked, dropped, versions, reliability)
    paths = write_all(args.out, results)
    print("peers: wrote " + ", ".join(str(path) for path in paths))
    return 1 if dropped or any(run.errors for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())

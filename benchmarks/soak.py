"""Soak: steady wrk load for --duration seconds (default 600) on the service as deployed, with
each worker's RSS sampled every --interval seconds: `python -m benchmarks.soak`.

The bodies alternate the minimal contract (served from the lookup table) and the full one (an
onnxruntime call per request), so both paths run for the whole soak. Passes when wrk saw no
error and no non-2xx, no worker was replaced, and every worker's RSS at the end is within
--max-growth of its RSS at the end of the --warmup. Writes --out/soak.json and soak.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from itertools import zip_longest
from pathlib import Path
from typing import Any

from benchmarks.chaos import (
    MODELS_DIR,
    ROOT,
    Outcome,
    Wrk,
    in_scratch,
    new_outcome,
    served,
    worker_pids,
    wrk_figures,
)
from benchmarks.stress import StressError, load_average


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def mixed_bodies(wrk_dir: Path, into: Path) -> Path:
    """minimal.jsonl and full.jsonl interleaved line by line."""
    minimal = (wrk_dir / "minimal.jsonl").read_text(encoding="utf-8").splitlines()
    full = (wrk_dir / "full.jsonl").read_text(encoding="utf-8").splitlines()
    lines = [line for pair in zip_longest(minimal, full) for line in pair if line]
    path = into / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def soak(args: argparse.Namespace, workdir: Path) -> Outcome:
    args.bodies = mixed_bodies(args.wrk_dir, workdir)
    outcome = new_outcome("soak", args)
    outcome.settings |= {
        "interval_s": args.interval,
        "warmup_s": args.warmup,
        "max_growth": args.max_growth,
        "bodies": "build/wrk/minimal.jsonl and full.jsonl interleaved",
    }
    samples: list[dict[str, Any]] = []
    with served(workdir, MODELS_DIR) as server:
        workers = worker_pids(server.process.pid)
        start = time.monotonic()
        load = Wrk(server.url, args.duration, args.connections, args.threads, args.bodies, args.wrk)
        while load.process.poll() is None and time.monotonic() - start < args.duration + 5:
            samples.append(
                {
                    "t_s": round(time.monotonic() - start, 1),
                    "rss_kib": {str(pid): rss_kib(pid) for pid in workers},
                    "master_rss_kib": rss_kib(server.process.pid),
                    "load_average": load_average(),
                }
            )
            time.sleep(max(0.0, start + len(samples) * args.interval - time.monotonic()))
        result = load.result()
        after = worker_pids(server.process.pid)
    outcome.wrk["main"] = wrk_figures(result)
    outcome.events = samples
    e = result.errors
    outcome.checks["zero errors and non-2xx"] = (
        e.connect + e.read + e.write + e.timeout + (result.non_2xx or 0) == 0
    )
    outcome.checks["no worker replaced"] = sorted(after) == sorted(workers)
    warm = next((s for s in samples if s["t_s"] >= args.warmup), samples[0])
    last = samples[-1]
    growth: dict[str, float] = {}
    for pid in map(str, workers):
        before, end = warm["rss_kib"].get(pid), last["rss_kib"].get(pid)
        growth[pid] = (end - before) / before if before and end else float("inf")
    outcome.settings["rss_growth_after_warmup"] = {pid: round(g, 4) for pid, g in growth.items()}
    outcome.checks[f"every worker's RSS grew < {args.max_growth:.0%} after warm-up"] = all(
        g < args.max_growth for g in growth.values()
    )
    return outcome


def plot(outcome: Outcome, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 3.5))
    pids = list(outcome.events[0]["rss_kib"]) if outcome.events else []
    for pid in pids:
        points = [(s["t_s"], s["rss_kib"][pid]) for s in outcome.events if s["rss_kib"][pid]]
        axis.plot([t for t, _ in points], [v / 1024 for _, v in points], label=f"worker {pid}")
    axis.axvline(outcome.settings["warmup_s"], color="grey", linestyle=":", label="end of warm-up")
    axis.set_xlabel("seconds of load")
    axis.set_ylabel("RSS, MiB")
    axis.set_title("Worker RSS under steady load")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--duration", type=int, default=600, help="seconds of load")
    parser.add_argument("--interval", type=float, default=10, help="seconds between RSS samples")
    parser.add_argument("--warmup", type=float, default=60, help="seconds before the baseline")
    parser.add_argument("--max-growth", type=float, default=0.05)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--wrk-dir", type=Path, default=ROOT / "build" / "wrk")
    parser.add_argument("--wrk", default="wrk")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "reliability")
    args = parser.parse_args(argv)
    args.worker_class = ""
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which(args.wrk) is None:
        print(f"soak: {args.wrk!r} is not on PATH (apt-get install wrk)", file=sys.stderr)
        return 2
    if not (args.wrk_dir / "full.jsonl").is_file():
        print(f"soak: no bodies in {args.wrk_dir}: run `make bodies` first", file=sys.stderr)
        return 2
    try:
        outcome = in_scratch("soak-", soak, args)
    except StressError as error:
        print(f"soak: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(asdict(outcome), indent=2) + "\n")
    plot(outcome, args.out / "soak.png")
    for check, ok in outcome.checks.items():
        print(f"soak: {'ok  ' if ok else 'FAIL'} {check}")
    print(
        f"soak: {outcome.wrk['main']['requests']:,} requests, RSS growth after warm-up "
        f"{outcome.settings['rss_growth_after_warmup']}; written to {args.out}/soak.json"
    )
    return 0 if outcome.passed else 1


if __name__ == "__main__":
    sys.exit(main())

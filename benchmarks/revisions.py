"""In-process latency of one /predict request at several git revisions, measured alternately.

`python -m benchmarks.revisions REV [REV ...] --rounds 5` checks each revision out into a
worktree under build/revisions/, then, round after round, starts one fresh process per revision
that times the same single-flight request through that revision's app (this revision's
`benchmarks.asgi` driver, no server) and prints its median. Alternating A B A B over rounds is
what makes a before/after comparison meaningful on a shared, noisy machine; the order within a
round rotates from round to round (`round_order`), since the position in a round can matter as
much as the code (docs/performance.md, the fourth session: two checkouts of the same code 12 %
apart in a fixed order).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.stress import load_average
from train.provenance import run_stamp

ROOT = Path(__file__).resolve().parent.parent
WORKTREES = ROOT / "build" / "revisions"
_MINIMAL = {"OPERA": "Aerolineas Argentinas", "TIPOVUELO": "N", "MES": 3}
_FULL = {"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 1, "Fecha-I": "2017-01-01 23:30:00",
         "Des-I": "KMIA", "Emp-I": "LAN", "Vlo-I": "226"}  # fmt: skip
BODIES = {
    "minimal": {"flights": [_MINIMAL]},
    "full": {"flights": [_FULL]},
    "batch-minimal": {"flights": [_MINIMAL] * 1000},
    "batch-full": {"flights": [_FULL] * 1000},
}
"""What each --body sends: one flight, or 1,000 (the same flight: the cost per flight is what
is compared, not the model's answers)."""

# Runs inside the revision's worktree; prints the median microseconds of one request.
# The lifespan runs on a loop in this thread, as in a worker (not in TestClient's thread: the
# observers would then be handed to that thread, benchmarks/asgi.py).
_CHILD = """
import asyncio, json, statistics, sys, timeit
sys.path.insert(0, sys.argv[1])  # this revision's benchmarks/asgi.py driver
from pathlib import Path
from asgi import request_caller
from app.main import create_app
from app.settings import Settings
assert Path(sys.modules["app"].__file__).resolve().is_relative_to(Path.cwd().resolve())
# Batches scored on this thread (as benchmarks/conftest.py): the driver cannot wait for a thread.
offload = {"offload_flights": 10**6} if "offload_flights" in Settings.__dataclass_fields__ else {}
app = create_app(Settings(models_dir=Path("models"), **offload))
body = sys.stdin.buffer.read()
number = int(sys.argv[2])
asyncio.new_event_loop().run_until_complete(app.router.lifespan_context(app).__aenter__())
call = request_caller(app, "POST", "/predict", body, headers={"content-type": "application/json"})
assert call()[0]["status"] == 200
times = [min(timeit.repeat(call, number=number, repeat=3)) / number * 1e6 for _ in range(5)]
print(json.dumps(statistics.median(times)))
"""


def worktree(revision: str) -> Path:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", revision],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    path = WORKTREES / commit
    if not path.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=ROOT,
                       check=True, capture_output=True)  # fmt: skip
    return path


def measure(path: Path, body: str, flights: int) -> float:
    number = str(max(2, 2000 // flights))
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(ROOT / "benchmarks"), number],
        input=body,
        cwd=path,
        env={"PYTHONPATH": str(path), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        text=True,
    )
    return float(json.loads(result.stdout.strip().splitlines()[-1]))


def round_order(revisions: list[str], round_number: int) -> list[str]:
    """The revisions in the order round `round_number` (from 1) measures them: each takes each
    position in turn, so that no revision always runs first."""
    shift = (round_number - 1) % len(revisions)
    return revisions[shift:] + revisions[:shift]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.revisions", description=__doc__)
    parser.add_argument("revisions", nargs="+")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--body", choices=sorted(BODIES), default="minimal")
    parser.add_argument("--out", type=Path, help="a Markdown file to append the result to")
    args = parser.parse_args(argv)
    flights = len(BODIES[args.body]["flights"])
    body = json.dumps(BODIES[args.body])
    paths = {revision: worktree(revision) for revision in args.revisions}
    # Before the first round: read after the last, they were the load the rounds made.
    started, load = datetime.now(UTC), load_average()
    results: dict[str, list[float]] = {revision: [] for revision in paths}
    for round_number in range(1, args.rounds + 1):
        for revision in round_order(list(paths), round_number):
            results[revision].append(measure(paths[revision], body, flights))
        print(f"round {round_number}: " + ", ".join(f"{r} {v[-1]:.1f} µs" for r, v in results.items()),
              flush=True)  # fmt: skip
    first = args.revisions[0]
    lines = [
        f"### `{args.body}` body ({flights:,} flight{'s' if flights > 1 else ''}): in-process "
        f"`/predict`, median of {args.rounds} alternating rounds",
        "",
        f"{run_stamp(started)}, load average before: {load}; "
        f"`python -m benchmarks.revisions {' '.join(args.revisions)} --rounds {args.rounds} "
        f"--body {args.body}`",
        "",
        f"| revision | µs per request | µs per flight | x {first} (median of per-round ratios) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for revision, values in results.items():
        ratios = [value / base for value, base in zip(values, results[first], strict=True)]
        median = statistics.median(values)
        lines.append(
            f"| `{revision}` | {median:,.1f} | {median / flights:,.2f} | "
            f"x{statistics.median(ratios):.2f} |"
        )
    text = "\n".join([*lines, ""])
    print(text)
    if args.out:
        with args.out.open("a", encoding="utf-8") as out:
            out.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

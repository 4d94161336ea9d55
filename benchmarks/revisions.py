"""In-process latency of one /predict request at several git revisions, measured alternately.

`python -m benchmarks.revisions REV [REV ...] --rounds 5` checks each revision out into a
worktree under build/revisions/, then, round after round, starts one fresh process per revision
that times the same single-flight request through that revision's app (this revision's
`benchmarks.asgi` driver, no server) and prints its median. Alternating A B A B over rounds is
what makes a before/after comparison meaningful on a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKTREES = ROOT / "build" / "revisions"
BODIES = {
    "minimal": {"flights": [{"OPERA": "Aerolineas Argentinas", "TIPOVUELO": "N", "MES": 3}]},
    "full": {"flights": [{"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 1,
                          "Fecha-I": "2017-01-01 23:30:00", "Des-I": "KMIA", "Emp-I": "LAN",
                          "Vlo-I": "226"}]},
}  # fmt: skip

# Runs inside the revision's worktree; prints the median microseconds of one request.
_CHILD = """
import json, statistics, sys, timeit
sys.path.insert(0, sys.argv[1])  # this revision's benchmarks/asgi.py driver
from pathlib import Path
from asgi import request_caller
from starlette.testclient import TestClient
from app.main import create_app
from app.settings import Settings
assert Path(sys.modules["app"].__file__).resolve().is_relative_to(Path.cwd().resolve())
app = create_app(Settings(models_dir=Path("models")))
body = sys.argv[2].encode()
with TestClient(app):
    call = request_caller(app, "POST", "/predict", body, headers={"content-type": "application/json"})
    assert call()[0]["status"] == 200
    times = [min(timeit.repeat(call, number=2000, repeat=3)) / 2000 * 1e6 for _ in range(5)]
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


def measure(path: Path, body: str) -> float:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(ROOT / "benchmarks"), body],
        cwd=path,
        env={"PYTHONPATH": str(path), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        text=True,
    )
    return float(json.loads(result.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.revisions", description=__doc__)
    parser.add_argument("revisions", nargs="+")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--body", choices=sorted(BODIES), default="minimal")
    args = parser.parse_args(argv)
    body = json.dumps(BODIES[args.body])
    paths = {revision: worktree(revision) for revision in args.revisions}
    results: dict[str, list[float]] = {revision: [] for revision in paths}
    for round_number in range(1, args.rounds + 1):
        for revision, path in paths.items():
            results[revision].append(measure(path, body))
        print(f"round {round_number}: " + ", ".join(f"{r} {v[-1]:.1f} µs" for r, v in results.items()),
              flush=True)  # fmt: skip
    first = args.revisions[0]
    print(f"\n{args.body} single-flight /predict, in-process, median of {args.rounds} rounds:")
    for revision, values in results.items():
        ratios = [value / base for value, base in zip(values, results[first], strict=True)]
        print(f"  {revision:>12}  {statistics.median(values):7.1f} µs   "
              f"x{statistics.median(ratios):.2f} of {first}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

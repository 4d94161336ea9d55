"""The Lambda handler's own cost, measured locally: what deploy/README.md's Lambda sizing reads.

    python -m benchmarks.lambda_local --out reports

Each cold start runs in a fresh interpreter: the import of deploy/aws/handler (the app, Mangum,
onnxruntime and what they pull in), then its `cold_start` (the committed models loaded and
warmed, no S3), then `--invocations` single-flight `/predict` events of API Gateway's HTTP API
(tests/payloads/apigw_v2_predict.json) through the handler, one after another, each timed: a
minimal flight (the table path), then the same event carrying the README's full-schedule flight
(onnxruntime full, scored alone, as Lambda's one request at a time is). Medians over
`--cold-starts` interpreters. Not in it: the interpreter's own start, the S3 download, Lambda's
per-invocation overhead and API Gateway's, and Lambda's python3.12 runtime (this is the
interpreter running this module).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.inference.flights import FULL_EXAMPLE, MINIMAL_EXAMPLE
from benchmarks.chaos import percentile
from benchmarks.stress import StressError, load_average, publish, revision
from train.provenance import machine

ROOT = Path(__file__).resolve().parent.parent
EVENT = ROOT / "tests" / "payloads" / "apigw_v2_predict.json"
MODELS = ROOT / "models"
BODIES = {"minimal": {"flights": [MINIMAL_EXAMPLE]}, "full": {"flights": [FULL_EXAMPLE]}}
"""The body of each timed event, by path: the documented examples (app.inference.flights), a
flight for the table path and one with its schedule."""
PATHS = {"minimal": "minimal flight (table)", "full": "full-schedule flight (onnxruntime full)"}
"""How the report names each body's path."""

CHILD = """
import json, sys, time
started = time.perf_counter()
from deploy.aws import handler
imported = time.perf_counter()
service = handler.cold_start({"MODELS_DIR": sys.argv[1], "GRPC_BIND": ""})
ready = time.perf_counter()
event = json.loads(open(sys.argv[2]).read())
invocations, statuses = {}, {}
for mix, body in json.loads(sys.argv[4]).items():
    event["body"] = json.dumps(body)
    timed = invocations[mix] = []
    for _ in range(int(sys.argv[3])):
        before = time.perf_counter()
        answer = service(event, None)
        timed.append(time.perf_counter() - before)
        statuses[answer["statusCode"]] = statuses.get(answer["statusCode"], 0) + 1
service.close()
print(json.dumps({"import_s": imported - started, "cold_start_s": ready - imported,
                  "invocations_s": invocations, "statuses": statuses}))
"""
"""One cold start and its invocations, in a fresh interpreter: prints them as JSON."""


def one_cold_start(invocations: int, timeout: float = 300) -> dict[str, Any]:
    command = [
        sys.executable, "-c", CHILD, str(MODELS), str(EVENT), str(invocations), json.dumps(BODIES)
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise StressError(f"the handler's cold start failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if set(result["statuses"]) != {"200"}:
        raise StressError(f"/predict events were not all answered 200: {result['statuses']}")
    return result


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the cold starts: of the import, of the load and warm-up, and, per body, of
    each cold start's median and p99 invocation (ms), with the range of those medians."""

    def ms(seconds: float) -> float:
        return round(seconds * 1e3, 3)

    invocations: dict[str, dict[str, Any]] = {}
    for mix in BODIES:
        medians = [statistics.median(run["invocations_s"][mix]) for run in runs]
        p99s = [percentile(sorted(run["invocations_s"][mix]), 99) for run in runs]
        invocations[mix] = {
            "p50_ms": ms(statistics.median(medians)),
            "p50_range_ms": [ms(min(medians)), ms(max(medians))],
            "p99_ms": ms(statistics.median(p99s)),
        }
    return {
        "import_s": round(statistics.median(run["import_s"] for run in runs), 2),
        "cold_start_s": round(statistics.median(run["cold_start_s"] for run in runs), 3),
        "invocations": invocations,
    }


def render(result: dict[str, Any]) -> str:
    summary, settings = result["summary"], result["settings"]
    return "\n".join([
        "# The Lambda handler, locally (`make lambda-local`)",
        "",
        f"- Date: {result['date']}; code: {result['revision']}",
        f"- Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores "
        f"(`{result['machine']['uname']}`); load average after: {result['load_average_after']}",
        f"- Python {result['python']} (Lambda's runtime is python3.12), the committed models, "
        "no S3.",
        f"- {settings['cold_starts']} cold starts, each in a fresh interpreter: the import of "
        "deploy/aws/handler, then `cold_start` (models loaded and warmed), then "
        f"{settings['invocations']} single-flight `/predict` events of API Gateway's HTTP API "
        "(tests/payloads/apigw_v2_predict.json) through the handler, one after another, for each "
        "body; medians over the cold starts. The files the import reads were in the page cache "
        "(a new Lambda environment reads them from its disk). Not in it: the interpreter's "
        "start, an S3 download, Lambda's and API Gateway's own overhead a request.",
        "",
        "| import | models loaded and warmed |",
        "| ---: | ---: |",
        f"| {summary['import_s']} s | {summary['cold_start_s']} s |",
        "",
        "| body (path) | an invocation, median (cold starts' range) | p99 |",
        "| --- | ---: | ---: |",
        *(
            f"| {PATHS[mix]} | {figures['p50_ms']} ms ({figures['p50_range_ms'][0]} to "
            f"{figures['p50_range_ms'][1]}) | {figures['p99_ms']} ms |"
            for mix, figures in summary["invocations"].items()
        ),
        "",
    ])  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold-starts", type=int, default=5)
    parser.add_argument("--invocations", type=int, default=2000)
    parser.add_argument("--out", type=Path, help="write lambda-local.json and .md here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    measured = revision()
    try:
        runs = [one_cold_start(args.invocations) for _ in range(args.cold_starts)]
    except (StressError, subprocess.TimeoutExpired) as error:
        print(f"lambda-local: {error}", file=sys.stderr)
        return 1
    host, cpu, cores = machine()
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "revision": measured,
        "machine": {"uname": host, "cpu": cpu, "cores": cores},
        "load_average_after": load_average(),
        "python": platform.python_version(),
        "settings": {"cold_starts": args.cold_starts, "invocations": args.invocations},
        "summary": summarise(runs),
        "runs": [{key: run[key] for key in ("import_s", "cold_start_s")} for run in runs],
    }
    publish(result, render(result), args.out, "lambda-local")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make bench`'s summary: reports/latency.json (pytest-benchmark) as Markdown, with the in-process
goal of issue 10, `test_predict[full-1]`'s median at most 2.5 x the no-op's in the same run.
The JSON is rewritten without each call's raw timing (its statistics stay)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

NOOP = "test_noop_ceiling"
GOALS = {"test_predict[full-1]": 2.5}
"""Test -> the most its median may be, as a multiple of the no-op's median."""


def render(data: dict[str, Any]) -> str:
    benchmarks = {item["name"]: item["stats"] for item in data["benchmarks"]}
    noop = benchmarks.get(NOOP, {}).get("median")
    commit = data.get("commit_info", {})
    revision = str(commit.get("id", "unknown"))[:7] + (
        " + uncommitted changes" if commit.get("dirty") else ""
    )
    machine = data.get("machine_info", {})
    lines = [
        "# In-process latency (`make bench`)",
        "",
        f"- Date: {data.get('datetime', 'unknown')}; code: {revision}",
        f"- Machine: {machine.get('cpu', {}).get('brand_raw', machine.get('processor', ''))}, "
        f"Python {machine.get('python_version', '')}",
        "- pytest-benchmark, one process, no server: each test calls the ASGI app (or the bare "
        "onnxruntime session) directly; the tests run one after the other, so a burst of other "
        "work on the shared machine can hit one test and not another (IQR shows the spread).",
        "- Paths: `test_predict[minimal-N]` is the table path; `[full-N]` onnxruntime full; "
        "`test_onnxruntime_call` the bare session call on encoded features; N flights a request.",
        "",
        "| test | min µs | median µs | IQR µs | median x no-op |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, stats in benchmarks.items():
        ratio = f"x{stats['median'] / noop:.2f}" if noop else "n/a"
        lines.append(
            f"| `{name}` | {stats['min'] * 1e6:,.1f} | {stats['median'] * 1e6:,.1f} | "
            f"{stats['iqr'] * 1e6:,.1f} | {ratio} |"
        )
    lines += ["", "| goal | measured | target | verdict |", "| --- | ---: | ---: | --- |"]
    for name, most in GOALS.items():
        stats = benchmarks.get(name)
        if stats is None or not noop:
            lines.append(f"| `{name}` median / `{NOOP}` median | n/a | ≤ x{most} | not measured |")
            continue
        ratio = stats["median"] / noop
        verdict = "met" if ratio <= most else "**missed**"
        lines.append(
            f"| `{name}` median / `{NOOP}` median | x{ratio:.2f} | ≤ x{most} | {verdict} |"
        )
    return "\n".join([*lines, ""])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.latency_report", description=__doc__
    )
    parser.add_argument("json", type=Path, help="pytest-benchmark's --benchmark-json file")
    parser.add_argument("--out", type=Path, required=True, help="the Markdown file to write")
    args = parser.parse_args(argv)
    data = json.loads(args.json.read_text(encoding="utf-8"))
    # Every call's raw timing makes the file tens of MB: the statistics are what a report keeps.
    for item in data["benchmarks"]:
        item["stats"].pop("data", None)
    args.json.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    text = render(data)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

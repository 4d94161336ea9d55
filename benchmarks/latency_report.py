"""`make bench`'s summary: reports/latency.json (pytest-benchmark) as Markdown, with the in-process
goal of issue 10, `test_predict[full-1]`'s median at most 2.5 x the no-op's in the same run.

The goal is judged on benchmarks/test_alternating.py's rounds: each round's ratio of medians,
their median and range, and a verdict only when every round agrees. The JSON is rewritten with
that summary (key "alternating") and without each call's raw timing (its statistics stay)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

NOOP = "test_noop_ceiling"
ROUND_NOOP = "noop"
GOALS = {"full-1": 2.5}
"""Alternating path -> the most its median may be, as a multiple of the no-op's median."""


def round_medians(data: dict[str, Any]) -> list[dict[str, float]]:
    """benchmarks/test_alternating.py's rounds, in order: path -> median (s) of its calls."""
    return [
        medians
        for item in data["benchmarks"]
        for medians in item.get("extra_info", {}).get("rounds", [])
    ]


def round_ratios(data: dict[str, Any]) -> dict[str, list[float]]:
    """Each alternating path's ratio of medians to the same round's no-op, round by round."""
    ratios: dict[str, list[float]] = {}
    for medians in round_medians(data):
        for path, median in medians.items():
            if path != ROUND_NOOP:
                ratios.setdefault(path, []).append(median / medians[ROUND_NOOP])
    return ratios


def verdict(ratios: Sequence[float], most: float) -> str:
    """Met or missed only when every round says so; a split is noise, not a result."""
    if not ratios:
        return "not measured"
    if all(ratio <= most for ratio in ratios):
        return "met"
    if all(ratio > most for ratio in ratios):
        return "missed"
    return "within the noise"


def summary(data: dict[str, Any]) -> dict[str, Any]:
    """The rounds' figures as latency.json keeps them (key "alternating")."""
    return {
        path: {
            "rounds": ratios,
            "median": statistics.median(ratios),
            "min": min(ratios),
            "max": max(ratios),
            "goal": GOALS.get(path),
            "verdict": verdict(ratios, GOALS[path]) if path in GOALS else None,
        }
        for path, ratios in round_ratios(data).items()
    }


def _shown(verdict: str | None) -> str:
    return "**missed**" if verdict == "missed" else verdict or "n/a"


def _rounds_lines(data: dict[str, Any]) -> list[str]:
    rounds = round_medians(data)
    paths = summary(data)
    lines = [
        "",
        "## Alternating rounds: issue 10's in-process goal",
        "",
        "benchmarks/test_alternating.py: the no-op (`noop`, minimal body), the table path "
        "(`minimal-1`) and onnxruntime full (`full-1`), one flight a request, take turns in runs "
        "of `RUN` calls (benchmarks/test_alternating.py; the order reversed every other turn), so each round's medians come from "
        "the same moments. Each round's ratio is its path's median over the same round's no-op "
        "median; a verdict only when every round agrees, otherwise within the noise.",
        "",
        "| path | median of the rounds' ratios to the no-op | rounds' range | rounds | target "
        "| verdict |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for path, most in GOALS.items():
        if path not in paths:
            lines.append(f"| `{path}` | n/a | n/a | 0 | ≤ x{most} | not measured |")
    for path, item in paths.items():
        target = f"≤ x{item['goal']}" if item["goal"] else "none"
        lines.append(
            f"| `{path}` | x{item['median']:.2f} | x{item['min']:.2f} to x{item['max']:.2f} | "
            f"{len(item['rounds'])} | {target} | {_shown(item['verdict'])} |"
        )
    if not rounds:
        return lines
    lines += [
        "",
        "| round | `noop` median µs | "
        + " | ".join(f"`{path}` median µs | `{path}` / `noop`" for path in paths)
        + " |",
        "| ---: | ---: |" + " ---: | ---: |" * len(paths),
    ]
    for index, medians in enumerate(rounds):
        cells = [f"{medians[ROUND_NOOP] * 1e6:,.1f}"]
        for path, item in paths.items():
            cells += [f"{medians[path] * 1e6:,.1f}", f"x{item['rounds'][index]:.2f}"]
        lines.append(f"| {index + 1} | " + " | ".join(cells) + " |")
    return lines


def render(data: dict[str, Any]) -> str:
    benchmarks = {
        item["name"]: item["stats"]
        for item in data["benchmarks"]
        if "rounds" not in item.get("extra_info", {})
    }
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
        "work on the shared machine can hit one test and not another (IQR shows the spread): "
        "the goal is judged on the alternating rounds below instead.",
        "- Paths: `test_predict[minimal-N]` is the table path; `[full-N]` onnxruntime full; "
        "`test_onnxruntime_call` the onnxruntime call the service makes on encoded features (its "
        "IOBinding below 32 flights, `session.run` above); N flights a request.",
        "",
        "| test | min µs | median µs | IQR µs | median x `test_noop_ceiling` |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, stats in benchmarks.items():
        ratio = f"x{stats['median'] / noop:.2f}" if noop else "n/a"
        lines.append(
            f"| `{name}` | {stats['min'] * 1e6:,.1f} | {stats['median'] * 1e6:,.1f} | "
            f"{stats['iqr'] * 1e6:,.1f} | {ratio} |"
        )
    lines += _rounds_lines(data)
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
    data["alternating"] = summary(data)
    args.json.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    text = render(data)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m deploy.dvc.prepare --data FILE --sha256 HEX --out build/data.json`: the first stage
of the DVC pipeline (dvc.yaml).

Checks that the data file is the SCL flights file (train.data.load reads and validates it) and
the very one params.yaml names by the sha256 of its decompressed CSV, then records what it holds
in a small JSON that the export stage depends on. Training on other data is thus a reviewed
change of params.yaml, never an accident of whatever sits at the path. The data is not copied.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from train.data import CSV_SHA256, DEFAULT_DATA, DataError, load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.dvc.prepare", description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--sha256", default=CSV_SHA256, help="expected sha256 of the decompressed CSV"
    )
    parser.add_argument("--out", type=Path, default=Path("build/data.json"))
    args = parser.parse_args(argv)
    try:
        dataset = load(args.data)
    except DataError as error:
        print(f"prepare: {error}", file=sys.stderr)
        return 1
    if dataset.csv_sha256 != args.sha256.lower():
        print(
            f"prepare: {args.data}: the CSV's sha256 is {dataset.csv_sha256}, not params.yaml's "
            f"data.sha256 {args.sha256}. If this is the data to train on, set data.sha256 to it.",
            file=sys.stderr,
        )
        return 1
    scheduled = dataset.table["Fecha-I"]
    record = {
        "file": args.data.as_posix(),
        "csv_sha256": dataset.csv_sha256,
        "challenge_data": dataset.csv_sha256 == CSV_SHA256,
        "rows": len(dataset.table),
        "delay_rate": round(float(dataset.labels.mean()), 6),
        "scheduled_from": scheduled.min().strftime("%Y-%m-%d"),
        "scheduled_to": scheduled.max().strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(
        f"prepare: {args.data}: {record['rows']} flights scheduled {record['scheduled_from']} to "
        f"{record['scheduled_to']}, delay rate {record['delay_rate']:.3f}; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

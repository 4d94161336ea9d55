"""Writes wrk request bodies for `POST /predict`, drawn from the real SCL flights.

The output is one JSON body per line (`minimal.jsonl`, `full.jsonl`, `batch.jsonl` of full
flights, `batch-minimal.jsonl` of minimal ones) so the wrk
Lua scripts can load it with `io.lines`. It goes to a git-ignored directory (`build/wrk`): the
data set, and so any sample of it, is never committed.

Every body in a file is distinct, so no cache keyed on the request bytes can flatter the result.
The data has only a few hundred distinct (OPERA, TIPOVUELO, MES) triples, fewer than the bodies
wanted, so minimal bodies also vary their key order, as different JSON clients would; the triples
still come from rows drawn at random, so common flights stay common.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import itertools
import json
import os
import random
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

COLUMNS = ("Fecha-I", "Vlo-I", "Des-I", "Emp-I", "OPERA", "TIPOVUELO")
MINIMAL_KEYS = ("OPERA", "TIPOVUELO", "MES")
KEY_ORDERS = tuple(itertools.permutations(MINIMAL_KEYS))
"""The canonical order first: a triple's first body looks like the API's own example."""

FILES = ("minimal.jsonl", "full.jsonl", "batch.jsonl", "batch-minimal.jsonl")


@dataclass(frozen=True, slots=True)
class Row:
    """The scheduled fields of one data-set flight: everything a body may carry."""

    departure: str
    number: str
    destination: str
    airline: str
    operator: str
    flight_type: str
    month: int
    """MES of a body is Fecha-I's month, not the data set's MES (the month operated)."""

    def minimal(self, keys: Sequence[str] = MINIMAL_KEYS) -> dict[str, Any]:
        values: dict[str, Any] = {
            "OPERA": self.operator,
            "TIPOVUELO": self.flight_type,
            "MES": self.month,
        }
        return {key: values[key] for key in keys}

    def full(self) -> dict[str, Any]:
        return {
            **self.minimal(),
            "Fecha-I": self.departure,
            "Des-I": self.destination,
            "Emp-I": self.airline,
            "Vlo-I": self.number,
        }


def read_rows(path: Path) -> list[Row]:
    """Reads every column as text (Vlo-I mixes digits and letters) and drops duplicate flights."""
    with _open_text(path) as text:
        reader = csv.DictReader(text)
        missing = [column for column in COLUMNS if column not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}")
        return list(dict.fromkeys(_row(record, reader.line_num) for record in reader))


def _row(record: dict[str, str], line: int) -> Row:
    departure = record["Fecha-I"]
    try:
        # fromisoformat is ~20x faster than strptime; the length and separator pin the format.
        if len(departure) != 19 or departure[10] != " ":
            raise ValueError
        month = datetime.fromisoformat(departure).month
    except ValueError:
        raise ValueError(f"line {line}: Fecha-I {departure!r} is not YYYY-MM-DD HH:MM:SS") from None
    return Row(
        departure=departure,
        number=record["Vlo-I"],
        destination=record["Des-I"],
        airline=record["Emp-I"],
        operator=record["OPERA"],
        flight_type=record["TIPOVUELO"],
        month=month,
    )


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def body(flights: list[dict[str, Any]]) -> str:
    """One compact line: a body must never contain a newline."""
    return json.dumps({"flights": flights}, separators=(",", ":"))


def minimal_bodies(rows: Sequence[Row], count: int, rng: random.Random) -> list[str]:
    """`count` distinct single-flight minimal bodies, each from a randomly drawn row."""
    used: dict[tuple[str, str, int], int] = {}
    bodies: list[str] = []
    for row in _shuffled(rows, rng):
        triple = (row.operator, row.flight_type, row.month)
        uses = used.get(triple, 0)
        if uses == len(KEY_ORDERS):
            continue
        used[triple] = uses + 1
        bodies.append(body([row.minimal(KEY_ORDERS[uses])]))
        if len(bodies) == count:
            rng.shuffle(bodies)
            return bodies
    raise ValueError(
        f"only {len(bodies)} distinct minimal bodies exist ({len(used)} distinct "
        f"OPERA/TIPOVUELO/MES triples x {len(KEY_ORDERS)} key orders); asked for {count}"
    )


def full_bodies(rows: Sequence[Row], count: int, rng: random.Random) -> list[str]:
    """`count` distinct single-flight full-contract bodies (rows are already distinct)."""
    if count > len(rows):
        raise ValueError(f"only {len(rows)} distinct flights in the data; asked for {count}")
    return [body([row.full()]) for row in rng.sample(list(rows), count)]


def batch_bodies(
    rows: Sequence[Row], batches: int, size: int, rng: random.Random, minimal: bool = False
) -> list[str]:
    """`batches` distinct bodies of `size` distinct rows each, as full-contract flights or,
    with `minimal`, as the challenge's three fields (the rows differ; the triples repeat)."""
    if size > len(rows):
        raise ValueError(f"only {len(rows)} distinct flights in the data; a batch needs {size}")
    population = list(rows)
    bodies: dict[str, None] = {}
    for _ in range(batches * 10):
        sample = rng.sample(population, size)
        flights = [row.minimal(KEY_ORDERS[0]) if minimal else row.full() for row in sample]
        bodies[body(flights)] = None
        if len(bodies) == batches:
            return list(bodies)
    raise ValueError(f"could not draw {batches} distinct batches of {size} flights")


def _shuffled(rows: Sequence[Row], rng: random.Random) -> Iterator[Row]:
    order = list(range(len(rows)))
    rng.shuffle(order)
    return (rows[index] for index in order)


def write_lines(path: Path, lines: Sequence[str]) -> None:
    """Writes then renames, so make never sees a half-written file as up to date."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(partial, path)


def generate(
    data: Path, out: Path, count: int, batch: int, batches: int, seed: int
) -> dict[Path, int]:
    """Writes the body files; returns how many bodies each holds."""
    rows = read_rows(data)
    rng = random.Random(seed)
    contents = {
        out / "minimal.jsonl": minimal_bodies(rows, count, rng),
        out / "full.jsonl": full_bodies(rows, count, rng),
        out / "batch.jsonl": batch_bodies(rows, batches, batch, rng),
        out / "batch-minimal.jsonl": batch_bodies(rows, batches, batch, rng, minimal=True),
    }
    out.mkdir(parents=True, exist_ok=True)
    for path, lines in contents.items():
        write_lines(path, lines)
    return {path: len(lines) for path, lines in contents.items()}


def _positive(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{raw} is not a positive integer")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bodies", description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="dataset_SCL.csv(.gz)")
    parser.add_argument("--out", type=Path, default=Path("build/wrk"), help="a git-ignored dir")
    parser.add_argument("--count", type=_positive, default=1000, help="single-flight bodies")
    parser.add_argument("--batch", type=_positive, default=1000, help="flights per batch body")
    parser.add_argument("--batches", type=_positive, default=20, help="batch bodies")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        written = generate(args.data, args.out, args.count, args.batch, args.batches, args.seed)
    except (OSError, ValueError) as error:
        print(f"bodies: {error}", file=sys.stderr)
        return 1
    for path, lines in written.items():
        print(f"wrote {path} ({lines} bodies, {path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The wrk body generator, on a small synthetic file shaped like the SCL data."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks import bodies

COLUMNS = ["Fecha-I", "Vlo-I", "Ori-I", "Des-I", "Emp-I", "Fecha-O", "DIA", "MES", "AÑO",
           "TIPOVUELO", "OPERA"]  # fmt: skip
AIRLINES = {"Grupo LATAM": "LAN", "Sky Airline": "SKU", "Copa Air": "CMP", "Iberia": "IBE"}
DESTINATIONS = {"SCFA": "N", "SCIE": "N", "SPJC": "I", "KMIA": "I"}


def synthetic_rows(count: int) -> Iterator[dict[str, str]]:
    rng = random.Random(3)
    for _ in range(count):
        operator = rng.choice(list(AIRLINES))
        destination = rng.choice(list(DESTINATIONS))
        month = rng.randint(1, 12)
        scheduled = f"2017-{month:02d}-{rng.randint(1, 28):02d} {rng.randrange(24):02d}:30:00"
        yield {
            "Fecha-I": scheduled,
            "Vlo-I": rng.choice(["226", "0107", "989P", "12"]),
            "Ori-I": "SCEL",
            "Des-I": destination,
            "Emp-I": AIRLINES[operator],
            "Fecha-O": scheduled,
            "DIA": scheduled[8:10],
            # The month operated, made to differ: a body's MES must come from Fecha-I instead.
            "MES": str(month % 12 + 1),
            "AÑO": "2017",
            "TIPOVUELO": DESTINATIONS[destination],
            "OPERA": operator,
        }


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "flights.csv"
    rows = list(synthetic_rows(400))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows([*rows, rows[0], rows[1]])  # duplicated flights are dropped
    return path


def generate(data: Path, out: Path, seed: int = 0) -> dict[str, list[str]]:
    bodies.generate(data, out, count=150, batch=50, batches=4, seed=seed)
    return {name: (out / name).read_text(encoding="utf-8").splitlines() for name in bodies.FILES}


def flights(line: str) -> list[dict[str, Any]]:
    body = json.loads(line)
    assert list(body) == ["flights"]
    result: list[dict[str, Any]] = body["flights"]
    return result


def data_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_counts_and_distinct_bodies(data: Path, tmp_path: Path) -> None:
    files = generate(data, tmp_path / "wrk")
    assert [len(files[name]) for name in bodies.FILES] == [150, 150, 4, 4]
    for lines in files.values():
        assert len(set(lines)) == len(lines)
    assert all(len(flights(line)) == 1 for line in files["minimal.jsonl"] + files["full.jsonl"])
    for line in files["batch.jsonl"]:
        batch = flights(line)
        assert len(batch) == 50
        assert len({json.dumps(flight) for flight in batch}) == 50
    for line in files["batch-minimal.jsonl"]:
        batch = flights(line)
        assert len(batch) == 50
        assert all(set(flight) == {"OPERA", "TIPOVUELO", "MES"} for flight in batch)


def test_minimal_bodies_are_real_flights_with_the_scheduled_month(
    data: Path, tmp_path: Path
) -> None:
    triples = {(r["OPERA"], r["TIPOVUELO"], int(r["Fecha-I"][5:7])) for r in data_rows(data)}
    for line in generate(data, tmp_path / "wrk")["minimal.jsonl"]:
        (flight,) = flights(line)
        assert set(flight) == {"OPERA", "TIPOVUELO", "MES"}
        assert type(flight["MES"]) is int
        assert (flight["OPERA"], flight["TIPOVUELO"], flight["MES"]) in triples


def test_full_bodies_are_real_rows_with_mes_from_fecha_i(data: Path, tmp_path: Path) -> None:
    fields = ("OPERA", "TIPOVUELO", "Fecha-I", "Des-I", "Emp-I", "Vlo-I")
    rows = {tuple(r[field] for field in fields) for r in data_rows(data)}
    files = generate(data, tmp_path / "wrk")
    for line in files["full.jsonl"] + files["batch.jsonl"]:
        for flight in flights(line):
            assert list(flight) == ["OPERA", "TIPOVUELO", "MES", "Fecha-I", "Des-I", "Emp-I",
                                    "Vlo-I"]  # fmt: skip
            assert flight["MES"] == int(flight["Fecha-I"][5:7])
            assert type(flight["Vlo-I"]) is str  # "0107" keeps its zero
            assert tuple(flight[field] for field in fields) in rows


def test_same_seed_same_bytes(data: Path, tmp_path: Path) -> None:
    first = generate(data, tmp_path / "a", seed=5)
    assert generate(data, tmp_path / "b", seed=5) == first
    assert generate(data, tmp_path / "c", seed=6) != first


def test_asking_for_more_distinct_bodies_than_exist_fails(data: Path, tmp_path: Path) -> None:
    rows = bodies.read_rows(data)
    with pytest.raises(ValueError, match="distinct minimal bodies"):
        bodies.minimal_bodies(rows, 10_000, random.Random(0))
    with pytest.raises(ValueError, match="distinct flights"):
        bodies.full_bodies(rows, 10_000, random.Random(0))
    status = bodies.main(["--data", str(data), "--out", str(tmp_path / "x"), "--count", "10000"])
    assert status == 1
    assert not (tmp_path / "x").exists()


def test_cli_writes_the_three_files(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "wrk"
    argv = ["--data", str(data), "--out", str(out), "--count", "20", "--batch", "10"]
    assert bodies.main(argv) == 0
    assert sorted(path.name for path in out.iterdir()) == sorted(bodies.FILES)


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("Fecha-I,OPERA\n2017-01-01 10:00:00,Iberia\n", encoding="utf-8")
    with pytest.raises(ValueError, match="Vlo-I"):
        bodies.read_rows(path)

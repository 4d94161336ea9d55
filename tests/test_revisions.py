"""benchmarks.revisions: the order in which a round measures the revisions, and what its report
records (no worktree, no timing: both are replaced here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks import revisions
from benchmarks.revisions import round_order
from train import provenance


def test_each_revision_takes_each_position_once_over_as_many_rounds() -> None:
    revisions = ["a", "b", "c"]
    orders = [round_order(revisions, number) for number in range(1, 4)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    for position in range(3):
        assert sorted(order[position] for order in orders) == revisions


@pytest.mark.parametrize("number", [1, 2, 7])
def test_every_round_measures_every_revision_once(number: int) -> None:
    assert sorted(round_order(["x", "y"], number)) == ["x", "y"]


def test_the_load_average_before_and_the_date_are_read_before_the_first_round(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The report says "load average before": a reading taken once every round has run is the
    load the benchmark itself made, not the one it started in."""
    measured: list[str] = []

    def measure(path: Path, body: str, flights: int) -> float:
        measured.append(path.name)
        return 40.0

    monkeypatch.setattr(
        revisions, "load_average", lambda: "9.90 9.80 9.70" if measured else "0.10 0.20 0.30"
    )
    monkeypatch.setattr(revisions, "worktree", lambda revision: tmp_path / revision)
    monkeypatch.setattr(revisions, "measure", measure)
    out = tmp_path / "report.md"
    assert revisions.main(["aaa", "bbb", "--rounds", "2", "--out", str(out)]) == 0
    assert measured == ["aaa", "bbb", "bbb", "aaa"]
    assert "load average before: 0.10 0.20 0.30;" in out.read_text(encoding="utf-8")


def test_the_report_names_the_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Timings of two revisions are comparable with each other, not with another machine's: the
    report says which CPU they ran on (it named none until the forty-seventh session)."""
    monkeypatch.setattr(provenance, "machine", lambda: ("Linux vm", "AMD EPYC", 2))
    monkeypatch.setattr(revisions, "worktree", lambda revision: tmp_path / revision)
    monkeypatch.setattr(revisions, "measure", lambda path, body, flights: 40.0)
    out = tmp_path / "report.md"
    assert revisions.main(["aaa", "bbb", "--rounds", "1", "--out", str(out)]) == 0
    assert re.search(
        r"\d\d:\d\d UTC, on 2 cores of AMD EPYC, load average before: ", out.read_text()
    )

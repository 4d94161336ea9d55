from __future__ import annotations

from pathlib import Path

import numpy as np

from train.data import load
from train.evaluate import FOLDS, evaluate_contract, grouped_folds


def test_folds_never_split_a_day() -> None:
    dates = np.array([f"2017-01-{day:02d}" for day in range(1, 31) for _ in range(7)])
    folds = grouped_folds(dates)
    assert len(folds) == FOLDS
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested) == list(range(len(dates)))
    for train, test in folds:
        assert not set(dates[train]) & set(dates[test])


def test_evaluation_finds_the_signal_and_beats_chance(synthetic_csv: Path) -> None:
    from dataclasses import replace

    from train.candidates import CANDIDATES

    dataset = load(synthetic_csv)
    quick = [replace(c, grid=c.grid[:1]) for c in CANDIDATES]
    months = dataset.table["Fecha-I"].dt.month.to_numpy()
    evaluation = evaluate_contract(
        "full", dataset.flights(True), dataset.labels, dataset.dates, months, quick
    )
    assert [r.name for r in evaluation.results] == ["baseline-logreg", "logreg", "hgb"]
    assert evaluation.chosen.cv.roc_auc > 0.6  # airline and hour carry the synthetic delays
    assert evaluation.chosen.cv.roc_auc >= max(r.cv.roc_auc for r in evaluation.results) - 1e-4
    assert set(evaluation.importance) == set(evaluation.features)
    assert max(evaluation.importance, key=lambda f: evaluation.importance[f][0]) in {
        "OPERA",
        "Emp-I",
        "hour",
        "Emp-I+Vlo-I",
    }

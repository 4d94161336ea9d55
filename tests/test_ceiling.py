from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from train.ceiling import cell_ceiling
from train.evaluate import Encoded, forward_folds

FEATURES = ("OPERA", "TIPOVUELO", "MES")


def _splits(seed: int = 0) -> tuple[list[Encoded], np.ndarray, np.ndarray]:
    """Eight months of six airlines x two flight types whose delay rates drift month by month."""
    rng = np.random.default_rng(seed)
    months = np.repeat([f"2017-{m:02d}" for m in range(1, 9)], 600)
    month = np.repeat(np.arange(1, 9), 600)
    cells = np.column_stack([rng.integers(0, 6, len(months)), rng.integers(0, 2, len(months))])
    drift = rng.normal(0, 0.08, size=(9, 6, 2))
    rate = np.clip(0.1 + 0.04 * cells[:, 0] + drift[month, cells[:, 0], cells[:, 1]], 0.01, 0.9)
    labels = (rng.random(len(months)) < rate).astype(np.int64)
    matrix = np.column_stack([cells, month]).astype(np.float32)
    days = np.array([f"{m}-{1 + i % 28:02d}" for i, m in enumerate(months)])
    splits = [
        Encoded(fold, matrix[fold.train_rows], matrix[fold.test_rows], FEATURES)
        for fold in forward_folds(months)
    ]
    return splits, labels, days


def _rates(cells: np.ndarray, labels: np.ndarray) -> dict[tuple[float, float], float]:
    keys = [tuple(row) for row in cells.tolist()]
    return {key: float(labels[[k == key for k in keys]].mean()) for key in set(keys)}


def test_each_cell_is_scored_by_its_rate_before_the_month_and_in_it() -> None:
    splits, labels, days = _splits()
    ceiling = cell_ceiling(labels, days, splits)
    for k, split in enumerate(splits):
        test_cells = split.test[:, :2]
        before = _rates(split.train[:, :2], labels[split.fold.train_rows])
        itself = _rates(test_cells, labels[split.fold.test_rows])
        cells = [tuple(row) for row in test_cells.tolist()]
        np.testing.assert_allclose(ceiling.earlier.probabilities[k], [before[c] for c in cells])
        np.testing.assert_allclose(ceiling.own_month.probabilities[k], [itself[c] for c in cells])


def test_no_function_of_the_cells_ranks_a_month_better_than_its_own_rates() -> None:
    splits, labels, days = _splits(seed=1)
    ceiling = cell_ceiling(labels, days, splits)
    rng = np.random.default_rng(2)
    for k, split in enumerate(splits):
        month_labels = labels[split.fold.test_rows]
        best = roc_auc_score(month_labels, ceiling.own_month.probabilities[k])
        assert best >= roc_auc_score(month_labels, ceiling.earlier.probabilities[k])
        for _ in range(20):
            score_of_cell = rng.random((6, 2))
            cells = split.test[:, :2].astype(int)
            scores = score_of_cell[cells[:, 0], cells[:, 1]]
            assert best >= roc_auc_score(month_labels, scores) - 1e-12

"""How far any model of the minimal contract can rank a forward month's flights.

Within a test month `MES` is constant, so every model of the minimal contract, the baseline
included, ranks that month's flights by a function of their OPERA x TIPOVUELO cell alone (the
cells as the fold's encoder codes them). A fully grown tree on the two codes scores each cell by
its delay rate: fitted on the earlier months, it is the most flexible forward model of the
contract; fitted on the month's own flights, it has seen the labels it is scored on, a ceiling
that no function of the cells can pass on that month (ROC-AUC of a partition is largest when its
cells are ranked by their own rates). Reported, never chosen on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from sklearn.tree import DecisionTreeClassifier

from train.evaluate import Encoded, Forward, Recipe, run_forward

CELLS = ("OPERA", "TIPOVUELO")
SEED = 0


def cell_rates(features: tuple[str, ...], params: dict[str, Any]) -> DecisionTreeClassifier:
    """Grown until no split separates anything: each leaf holds cells of one delay rate, and
    its probability is that rate."""
    return DecisionTreeClassifier(random_state=SEED)


EARLIER = Recipe("cell-rates", cell_rates, {}, CELLS)
OWN_MONTH = replace(EARLIER, candidate="cell-rates-of-the-month")


@dataclass(frozen=True)
class Ceiling:
    earlier: Forward
    """each cell scored by its delay rate in the months before the one scored"""
    own_month: Forward
    """each cell scored by its delay rate in the month scored itself: unreachable"""


def cell_ceiling(labels: np.ndarray, days: np.ndarray, encoded: Sequence[Encoded]) -> Ceiling:
    earlier = run_forward(EARLIER, labels, days, encoded, None)
    own = [_fitted_on_itself(split, labels) for split in encoded]
    return Ceiling(
        earlier, Forward(OWN_MONTH, earlier.folds, earlier.labels, own, earlier.days, None, 0.0)
    )


def _fitted_on_itself(split: Encoded, labels: np.ndarray) -> np.ndarray:
    cells = split.test[:, split.columns(CELLS)]
    model = cell_rates(CELLS, {}).fit(cells, labels[split.fold.test_rows])
    probabilities: np.ndarray = model.predict_proba(cells)[:, 1]
    return probabilities

"""Scores of a probabilistic classifier, and the rule that turns it into labels."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    roc_auc_score,
)

CALIBRATION_BINS = 10


@dataclass(frozen=True)
class Scores:
    roc_auc: float
    pr_auc: float
    brier: float
    ece: float
    threshold: float
    accuracy: float
    precision: float
    recall: float
    f1: float
    confusion: list[list[int]]
    """[[true negatives, false positives], [false negatives, true positives]]"""

    def to_json(self) -> dict[str, Any]:
        return {key: _rounded(value) for key, value in asdict(self).items()}


def alert_as_many_as_delayed(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The probability above which as many flights are alerted as were delayed.

    On the rows it is fitted on, precision equals recall when the scores are distinct; a model
    with few distinct scores (the minimal one: one per airline x flight type) has the quantile
    fall inside a tied cell, alerted whole (`>=`): it alerts about twice as many flights as were
    delayed (reports/model.md's month tables). Unlike the F1-best threshold, which
    sits in the dense middle of the scores (a small shift of a month's scores then flips half
    its flights), this one sits in the upper tail, so a month's alert rate follows its risk.
    """
    return float(np.quantile(probabilities, 1 - labels.mean()))


@dataclass(frozen=True)
class Platt:
    """p -> sigmoid(a * logit(p) + b): a monotone map, so rankings and alerts do not change."""

    a: float = 1.0
    b: float = 0.0

    @classmethod
    def fit(cls, labels: np.ndarray, probabilities: np.ndarray) -> Platt:
        model = LogisticRegression(C=1e6).fit(_logit(probabilities).reshape(-1, 1), labels)
        return cls(float(model.coef_[0, 0]), float(model.intercept_[0]))

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        return np.asarray(1 / (1 + np.exp(-(self.a * _logit(probabilities) + self.b))))


def _logit(probabilities: np.ndarray) -> np.ndarray:
    clipped = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.asarray(np.log(clipped / (1 - clipped)))


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean |observed rate - predicted probability| over equal-width bins, weighted by rows."""
    bins = np.minimum((probabilities * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    error = 0.0
    for k in range(CALIBRATION_BINS):
        inside = bins == k
        if inside.any():
            error += inside.mean() * abs(labels[inside].mean() - probabilities[inside].mean())
    return float(error)


def score(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> Scores:
    predicted = (probabilities >= threshold).astype(np.int64)
    (tn, fp), (fn, tp) = confusion_matrix(labels, predicted, labels=[0, 1])
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return Scores(
        roc_auc=float(roc_auc_score(labels, probabilities)),
        pr_auc=float(average_precision_score(labels, probabilities)),
        brier=float(brier_score_loss(labels, probabilities)),
        ece=expected_calibration_error(labels, probabilities),
        threshold=float(threshold),
        accuracy=float((predicted == labels).mean()),
        precision=float(precision),
        recall=float(recall),
        f1=float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0,
        confusion=[[int(tn), int(fp)], [int(fn), int(tp)]],
    )


def _rounded(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value

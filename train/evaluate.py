"""Model selection on folds grouped by calendar date, plus a time-ordered holdout.

Flights of one day share weather and airport congestion; a random split puts the same day in
train and test and flatters every model. The encoder is fitted inside each fold, so a
category's delay rate never comes from the rows it is tested on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.inspection import permutation_importance
from sklearn.model_selection import GroupKFold

from app.features import FeatureEncoder
from app.flights import Flight
from train.candidates import CANDIDATES, CONTRACT_FEATURES, SEED, Candidate
from train.metrics import Scores, best_f1_threshold, score

FOLDS = 5
HOLDOUT_FROM_MONTH = 11
"""Time-ordered holdout: train on January-October, test on November-December."""


@dataclass(frozen=True)
class EncodedSplit:
    train_rows: np.ndarray
    test_rows: np.ndarray
    train: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class CandidateResult:
    name: str
    description: str
    params: dict[str, Any]
    out_of_fold: np.ndarray
    cv: Scores
    holdout: Scores
    fit_seconds: float
    """Mean wall time of one fit on a training fold (2-core machine)."""
    search: list[tuple[dict[str, Any], float]]
    """Every configuration tried, with its out-of-fold ROC-AUC."""


@dataclass(frozen=True)
class ContractEvaluation:
    contract: str
    features: tuple[str, ...]
    labels: np.ndarray
    results: list[CandidateResult]
    importance: dict[str, tuple[float, float]]
    """Chosen model: permutation importance (mean, std of ROC-AUC drop) on the first fold."""

    @property
    def chosen(self) -> CandidateResult:
        """Highest out-of-fold ROC-AUC; Brier score breaks a tie."""
        return max(self.results, key=lambda r: (round(r.cv.roc_auc, 4), -r.cv.brier))

    @property
    def baseline(self) -> CandidateResult:
        return self.results[0]


def grouped_folds(dates: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    splitter = GroupKFold(n_splits=FOLDS, shuffle=True, random_state=SEED)
    return list(splitter.split(np.zeros(len(dates)), groups=dates))


def encode_split(
    flights: Sequence[Flight],
    labels: np.ndarray,
    train_rows: np.ndarray,
    test_rows: np.ndarray,
    schedule: bool,
) -> EncodedSplit:
    train_flights = [flights[i] for i in train_rows]
    encoder = FeatureEncoder.fit(train_flights, labels[train_rows].tolist(), schedule)
    return EncodedSplit(
        train_rows,
        test_rows,
        encoder.encode(train_flights),
        encoder.encode([flights[i] for i in test_rows]),
    )


def evaluate_contract(
    contract: str,
    flights: Sequence[Flight],
    labels: np.ndarray,
    dates: np.ndarray,
    months: np.ndarray,
    candidates: Sequence[Candidate] = CANDIDATES,
) -> ContractEvaluation:
    schedule = contract == "full"
    features = CONTRACT_FEATURES[contract]
    splits = [encode_split(flights, labels, tr, te, schedule) for tr, te in grouped_folds(dates)]
    holdout = encode_split(
        flights,
        labels,
        np.flatnonzero(months < HOLDOUT_FROM_MONTH),
        np.flatnonzero(months >= HOLDOUT_FROM_MONTH),
        schedule,
    )
    results = [_evaluate(candidate, features, labels, splits, holdout) for candidate in candidates]
    evaluation = ContractEvaluation(contract, features, labels, results, {})
    chosen = evaluation.chosen
    model = _candidate(chosen.name, candidates).build(features, chosen.params)
    first = splits[0]
    model.fit(first.train, labels[first.train_rows])
    importance = permutation_importance(
        model,
        first.test,
        labels[first.test_rows],
        scoring="roc_auc",
        n_repeats=5,
        random_state=SEED,
    )
    evaluation.importance.update(
        {
            name: (float(mean), float(std))
            for name, mean, std in zip(
                features, importance.importances_mean, importance.importances_std, strict=True
            )
        }
    )
    return evaluation


def _evaluate(
    candidate: Candidate,
    features: tuple[str, ...],
    labels: np.ndarray,
    splits: list[EncodedSplit],
    holdout: EncodedSplit,
) -> CandidateResult:
    search = []
    best: tuple[float, dict[str, Any], np.ndarray, float] | None = None
    for params in candidate.grid:
        model = candidate.build(features, params)
        out_of_fold, seconds = cross_validate(model, labels, splits)
        auc = score(labels, out_of_fold, 0.5).roc_auc
        search.append((params, auc))
        if best is None or auc > best[0]:
            best = (auc, params, out_of_fold, seconds)
    assert best is not None
    _, params, out_of_fold, seconds = best
    threshold = best_f1_threshold(labels, out_of_fold)
    model = candidate.build(features, params).fit(holdout.train, labels[holdout.train_rows])
    holdout_probabilities = model.predict_proba(holdout.test)[:, 1]
    return CandidateResult(
        candidate.name,
        candidate.description,
        params,
        out_of_fold,
        score(labels, out_of_fold, threshold),
        score(labels[holdout.test_rows], holdout_probabilities, threshold),
        seconds,
        search,
    )


def cross_validate(
    model: Any, labels: np.ndarray, splits: list[EncodedSplit]
) -> tuple[np.ndarray, float]:
    out_of_fold = np.zeros(len(labels))
    seconds = 0.0
    for split in splits:
        fold_model = clone(model)
        start = time.perf_counter()
        fold_model.fit(split.train, labels[split.train_rows])
        seconds += time.perf_counter() - start
        out_of_fold[split.test_rows] = fold_model.predict_proba(split.test)[:, 1]
    return out_of_fold, seconds / len(splits)


def _candidate(name: str, candidates: Sequence[Candidate]) -> Candidate:
    return next(candidate for candidate in candidates if candidate.name == name)

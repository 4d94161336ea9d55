"""Forward-in-time evaluation: every model is judged on months it was not trained on.

A served model scores flights that have not happened yet, so the yardstick is an expanding
window: train on every month before month k, test on month k. Flights of one day share weather
and congestion, so intervals come from a bootstrap over days, not single flights. Encodings
(rate tables, holiday calendar) are fitted inside each fold, on its training months only, and
the decision threshold of month k comes from the forward predictions of the months before k.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats
from sklearn import config_context
from sklearn.base import BaseEstimator, clone
from sklearn.ensemble import VotingClassifier
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline

from app.inference.features import FeatureEncoder, feature_names, take
from app.inference.flights import Columns
from train.data import DataError
from train.metrics import (
    Platt,
    Scores,
    alert_as_many_as_delayed,
    expected_calibration_error,
    score,
)

MIN_MONTHS = 4
FIRST_TEST_MONTH = 6
"""The first forward test month is the 6th month present (earlier with less data)."""
INNER_FOLDS = 5
"""Out-of-fold rate encoding of training rows: folds of whole weeks (WEEKS)."""
WEEKS = "weeks of Thursday to Wednesday"
"""The weeks numpy's datetime64[W] makes, which the inner folds and the week-grouped CV keep
together: numpy counts them from 1970-01-01, a Thursday, so they are not ISO weeks (Monday to
Sunday)."""
CV_FOLDS = 5
BOOTSTRAP = 300
SEED = 0

Log = Callable[[str], None]


def _quiet(message: str) -> None:
    """The default log: say nothing."""


@dataclass(frozen=True)
class Fold:
    name: str
    """the tested month, YYYY-MM (or the holdout's first and last)"""
    train_rows: np.ndarray
    test_rows: np.ndarray
    role: str
    """warm-up (gives the first threshold), select (chooses models), report (judges them)"""
    train_age: np.ndarray
    """per training row: months from its month to the first tested month (1 = the month before)"""


def month_keys(departure: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(departure.astype("datetime64[M]"))


def month_ages(months: np.ndarray, rows: np.ndarray, reference: str) -> np.ndarray:
    """Months from each row's month (YYYY-MM) to `reference`: 1 for the month before it."""

    ages: np.ndarray = (
        np.datetime64(reference, "M") - months[rows].astype("datetime64[M]")
    ).astype(np.int64)
    return ages


def next_month(months: np.ndarray) -> str:
    """The month after the last one present: what a model fitted on every row will score."""
    last = np.array(sorted(set(months.tolist()))[-1], dtype="datetime64[M]")
    return str(last + 1)


def ages_after(months: np.ndarray) -> np.ndarray:
    """Every row's age counted to the month after the data: the served model's first month."""
    return month_ages(months, np.arange(len(months)), next_month(months))


def recency_weights(ages: np.ndarray, half_life: float) -> np.ndarray:
    """Airline and route delay rates drift: a training row weighs half as much every
    `half_life` months before the month scored (the month before it weighs 1)."""
    weights: np.ndarray = 0.5 ** ((ages - 1) / half_life)
    return weights


def forward_folds(months: np.ndarray) -> list[Fold]:
    """Expanding window: test each month from the 6th on, train on all months before it.

    The first half of the tested months chooses hyperparameters and feature groups, the second
    half only reports; one extra month before them only supplies the first threshold.
    """
    present = sorted(set(months.tolist()))
    if len(present) < MIN_MONTHS:
        raise DataError(
            f"the data covers {len(present)} month(s) ({', '.join(present)}); the forward "
            f"evaluation needs at least {MIN_MONTHS}"
        )
    first = min(FIRST_TEST_MONTH - 1, len(present) - 2)
    selecting = (len(present) - first) // 2
    folds = []
    for k in range(first - 1, len(present)):
        role = "warm-up" if k < first else "select" if k < first + selecting else "report"
        train = np.flatnonzero(months < present[k])
        folds.append(
            Fold(
                present[k],
                train,
                np.flatnonzero(months == present[k]),
                role,
                month_ages(months, train, present[k]),
            )
        )
    return folds


def holdout_fold(months: np.ndarray) -> Fold:
    """Train on everything before the last two months present, test on those two."""
    present = sorted(set(months.tolist()))
    start = present[-2]
    train = np.flatnonzero(months < start)
    return Fold(
        f"{start}..{present[-1]}",
        train,
        np.flatnonzero(months >= start),
        "holdout",
        month_ages(months, train, start),
    )


def grouped_folds(groups: np.ndarray, months: np.ndarray) -> list[Fold]:
    """CV folds that keep each group (a date, a week) on one side; reported, never chosen on.
    Row ages count to the month after the data, as for the model fitted on every row."""
    splitter = GroupKFold(n_splits=CV_FOLDS, shuffle=True, random_state=SEED)
    ages = ages_after(months)
    return [
        Fold(f"cv{i + 1}", train, test, "cv", ages[train])
        for i, (train, test) in enumerate(splitter.split(np.zeros(len(groups)), groups=groups))
    ]


@dataclass(frozen=True)
class Encoded:
    """One fold's matrices, every feature group of the contract."""

    fold: Fold
    train: np.ndarray
    test: np.ndarray
    features: tuple[str, ...]

    def columns(self, groups: Sequence[str]) -> list[int]:
        return [self.features.index(name) for name in feature_names(groups)]


def encode_fold(
    columns: Columns,
    labels: np.ndarray,
    fold: Fold,
    groups: Sequence[str],
    holidays: np.ndarray | None,
) -> Encoded:
    train_columns = take(columns, fold.train_rows)
    train_labels = labels[fold.train_rows]
    encoder = FeatureEncoder.fit(train_columns, train_labels, groups, holidays)
    return Encoded(
        fold,
        encoder.encode_training(train_columns, train_labels, inner_folds(train_columns)),
        encoder.encode_columns(take(columns, fold.test_rows)),
        encoder.feature_names,
    )


def inner_folds(columns: Columns) -> np.ndarray:
    """Fold id per row by week (WEEKS; rows of a week share weather), or by row if unscheduled."""
    if columns.departure is None:
        return np.arange(len(columns)) % INNER_FOLDS
    weeks = columns.departure.astype("datetime64[W]").astype(np.int64)
    return weeks % INNER_FOLDS


@dataclass(frozen=True)
class Recipe:
    """What to fit: a candidate, its parameters and its feature groups."""

    candidate: str
    build: Callable[[tuple[str, ...], dict[str, Any]], Any]
    params: dict[str, Any]
    groups: tuple[str, ...]
    half_life: float | None = None
    """recency weighting of the training rows, in months (None: every row weighs the same)"""

    @property
    def label(self) -> str:
        recency = "" if self.half_life is None else f", half-life {self.half_life:g} months"
        return f"{self.candidate}({_arguments(self.params) or 'defaults'}{recency})"

    def fit(self, features: np.ndarray, labels: np.ndarray, ages: np.ndarray) -> Any:
        """A fresh estimator fitted on the rows, weighted by recency if the recipe says so."""
        model = clone(self.build(feature_names(self.groups), self.params))
        if self.half_life is None:
            return model.fit(features, labels)
        return fit_weighted(model, features, labels, recency_weights(ages, self.half_life))


def _arguments(params: dict[str, Any]) -> str:
    """key=value, ...; a blend's components as name(key=value, ...) + name(...)."""
    if params and all(isinstance(value, dict) for value in params.values()):
        return " + ".join(f"{name}({_arguments(value)})" for name, value in params.items())
    return ", ".join(f"{key}={value}" for key, value in params.items())


def fit_weighted(model: Any, features: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> Any:
    """Sample weights reach each classifier only (the last step of a pipeline, every member of
    a blend), never the encoders before it, through scikit-learn's metadata routing: a
    VotingClassifier cannot hand them to a pipeline member otherwise."""
    members = [m for _, m in model.estimators] if isinstance(model, VotingClassifier) else [model]
    classifiers = [m.steps[-1][1] if isinstance(m, Pipeline) else m for m in members]
    with config_context(enable_metadata_routing=True):
        for part in [model, *model.get_params(deep=True).values()]:
            if isinstance(part, BaseEstimator) and hasattr(part, "set_fit_request"):
                part.set_fit_request(sample_weight=any(part is c for c in classifiers))
        return model.fit(features, labels, sample_weight=weights)


@dataclass(frozen=True)
class MonthScores:
    month: str
    role: str
    rows: int
    roc_auc: float
    delay_rate: float
    alert_rate: float
    precision: float
    recall: float
    ece: float
    threshold: float


@dataclass(frozen=True)
class HoldoutRows:
    """The holdout's flights: labels, raw probabilities, scheduled days (the bootstrap's unit)."""

    labels: np.ndarray
    probabilities: np.ndarray
    days: np.ndarray


@dataclass
class Forward:
    """One recipe's forward predictions, month by month, and the holdout's."""

    recipe: Recipe
    folds: list[Fold]
    labels: list[np.ndarray]
    probabilities: list[np.ndarray]
    days: list[np.ndarray]
    holdout: Scores | None
    fit_seconds: float
    holdout_months: str = ""
    """the holdout's first and last month, YYYY-MM..YYYY-MM"""
    holdout_rows: HoldoutRows | None = None
    """the holdout's labels, raw probabilities and days, for its interval"""
    months: list[MonthScores] = field(default_factory=list)
    calibrated: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Each month's probabilities calibrated by a Platt map fitted on the months before it
        (the first month stays raw), then scored at the threshold of the months before it."""
        self.calibrated = [self.probabilities[0]] + [
            self.platt_before(k).apply(self.probabilities[k]) for k in range(1, len(self.folds))
        ]
        for k, fold in enumerate(self.folds):
            if fold.role == "warm-up":
                continue
            raw_threshold = self.threshold_before(k)
            labels, probabilities = self.labels[k], self.calibrated[k]
            threshold = float(self.platt_before(k).apply(np.array(raw_threshold)))
            scores = score(labels, probabilities, threshold)
            alerts = self.probabilities[k] >= raw_threshold
            self.months.append(
                MonthScores(
                    fold.name,
                    fold.role,
                    len(labels),
                    scores.roc_auc,
                    float(labels.mean()),
                    float(alerts.mean()),
                    scores.precision,
                    scores.recall,
                    scores.ece,
                    threshold,
                )
            )

    def platt_before(self, k: int) -> Platt:
        """The calibration, fitted on the raw forward predictions of the months before fold k."""
        return Platt.fit(np.concatenate(self.labels[:k]), np.concatenate(self.probabilities[:k]))

    @property
    def platt(self) -> Platt:
        """For the served model: fitted on every forward month."""
        return self.platt_before(len(self.folds))

    def threshold_before(self, k: int) -> float:
        """The threshold rule, fitted on the forward predictions of the months before fold k."""
        return alert_as_many_as_delayed(
            np.concatenate(self.labels[:k]), np.concatenate(self.probabilities[:k])
        )

    @property
    def threshold(self) -> float:
        """For the served (calibrated) model: both fitted on every forward month."""
        return float(self.platt.apply(np.array(self.threshold_before(len(self.folds)))))

    def mean_auc(self, roles: Sequence[str]) -> float:
        return float(np.mean([m.roc_auc for m in self.months if m.role in roles]))

    def pooled(self, roles: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        chosen = [k for k, fold in enumerate(self.folds) if fold.role in roles]
        return (
            np.concatenate([self.labels[k] for k in chosen]),
            np.concatenate([self.calibrated[k] for k in chosen]),
        )

    def ece(self, roles: Sequence[str]) -> float:
        return expected_calibration_error(*self.pooled(roles))

    def holdout_interval(self, replicates: int = BOOTSTRAP) -> tuple[float, float] | None:
        """95 % interval of the holdout's ROC-AUC, its days resampled (as each forward month's
        are): a goal on the holdout is judged on it, not on the single split's figure."""
        if self.holdout_rows is None:
            return None
        rows = self.holdout_rows
        draws = day_bootstrap_aucs(
            rows.labels, rows.probabilities, rows.days, np.random.default_rng(SEED), replicates
        )
        return interval(draws)


def run_forward(
    recipe: Recipe,
    labels: np.ndarray,
    days: np.ndarray,
    encoded: Sequence[Encoded],
    holdout: Encoded | None,
    log: Log = _quiet,
) -> Forward:
    """Fits the recipe on each fold's training months and predicts its test month."""
    fold_labels, fold_probabilities, fold_days = [], [], []
    seconds = 0.0
    for i, split in enumerate(encoded):
        log(f"  {recipe.label}: fold {i + 1}/{len(encoded)} (test {split.fold.name})")
        probabilities, elapsed = fit_predict(recipe, labels, split)
        seconds += elapsed
        fold_labels.append(labels[split.fold.test_rows])
        fold_probabilities.append(probabilities)
        fold_days.append(days[split.fold.test_rows])
    folds = [split.fold for split in encoded]
    holdout_scores = None
    holdout_rows = None
    if holdout is not None:
        log(f"  {recipe.label}: holdout {holdout.fold.name}")
        probabilities, _ = fit_predict(recipe, labels, holdout)
        earlier = [
            k for k, fold in enumerate(folds) if fold.name < holdout.fold.name.split("..")[0]
        ]
        earlier_labels = np.concatenate([fold_labels[k] for k in earlier])
        earlier_probabilities = np.concatenate([fold_probabilities[k] for k in earlier])
        platt = Platt.fit(earlier_labels, earlier_probabilities)
        threshold = alert_as_many_as_delayed(earlier_labels, earlier_probabilities)
        holdout_scores = score(
            labels[holdout.fold.test_rows],
            platt.apply(probabilities),
            float(platt.apply(np.array(threshold))),
        )
        holdout_rows = HoldoutRows(
            labels[holdout.fold.test_rows], probabilities, days[holdout.fold.test_rows]
        )
    return Forward(
        recipe,
        folds,
        fold_labels,
        fold_probabilities,
        fold_days,
        holdout_scores,
        seconds / len(encoded),
        "" if holdout is None else holdout.fold.name,
        holdout_rows,
    )


def fit_predict(recipe: Recipe, labels: np.ndarray, split: Encoded) -> tuple[np.ndarray, float]:
    columns = split.columns(recipe.groups)
    start = time.perf_counter()
    model = recipe.fit(split.train[:, columns], labels[split.fold.train_rows], split.fold.train_age)
    elapsed = time.perf_counter() - start
    probabilities: np.ndarray = model.predict_proba(split.test[:, columns])[:, 1]
    return probabilities, elapsed


def cross_validated(recipe: Recipe, labels: np.ndarray, encoded: Sequence[Encoded]) -> Scores:
    """Out-of-fold scores of grouped CV (threshold: `alert_as_many_as_delayed` on those same
    predictions)."""
    out_of_fold = np.zeros(len(labels))
    for split in encoded:
        out_of_fold[split.fold.test_rows] = fit_predict(recipe, labels, split)[0]
    return score(labels, out_of_fold, alert_as_many_as_delayed(labels, out_of_fold))


def bootstrap_means(
    forwards: Sequence[Forward], roles: Sequence[str], replicates: int = BOOTSTRAP
) -> np.ndarray:
    """[replicate, forward]: mean monthly ROC-AUC with each month's days resampled.

    Every forward sees the same resampled days, so differences between columns are paired.
    """
    rng = np.random.default_rng(SEED)
    reference = forwards[0]
    chosen = [k for k, fold in enumerate(reference.folds) if fold.role in roles]
    totals = np.zeros((replicates, len(forwards)))
    for k in chosen:
        unique_days, day_index = np.unique(reference.days[k], return_inverse=True)
        draws = rng.integers(0, len(unique_days), size=(replicates, len(unique_days)))
        weights = np.stack([np.bincount(draw, minlength=len(unique_days)) for draw in draws])
        row_weights = weights[:, day_index]
        for j, forward in enumerate(forwards):
            totals[:, j] += _weighted_aucs(forward.labels[k], forward.probabilities[k], row_weights)
    means: np.ndarray = totals / len(chosen)
    return means


def day_bootstrap_aucs(
    labels: np.ndarray,
    probabilities: np.ndarray,
    days: np.ndarray,
    rng: np.random.Generator,
    replicates: int = BOOTSTRAP,
) -> np.ndarray:
    """ROC-AUC of one set of flights under `replicates` resamplings of its days."""
    unique_days, day_index = np.unique(days, return_inverse=True)
    draws = rng.integers(0, len(unique_days), size=(replicates, len(unique_days)))
    weights = np.stack([np.bincount(draw, minlength=len(unique_days)) for draw in draws])
    return _weighted_aucs(labels, probabilities, weights[:, day_index])


def interval(values: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def months_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95 % t-interval with each month one observation. The day bootstrap holds the
    months fixed, and ROC-AUC varies more from month to month than its resampled days show (an
    audit: 1.6 times the day bootstrap's width for the served full model), so a goal is judged
    against both."""
    sample = np.asarray(values, dtype=float)
    half = stats.t.ppf(0.975, len(sample) - 1) * sample.std(ddof=1) / np.sqrt(len(sample))
    mean = float(sample.mean())
    return mean, mean - float(half), mean + float(half)


def _weighted_aucs(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC under each row of `weights` (ties count half), in one pass per replicate."""
    _, rank = np.unique(scores, return_inverse=True)
    size = rank.max() + 1
    aucs = np.empty(len(weights))
    for r, w in enumerate(weights):
        positive = np.bincount(rank, w * labels, minlength=size)
        negative = np.bincount(rank, w * (1 - labels), minlength=size)
        below = np.cumsum(negative) - negative
        aucs[r] = np.sum(positive * (below + negative / 2)) / (positive.sum() * negative.sum())
    return aucs

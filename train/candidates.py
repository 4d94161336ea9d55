"""The models we compare. Each is a scikit-learn estimator over the encoded matrix of
`app.features`, so whichever wins exports to ONNX as it is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import KBinsDiscretizer, OneHotEncoder

from app.features import FULL_FEATURES, MINIMAL_FEATURES

SEED = 0
CATEGORICAL = ("OPERA", "TIPOVUELO", "MES", "Des-I", "Emp-I", "Emp-I+Vlo-I", "weekday")
BINNED = {"hour": 24, "day_of_year": 26, "day": 6}
"""Numbers a linear model can only use as one-hot bins (skl2onnx has no spline converter)."""

HGB_GRID: tuple[dict[str, Any], ...] = (
    {"learning_rate": 0.1, "max_iter": 200, "max_leaf_nodes": 31, "min_samples_leaf": 20},
    {
        "learning_rate": 0.05,
        "max_iter": 600,
        "max_leaf_nodes": 31,
        "min_samples_leaf": 50,
        "l2_regularization": 1.0,
    },
    {
        "learning_rate": 0.05,
        "max_iter": 400,
        "max_leaf_nodes": 63,
        "min_samples_leaf": 30,
        "l2_regularization": 1.0,
    },
    {
        "learning_rate": 0.05,
        "max_iter": 600,
        "max_leaf_nodes": 15,
        "min_samples_leaf": 100,
        "l2_regularization": 1.0,
    },
    {
        "learning_rate": 0.03,
        "max_iter": 1000,
        "max_leaf_nodes": 15,
        "min_samples_leaf": 200,
        "l2_regularization": 1.0,
    },
)
"""Searched on the date-grouped folds; the best ROC-AUC wins."""


@dataclass(frozen=True)
class Candidate:
    name: str
    description: str
    build: Callable[[tuple[str, ...], dict[str, Any]], Any]
    grid: tuple[dict[str, Any], ...] = field(default=({},))


def baseline(features: tuple[str, ...], params: dict[str, Any]) -> Pipeline:
    """The data scientist's model: one-hot OPERA, TIPOVUELO, MES; class-balanced."""
    columns = [features.index(name) for name in MINIMAL_FEATURES]
    return Pipeline(
        [
            ("onehot", ColumnTransformer([("minimal", _onehot(), columns)])),
            ("logreg", LogisticRegression(class_weight="balanced", max_iter=2000)),
        ]
    )


def logistic(features: tuple[str, ...], params: dict[str, Any]) -> Pipeline:
    """Every feature, one-hot or binned; no class weights, so it stays calibrated."""
    transformers: list[tuple[str, Any, list[int]]] = [
        ("categories", _onehot(), [i for i, name in enumerate(features) if name in CATEGORICAL]),
    ]
    for name, bins in BINNED.items():
        if name in features:
            binned = KBinsDiscretizer(n_bins=bins, encode="onehot-dense", strategy="uniform")
            transformers.append((name, binned, [features.index(name)]))
    return Pipeline(
        [
            ("encode", ColumnTransformer(transformers)),
            ("logreg", LogisticRegression(C=params.get("C", 1.0), max_iter=3000)),
        ]
    )


def gradient_boosting(
    features: tuple[str, ...], params: dict[str, Any]
) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(random_state=SEED, **params)


def _onehot() -> OneHotEncoder:
    return OneHotEncoder(handle_unknown="ignore", sparse_output=True)


CANDIDATES = (
    Candidate(
        "baseline-logreg",
        "data scientist's baseline: one-hot OPERA/TIPOVUELO/MES, "
        "class-balanced logistic regression",
        baseline,
    ),
    Candidate(
        "logreg",
        "logistic regression on every feature (one-hot categories, binned hour, "
        "day and day of year), unweighted",
        logistic,
        grid=({"C": 0.1}, {"C": 1.0}),
    ),
    Candidate(
        "hgb",
        "scikit-learn HistGradientBoostingClassifier on rate-ranked category codes",
        gradient_boosting,
        grid=HGB_GRID,
    ),
)
CONTRACT_FEATURES = {"minimal": MINIMAL_FEATURES, "full": FULL_FEATURES}

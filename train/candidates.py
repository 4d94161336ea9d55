"""The models we compare. Each is a scikit-learn estimator over the encoded matrix of
`app.inference.features`, so whichever wins exports to ONNX as it is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lightgbm import LGBMClassifier
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, VotingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import KBinsDiscretizer, OneHotEncoder, StandardScaler

from app.inference.features import MINIMAL_GROUPS, RATE_FEATURES, feature_names

SEED = 0
CATEGORICAL = (
    "OPERA",
    "TIPOVUELO",
    "MES",
    "weekday",
    "day",
    "high_season",
    "holiday",
    "days_to_holiday",
    "days_after_holiday",
)
"""Codes a linear model one-hot encodes."""
BINNED = {"hour": 24, "day_of_year": 26}
"""Numbers a linear model can only use as one-hot bins (skl2onnx has no spline converter)."""

HGB_GRID: tuple[dict[str, Any], ...] = (
    {"learning_rate": 0.1, "max_iter": 100, "max_leaf_nodes": 15, "min_samples_leaf": 200},
    {
        "learning_rate": 0.05,
        "max_iter": 200,
        "max_leaf_nodes": 15,
        "min_samples_leaf": 200,
        "l2_regularization": 1.0,
    },
    {
        "learning_rate": 0.1,
        "max_iter": 100,
        "max_leaf_nodes": 31,
        "min_samples_leaf": 100,
        "l2_regularization": 1.0,
    },
)
"""Few, shallow trees: searched on the earlier forward months, and cheap to serve."""
LGBM_GRID: tuple[dict[str, Any], ...] = (
    {"learning_rate": 0.1, "n_estimators": 100, "num_leaves": 15, "min_child_samples": 200},
    {
        "learning_rate": 0.05,
        "n_estimators": 200,
        "num_leaves": 15,
        "min_child_samples": 200,
        "reg_lambda": 1.0,
    },
)
"""LightGBM at HGB's sizes: the same family, tried because it converts to ONNX (onnxmltools)."""
BLENDED = ("logreg", "hgb")
"""The candidates a blend averages, each at its own best configuration of the search."""
SEARCHED_HALF_LIVES: tuple[float | None, ...] = (None, 6.0, 3.0)
"""Recency weighting, searched with the other hyperparameters of logreg and hgb: half-lives in
months (None: every training row weighs the same)."""
REPORTED_HALF_LIVES: tuple[float | None, ...] = (None, 1.0, 3.0, 6.0)
"""The chosen recipe refitted at each of these other than its own: reported, never chosen on."""


@dataclass(frozen=True)
class Candidate:
    name: str
    description: str
    build: Callable[[tuple[str, ...], dict[str, Any]], Any]
    grid: tuple[dict[str, Any], ...] = field(default=({},))
    groups: tuple[str, ...] | None = None
    """Fixed feature groups (the baseline's); None: the groups selected for the contract."""
    components: tuple[str, ...] = ()
    """A blend's candidates: not searched; its params are each component's best search params."""
    half_lives: tuple[float | None, ...] = (None,)
    """Recency weightings searched with each configuration of the grid."""


def baseline(features: tuple[str, ...], params: dict[str, Any]) -> Pipeline:
    """The data scientist's model: one-hot OPERA, TIPOVUELO, MES; class-balanced."""
    columns = [features.index(name) for name in feature_names(MINIMAL_GROUPS)]
    return Pipeline(
        [
            ("onehot", ColumnTransformer([("minimal", _onehot(), columns)])),
            ("logreg", LogisticRegression(class_weight="balanced", max_iter=2000)),
        ]
    )


def logistic(features: tuple[str, ...], params: dict[str, Any]) -> Pipeline:
    """One-hot codes, binned hour, scaled delay-rate logits; no class weights (the training
    rows' recency weights, if any, are the search's). Served as export.lean's few-node graph."""
    transformers: list[tuple[str, Any, list[int]]] = []
    categorical = [i for i, name in enumerate(features) if name in CATEGORICAL]
    if categorical:
        transformers.append(("categories", _onehot(), categorical))
    for name, bins in BINNED.items():
        if name in features:
            binned = KBinsDiscretizer(n_bins=bins, encode="onehot-dense", strategy="uniform")
            transformers.append((name, binned, [features.index(name)]))
    rates = [i for i, name in enumerate(features) if name in RATE_FEATURES]
    if rates:
        transformers.append(("rates", StandardScaler(), rates))
    return Pipeline(
        [
            ("encode", ColumnTransformer(transformers)),
            ("logreg", LogisticRegression(C=params.get("C", 1.0), max_iter=3000)),
        ]
    )


def gradient_boosting(
    features: tuple[str, ...], params: dict[str, Any]
) -> HistGradientBoostingClassifier:
    """No early stopping: its validation rows would be drawn at random, same days on both sides."""
    return HistGradientBoostingClassifier(random_state=SEED, early_stopping=False, **params)


def light_gradient_boosting(features: tuple[str, ...], params: dict[str, Any]) -> LGBMClassifier:
    """One thread and deterministic histograms, so an export reproduces its model byte for byte."""
    return LGBMClassifier(
        random_state=SEED, n_jobs=1, deterministic=True, force_row_wise=True, verbose=-1, **params
    )


def blend(features: tuple[str, ...], params: dict[str, Any]) -> VotingClassifier:
    """Equal-weight average of the components' probabilities (soft vote), each component on
    its own encoding of the same features; params: component name -> its params (default: the
    first of its grid). `flatten_transform=False`: the only form skl2onnx converts."""
    members = [c for c in CANDIDATES if c.name in BLENDED]
    return VotingClassifier(
        [(c.name, c.build(features, params.get(c.name, c.grid[0]))) for c in members],
        voting="soft",
        flatten_transform=False,
    )


def _onehot() -> OneHotEncoder:
    return OneHotEncoder(handle_unknown="ignore", sparse_output=True)


CANDIDATES = (
    Candidate(
        "baseline-logreg",
        "data scientist's baseline: one-hot OPERA/TIPOVUELO/MES, "
        "class-balanced logistic regression",
        baseline,
        groups=MINIMAL_GROUPS,
    ),
    Candidate(
        "logreg",
        "logistic regression: one-hot codes, binned hour, scaled delay-rate logits; no class "
        "weights (the recency weighting of the training rows is searched)",
        logistic,
        grid=({"C": 0.1}, {"C": 1.0}),
        half_lives=SEARCHED_HALF_LIVES,
    ),
    Candidate(
        "hgb",
        "scikit-learn HistGradientBoostingClassifier on rate-ranked codes and delay-rate logits",
        gradient_boosting,
        grid=HGB_GRID,
        half_lives=SEARCHED_HALF_LIVES,
    ),
    Candidate(
        "lgbm",
        "LightGBM LGBMClassifier on the same matrix as HistGradientBoosting",
        light_gradient_boosting,
        grid=LGBM_GRID,
    ),
    Candidate(
        "blend",
        "equal-weight average of the probabilities of the best logistic regression and the "
        "best HistGradientBoosting (scikit-learn VotingClassifier, soft vote)",
        blend,
        components=BLENDED,
    ),
)

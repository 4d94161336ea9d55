"""The model card: everything the service and a reader need to know about one exported model."""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Sequence
from dataclasses import asdict
from importlib.metadata import version
from typing import Any

import numpy as np
import onnx

from app.inference.features import FeatureEncoder
from app.inference.flights import (
    DATETIME_FORMAT,
    FLIGHT_TYPES,
    SCHEDULE_FIELDS_DECLARED,
    Flight,
    departure_years,
)
from app.inference.model import CONTRACT_INPUTS, VERSION_HEX
from app.observability import drift
from export.onnx import TARGET_OPSET, Parity
from train.candidates import CANDIDATES, SEED
from train.data import HOLIDAY_YEARS
from train.evaluate import Forward
from train.select import FORWARD, REPORT, ContractEvaluation

THRESHOLD_RULE = (
    "alerts as many flights as were delayed (precision = recall) on the forward predictions "
    "of every month before the one scored (the served model's: of every forward month), "
    "expressed on the calibrated probability"
)
LIBRARIES = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "pandas", "holidays")


def model_inputs(name: str, operators: list[str], encoder: FeatureEncoder) -> list[dict[str, Any]]:
    """The card's `inputs`: model `name`'s contract (its fields and OIP datatypes, which the
    loader holds the card to) with what a reader and the validator need of each field. A
    contract's field is listed even where the encoder ignores it (its `known` lists then empty):
    the request still carries it. Patterns and format are the validator's (app.inference.flights)."""
    patterns = {field.name: f"^{field.pattern}$" for field in SCHEDULE_FIELDS_DECLARED}
    details: dict[str, dict[str, Any]] = {
        "OPERA": {"description": "operating airline", "allowed": operators},
        "TIPOVUELO": {
            "description": "I = international, N = national",
            "allowed": list(FLIGHT_TYPES),
        },
        "MES": {
            "description": "scheduled month; with Fecha-I, the next month is taken too for a "
            "departure on a month's last day (the SCL data's MES is the month of operation)",
            "minimum": 1,
            "maximum": 12,
        },
        "Fecha-I": {
            "format": DATETIME_FORMAT,
            "description": "scheduled date and time (local); MES is its month, or the next "
            "for a departure on a month's last day" + _departure_years(encoder),
        },
        "Des-I": {
            "pattern": patterns["Des-I"],
            "description": "destination ICAO code; a flight number the model has not seen "
            "is scored by its route (airline + destination), an unseen route by its airline",
            "known": encoder.known_destinations(),
        },
        "Emp-I": {
            "pattern": patterns["Emp-I"],
            "description": "scheduled airline ICAO code; an unseen one is scored at the "
            "overall delay rate",
            "known": encoder.known_airlines(),
        },
        "Vlo-I": {
            "pattern": patterns["Vlo-I"],
            "description": "scheduled flight number (on /predict a JSON integer is also "
            "taken; an OIP tensor is BYTES)",
        },
    }
    return [
        {"name": field, "datatype": datatype, **details[field]}
        for field, datatype in CONTRACT_INPUTS[name]
    ]


def _departure_years(encoder: FeatureEncoder) -> str:
    """The years of departure the service accepts, bounded by the holiday calendar's exact
    years (app.inference.features.Calendar): not the calendar's own span, whose last year it
    refuses."""
    if encoder.calendar is None:
        return ""
    return "; " + departure_years(encoder.calendar.exact_years)


def _graph_summary(onnx_bytes: bytes) -> dict[str, Any]:
    """Who wrote the graph (export.lean, or skl2onnx for a model without a lean form) and its
    size: onnxruntime's cost for a few rows is mostly per node."""
    graph = onnx.load_from_string(onnx_bytes)
    return {"producer": graph.producer_name, "nodes": len(graph.graph.node)}


def build_card(
    name: str,
    evaluation: ContractEvaluation,
    encoder: FeatureEncoder,
    onnx_bytes: bytes,
    parity: Parity,
    operators: list[str],
    data: dict[str, Any],
) -> dict[str, Any]:
    chosen = evaluation.chosen
    half_life = chosen.recipe.half_life
    sha256 = hashlib.sha256(onnx_bytes).hexdigest()
    return {
        "name": name,
        "version": sha256[:VERSION_HEX],
        "contract": evaluation.contract,
        "description": f"P(delay > 15 min) of a flight leaving SCL, from the {evaluation.contract} contract",
        "inputs": model_inputs(name, operators, encoder),
        "outputs": [
            {"name": "label", "datatype": "INT64", "description": "1 = delayed over 15 minutes"},
            {"name": "proba", "datatype": "FP32", "description": "probability of that delay"},
        ],
        "threshold": round(chosen.threshold, 6),
        "threshold_rule": THRESHOLD_RULE,
        "model": {
            "estimator": chosen.recipe.candidate,
            "description": next(
                c.description for c in CANDIDATES if c.name == chosen.recipe.candidate
            ),
            "params": chosen.recipe.params,
            # recency weighting of the training rows, named only when there is one
            **({} if half_life is None else {"half_life_months": half_life}),
        },
        "calibration": {
            "method": "Platt, inside the ONNX graph: q = sigmoid(a * logit(p) + b)",
            "a": round(chosen.platt.a, 6),
            "b": round(chosen.platt.b, 6),
            "fitted_on": "the forward predictions of every forward month",
        },
        "encoder": encoder.to_json(),
        "onnx": {
            "file": f"{name}.onnx",
            "sha256": sha256,
            "bytes": len(onnx_bytes),
            "input": "features",
            "output": "probabilities",
            "opset": TARGET_OPSET,
            **_graph_summary(onnx_bytes),
        },
        "metrics": {
            "forward": forward_summary(evaluation, chosen),
            "baseline_forward": forward_summary(evaluation, evaluation.baseline),
            "holdout_last_two_months": _scores(chosen.holdout),
            "baseline_holdout_last_two_months": _scores(evaluation.baseline.holdout),
            "cv_grouped_by_week": evaluation.cv["week"]["chosen"].to_json(),
            "cv_grouped_by_date_optimistic": evaluation.cv["date"]["chosen"].to_json(),
        },
        "feature_groups": {
            "used": list(encoder.groups),
            "holiday_calendar": f"Chile, {HOLIDAY_YEARS[0]}-{HOLIDAY_YEARS[1]}, holidays package",
        },
        "parity": asdict(parity),
        "data": data,
        "seed": SEED,
        "libraries": {"python": platform.python_version()}
        | {lib: version(lib) for lib in LIBRARIES},
    }


def forward_summary(evaluation: ContractEvaluation, forward: Forward) -> dict[str, Any]:
    mean, low, high = evaluation.means(forward, FORWARD)
    report, report_low, report_high = evaluation.means(forward, REPORT)
    return {
        "mean_roc_auc": round(mean, 6),
        "interval": [round(low, 6), round(high, 6)],
        "report_months_mean_roc_auc": round(report, 6),
        "report_months_interval": [round(report_low, 6), round(report_high, 6)],
        "ece": round(forward.ece(FORWARD), 6),
        "months": [
            {
                key: round(value, 6) if isinstance(value, float) else value
                for key, value in asdict(month).items()
            }
            for month in forward.months
        ],
    }


def _scores(scores: Any) -> dict[str, Any] | None:
    return None if scores is None else dict(scores.to_json())


def with_profile(
    card: dict[str, Any], flights: Sequence[Flight], probabilities: np.ndarray
) -> dict[str, Any]:
    """The card plus the training distribution of every input and of the predicted
    probability, which the service compares its traffic with (app.observability.drift)."""
    return card | {"profile": drift.profile(flights, probabilities, card["threshold"]).to_json()}


SAMPLES = 8
"""Flights whose scikit-learn probabilities each card keeps, for `make check-models`."""
METRICS_FILE = "metrics.json"
"""Every model's metrics in one file under the reports directory, for `dvc metrics`."""


def with_samples(
    card: dict[str, Any], flights: Sequence[Flight], probabilities: np.ndarray
) -> dict[str, Any]:
    """The card plus a few training flights, as a client sends them, with scikit-learn's
    probability for each: from the lowest probability to the highest, so the threshold falls
    between them. The release check (app.inference.check_models) runs them through onnxruntime in
    the serving image, which has no scikit-learn, and compares."""
    order = np.argsort(probabilities, kind="stable")
    picks = order[np.linspace(0, len(order) - 1, SAMPLES).round().astype(int)]
    samples = [
        {"flight": flights[i].request_fields(), "proba": round(float(probabilities[i]), 8)}
        for i in picks
    ]
    return card | {"samples": samples}


def metrics_summary(cards: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Each model's evaluation metrics (its threshold among them), keyed by model name."""
    return {card["name"]: card["metrics"] for card in cards}

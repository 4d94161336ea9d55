"""The model code every peer serves: the project's validation, encoder and onnxruntime sessions.

Imported inside the peers' virtualenvs (with the project on PYTHONPATH), so it needs only
numpy, onnxruntime and orjson there. Every prediction is an onnxruntime call: the minimal model
is not tabulated, unlike the service's default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.inference.flights import FlightValidator
from app.inference.model import ModelSet, OnnxModel

MAX_FLIGHTS = 10_000
"""The service's default MAX_FLIGHTS."""


def models_dir() -> Path:
    """MODELS_DIR as the service reads it (default `models/`), resolved once."""
    return Path(os.environ.get("MODELS_DIR") or "models").resolve()


class PredictScorer:
    """`POST /predict`: the service's body in, `{"predict": [labels]}` out."""

    def __init__(self, directory: Path | None = None) -> None:
        self.models = ModelSet.load(directory or models_dir(), tabulate_minimal=False)
        self.validator = FlightValidator(self.models.operators, MAX_FLIGHTS)

    def predict(self, payload: Any) -> dict[str, list[int]]:
        batch = self.validator.request(payload)
        return {"predict": np.asarray(self.models.predict(batch).labels).tolist()}


class TensorScorer:
    """One model by its Open Inference Protocol name: input columns in, (labels, probas) out."""

    def __init__(self, name: str, directory: Path | None = None) -> None:
        self.model = OnnxModel.load(directory or models_dir(), name)
        self.inputs = tuple(self.model.input_types)
        self.validator = FlightValidator(self.model.card.operators, MAX_FLIGHTS)

    def infer(self, columns: Mapping[str, Sequence[Any]]) -> tuple[np.ndarray, np.ndarray]:
        """`columns` maps each input name to its elements, one per flight, as the service's
        OIP codec gives them (str for BYTES, int for INT64)."""
        names = list(columns)
        rows = [
            dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)
        ]
        flights = self.validator.batch(rows).single()
        prediction = self.model.predict(flights)  # never tabulated: one onnxruntime call
        return np.asarray(prediction.labels), np.asarray(prediction.probabilities, np.float32)

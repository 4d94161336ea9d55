"""In-process latency of one request, without a server: `make bench`.

Each benchmark checks its answer once before timing it, so a fast wrong path cannot pass.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from starlette.applications import Starlette

from app.inference.model import BOUND_ROWS_BELOW, ModelSet, OnnxModel
from benchmarks.asgi import request_caller
from benchmarks.conftest import (
    JSON,
    SIZES,
    infer_body,
    make_flights,
    noop_caller,
    ok_body,
    predict_body,
)


def test_noop_ceiling(benchmark: Any) -> None:
    """The same request into a Starlette app that only reads the body: the framework's share."""
    call = noop_caller()
    ok_body(call())
    benchmark(call)


def served_model(app: Starlette, contract: str) -> OnnxModel:
    models: ModelSet = app.state.models
    return models.full if contract == "full" else models.minimal


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("contract", ["minimal", "full"])
def test_predict(benchmark: Any, app: Starlette, contract: str, size: int) -> None:
    body = predict_body(contract, size)
    call = request_caller(app, "POST", "/predict", body, headers=JSON)
    assert len(ok_body(call())["predict"]) == size
    benchmark(call)


@pytest.mark.parametrize("size", SIZES)
def test_infer_json(benchmark: Any, app: Starlette, size: int) -> None:
    call = request_caller(
        app, "POST", "/v2/models/delay-minimal/infer", infer_body(size), headers=JSON
    )
    assert ok_body(call())["outputs"][0]["shape"] == [size]
    benchmark(call)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("contract", ["minimal", "full"])
def test_decode(benchmark: Any, app: Starlette, contract: str, size: int) -> None:
    """Decoding and validating a /predict body into columns: the request's first step."""
    validator = app.state.validator
    body = predict_body(contract, size)
    assert validator.decode(body).size == size
    benchmark(validator.decode, body)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("contract", ["minimal", "full"])
def test_encode(benchmark: Any, app: Starlette, contract: str, size: int) -> None:
    """The feature encoding alone (app.inference.features), on validated columns: the step
    between."""
    model = served_model(app, contract)
    body = predict_body(contract, size)
    columns = app.state.validator.decode(body).single()
    encoder = model.card.encoder
    assert encoder.encode_columns(columns).shape == (size, len(encoder.feature_names))
    benchmark(encoder.encode_columns, columns)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("contract", ["minimal", "full"])
def test_onnxruntime_call(benchmark: Any, app: Starlette, contract: str, size: int) -> None:
    """The onnxruntime call as the service makes it, on already-encoded features: the floor
    under /predict. Calls of fewer than BOUND_ROWS_BELOW flights run on the model's IOBinding,
    whose input buffer the encoder writes into (here: the features copied in once, untimed);
    larger ones on session.run."""
    model = served_model(app, contract)
    flights = app.state.validator.flights(make_flights(size, contract == "full"))
    features = model.card.encoder.encode(flights)
    call: Callable[[], np.ndarray] = functools.partial(model.predict_features, features)
    if size < BOUND_ROWS_BELOW:
        binding = model.binding(size)
        binding.features[...] = features
        call = binding.run
    probabilities = call()
    assert probabilities.tobytes() == model.predict_features(features).tobytes()
    assert np.all((probabilities > 0) & (probabilities < 1))
    benchmark(call)

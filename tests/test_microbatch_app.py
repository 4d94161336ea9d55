"""The micro-batching experiment answers what the service answers, in one onnxruntime call."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import orjson

from app.flights import FlightValidator
from app.model import ModelSet
from benchmarks.conftest import make_flights
from benchmarks.microbatch_app import MicroBatcher
from tests.conftest import MODELS_DIR


def test_concurrent_requests_are_merged_and_each_gets_its_own_answer() -> None:
    models = ModelSet.load(MODELS_DIR)
    validator = FlightValidator(models.operators, 10)
    bodies = [make_flights(size, True, seed) for seed, size in enumerate((1, 3, 1, 2))]
    batches = [validator.decode(orjson.dumps({"flights": flights})) for flights in bodies]
    expected = [models.predict(batch) for batch in batches]
    calls: list[int] = []
    score = models.full.predict_proba

    def counted(columns: Any) -> np.ndarray:
        calls.append(len(columns))
        return score(columns)

    models.full.predict_proba = counted  # type: ignore[method-assign]

    async def concurrently() -> list[Any]:
        batcher = MicroBatcher(models, 0)
        return await asyncio.gather(*(batcher.predict(batch) for batch in batches))

    got = asyncio.run(concurrently())
    assert calls == [7]  # one call for the 1 + 3 + 1 + 2 flights
    for mine, theirs in zip(got, expected, strict=True):
        assert list(mine.labels) == list(theirs.labels)
        np.testing.assert_allclose(mine.probabilities, theirs.probabilities, rtol=1e-6)

"""Micro-batching answers what the unbatched service answers, in fewer onnxruntime calls, and one
request's failure stays that request's."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import REGISTRY
from starlette.datastructures import State

from app.dataplane import DataPlane
from app.inference.flights import Batch, Columns, FlightValidator
from app.inference.microbatch import Scorer
from app.inference.model import ModelSet, OnnxModel, Prediction
from app.observability.metrics import MERGE_BUCKETS, flush
from app.server.overload import BatchThread
from app.tensors import InferenceRequest
from benchmarks.conftest import make_flights
from tests.conftest import MODELS_DIR

SIZES = (1, 3, 1, 2)


@pytest.fixture(scope="module")
def models() -> ModelSet:
    """Both models on onnxruntime (TABULATE_MINIMAL=0), so that both contracts are merged."""
    return ModelSet.load(MODELS_DIR, tabulate_minimal=False)


@pytest.fixture
def calls(models: ModelSet, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Each onnxruntime scoring call: the model's name and how many flights it scored."""
    made: list[tuple[str, int]] = []
    for model in (models.minimal, models.full):

        def counted(columns: Columns, model: OnnxModel = model) -> np.ndarray:
            made.append((model.name, len(columns)))
            return type(model).predict_proba(model, columns)

        monkeypatch.setattr(model, "predict_proba", counted)
    return made


def batches(models: ModelSet, schedule: bool, sizes: tuple[int, ...] = SIZES) -> list[Batch]:
    validator = FlightValidator(models.operators, 1_000)
    return [
        validator.decode(orjson.dumps({"flights": make_flights(size, schedule, seed)}))
        for seed, size in enumerate(sizes)
    ]


def concurrently(scorer: Scorer, models: ModelSet, requests: list[Batch]) -> list[Any]:
    async def run() -> list[Any]:
        return await asyncio.gather(
            *(scorer.predict(models, batch) for batch in requests), return_exceptions=True
        )

    return asyncio.run(run())


def assert_same(got: Prediction, expected: Prediction) -> None:
    """The same labels and the same float32 probabilities, to the last bit: a flight's answer
    does not depend on the requests merged with it (export.lean.LOG_COLUMNS)."""
    np.testing.assert_array_equal(got.labels, expected.labels)
    np.testing.assert_array_equal(got.probabilities, expected.probabilities)
    assert got.delayed == expected.delayed


@pytest.mark.parametrize("schedule", [True, False], ids=["full", "minimal-onnxruntime"])
def test_concurrent_requests_are_scored_in_one_call_as_each_alone(
    models: ModelSet, calls: list[tuple[str, int]], schedule: bool
) -> None:
    """Forty requests of 1 to 7 flights: one call, and each request its own answer."""
    sizes = tuple(1 + seed % 7 for seed in range(40))
    requests = batches(models, schedule, sizes)
    expected = [models.predict(batch) for batch in requests]
    observed: list[int] = []
    models.observe = lambda model, columns, prediction: observed.append(len(columns))
    calls.clear()
    got = concurrently(Scorer(BatchThread(256), merge=True), models, requests)
    model = models.full if schedule else models.minimal
    assert calls == [(model.name, sum(sizes))]
    assert observed == [sum(sizes)]  # observed once, as one request of all those flights
    for mine, theirs in zip(got, expected, strict=True):
        assert_same(mine, theirs)


def test_a_request_alone_in_its_worker_is_scored_at_once(
    models: ModelSet, calls: list[tuple[str, int]]
) -> None:
    """The server says no other request is in flight: scored without waiting for a loop pass
    (the coroutine finishes on its first step); with others in flight, merged as before."""
    requests = batches(models, True, (1, 2))
    expected = [models.predict(batch) for batch in requests]
    scorer = Scorer(BatchThread(256), merge=True)
    scorer.in_flight = lambda: 1
    calls.clear()
    coroutine = scorer.predict(models, requests[0])
    with pytest.raises(StopIteration) as finished:
        coroutine.send(None)
    assert calls == [(models.full.name, 1)]
    assert_same(finished.value.value, expected[0])
    scorer.in_flight = lambda: len(requests)
    calls.clear()
    got = concurrently(scorer, models, requests)
    assert calls == [(models.full.name, 3)]
    for mine, theirs in zip(got, expected, strict=True):
        assert_same(mine, theirs)


@pytest.mark.parametrize(
    ("in_flight", "expected_calls"),
    [(3, [6]), (2, [3, 3]), (100, [6])],
    ids=["one-not-queued-yet", "all-queued", "count-never-comes-down"],
)
def test_a_merge_waits_one_pass_for_requests_read_but_not_queued_yet(
    models: ModelSet, calls: list[tuple[str, int]], in_flight: int, expected_calls: list[int]
) -> None:
    """Two requests queue in one pass and a third in the next, as one read in the loop's
    following poll would. The server counting three in flight, the merge waits that pass and
    takes all three; counting only the two queued, it does not wait; counting more than ever
    come, it still waits one pass only."""
    requests = batches(models, True, (1, 2, 3))
    expected = [models.predict(batch) for batch in requests]
    scorer = Scorer(BatchThread(256), merge=True)
    scorer.in_flight = lambda: in_flight

    async def run() -> list[Prediction]:
        first = [asyncio.ensure_future(scorer.predict(models, b)) for b in requests[:2]]
        await asyncio.sleep(0)  # the two queue; the merge comes up in the next pass
        third = asyncio.ensure_future(scorer.predict(models, requests[2]))
        return await asyncio.gather(*first, third)

    calls.clear()
    got = asyncio.run(run())
    assert calls == [(models.full.name, flights) for flights in expected_calls]
    for mine, theirs in zip(got, expected, strict=True):
        assert_same(mine, theirs)


def test_without_merging_each_request_is_its_own_call(
    models: ModelSet, calls: list[tuple[str, int]]
) -> None:
    requests = batches(models, True)
    expected = [models.predict(batch) for batch in requests]
    calls.clear()
    got = concurrently(Scorer(BatchThread(256), merge=False), models, requests)
    assert calls == [(models.full.name, size) for size in SIZES]
    for mine, theirs in zip(got, expected, strict=True):
        assert_same(mine, theirs)


def test_each_model_gets_its_merge_and_large_or_mixed_batches_none(
    models: ModelSet, calls: list[tuple[str, int]]
) -> None:
    validator = FlightValidator(models.operators, 1_000)
    mixed = make_flights(2, True, 7) + make_flights(1, False, 8)
    requests = [
        *batches(models, True, (1, 2, 5)),  # 5 flights: the batch thread's, at min_flights=5
        *batches(models, False, (1, 2)),
        validator.decode(orjson.dumps({"flights": mixed})),
    ]
    expected = [models.predict(batch) for batch in requests]
    calls.clear()
    got = concurrently(Scorer(BatchThread(5), merge=True), models, requests)
    full, minimal = models.full.name, models.minimal.name
    each = [(full, 1 + 2), (full, 5), (minimal, 1 + 2), (full, 2), (minimal, 1)]
    assert sorted(calls) == sorted(each)
    for mine, theirs in zip(got, expected, strict=True):
        assert_same(mine, theirs)


def test_table_answers_are_not_merged() -> None:
    tabulated = ModelSet.load(MODELS_DIR)
    requests = batches(tabulated, False)
    assert tabulated.onnxruntime_model(requests[0]) is None
    got = concurrently(Scorer(BatchThread(256), merge=True), tabulated, requests)
    for mine, batch in zip(got, requests, strict=True):
        assert_same(mine, tabulated.predict(batch))


@pytest.mark.parametrize("sizes", [SIZES, (2, 1)])
def test_a_failing_request_fails_alone(
    models: ModelSet,
    monkeypatch: pytest.MonkeyPatch,
    calls: list[tuple[str, int]],
    sizes: tuple[int, ...],
) -> None:
    """The merged call fails because of one request's flights: every request is then scored
    alone, the others get their answers and only that one its error (two requests too: one
    request alone is handed the merged call's error as it is)."""
    requests = batches(models, True, sizes)
    expected = [models.predict(batch) for batch in requests]
    poisoned = requests[1].full
    assert poisoned is not None
    assert poisoned.number is not None
    number = poisoned.number[0]
    failure = RuntimeError("onnxruntime failed")
    score = models.full.predict_proba

    def failing(columns: Columns) -> np.ndarray:
        if number in (columns.number or ()):
            raise failure
        return score(columns)

    monkeypatch.setattr(models.full, "predict_proba", failing)
    got = concurrently(Scorer(BatchThread(256), merge=True), models, requests)
    assert got[1] is failure
    for index in {0, *range(2, len(sizes))}:
        assert_same(got[index], expected[index])


def test_a_cancelled_request_does_not_stop_the_others(models: ModelSet) -> None:
    requests = batches(models, True)
    expected = [models.predict(batch) for batch in requests]
    scorer = Scorer(BatchThread(256), merge=True)

    async def run() -> list[Any]:
        tasks = [asyncio.ensure_future(scorer.predict(models, batch)) for batch in requests]
        await asyncio.sleep(0)  # every task has queued its flights; the merge is next
        tasks[0].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    got = asyncio.run(run())
    assert isinstance(got[0], asyncio.CancelledError)
    for index in (1, 2, 3):
        assert_same(got[index], expected[index])


def test_the_inference_protocol_merges_too(models: ModelSet, calls: list[tuple[str, int]]) -> None:
    """OIP (REST and gRPC) requests of one flight, through the data plane: one call."""
    state = State()
    state.models = models
    state.validator = FlightValidator(models.operators, 1_000)
    state.batches = BatchThread(256)
    state.scorer = Scorer(state.batches, merge=True)
    dataplane = DataPlane(state)
    flights = make_flights(5, True, 11)
    requests = [
        InferenceRequest(None, {name: [value] for name, value in flight.items()}, {})
        for flight in flights
    ]
    expected = models.predict(state.validator.decode(orjson.dumps({"flights": flights})))
    calls.clear()

    async def run() -> list[Prediction]:
        model = dataplane.model(models.full.name)
        return await asyncio.gather(*(dataplane.infer(model, request) for request in requests))

    got = asyncio.run(run())
    assert calls == [(models.full.name, len(flights))]
    np.testing.assert_array_equal(np.concatenate([p.labels for p in got]), expected.labels)


def _merged(model: OnnxModel) -> dict[str, float]:
    """`microbatch_call_requests` of `model` so far, the worker's tallies flushed: count, sum
    and each cumulative bucket (by its bound)."""
    flush()
    samples = {}
    for name in ("count", "sum"):
        value = REGISTRY.get_sample_value(f"microbatch_call_requests_{name}", {"model": model.name})
        samples[name] = value or 0.0
    for bound in (*(str(float(b)) for b in MERGE_BUCKETS), "+Inf"):
        labels = {"model": model.name, "le": bound}
        samples[bound] = REGISTRY.get_sample_value("microbatch_call_requests_bucket", labels) or 0.0
    return samples


def _infer_each(models: ModelSet, merge: bool, schedule: bool, count: int) -> list[Prediction]:
    """`count` concurrent OIP requests of one flight through a data plane, as app.main makes
    it: REST's and gRPC's way to Scorer.score, which unlike `/predict` decides alone whether
    to merge."""
    state = State()
    state.models = models
    state.validator = FlightValidator(models.operators, 1_000)
    state.batches = BatchThread(256)
    state.scorer = Scorer(state.batches, merge=merge)
    dataplane = DataPlane(state)
    requests = [
        InferenceRequest(None, {name: [value] for name, value in flight.items()}, {})
        for flight in make_flights(count, schedule, 12)
    ]
    name = (models.full if schedule else models.minimal).name

    async def run() -> list[Prediction]:
        model = dataplane.model(name)
        return await asyncio.gather(*(dataplane.infer(model, request) for request in requests))

    return asyncio.run(run())


def test_the_inference_protocol_merges_neither_without_merging_nor_table_answers(
    models: ModelSet, calls: list[tuple[str, int]]
) -> None:
    """MICROBATCH=0 and the table's answers hold for OIP requests too: one call each, none
    observed as merged."""
    tabulated = ModelSet.load(MODELS_DIR)
    assert tabulated.minimal.tabulated
    before = {model.name: _merged(model) for model in (models.full, models.minimal)}
    calls.clear()
    assert len(_infer_each(models, False, True, 3)) == 3
    assert calls == [(models.full.name, 1)] * 3
    assert len(_infer_each(tabulated, True, False, 3)) == 3
    assert {model.name: _merged(model) for model in (models.full, models.minimal)} == before


def test_each_merged_call_is_observed_with_its_number_of_requests(models: ModelSet) -> None:
    """Five full-schedule requests merge into one call of 5 (bucket le=8, not le=4), two minimal
    ones into one of 2; a request scored at once, alone in its worker, and requests scored
    without merging are in no call."""
    before = {model: _merged(model) for model in (models.full, models.minimal)}
    scorer = Scorer(BatchThread(256), merge=True)
    scorer.in_flight = lambda: 1
    concurrently(scorer, models, batches(models, True, (2,)))
    concurrently(Scorer(BatchThread(256), merge=False), models, batches(models, True))
    assert _merged(models.full) == before[models.full]
    concurrently(
        Scorer(BatchThread(256), merge=True), models, batches(models, True, (1, 3, 1, 2, 1))
    )
    concurrently(Scorer(BatchThread(256), merge=True), models, batches(models, False, (1, 2)))
    for model, requests in ((models.full, 5), (models.minimal, 2)):
        after = _merged(model)
        grown = {key: after[key] - before[model][key] for key in after}
        assert grown["count"] == 1
        assert grown["sum"] == requests
        assert grown["+Inf"] == 1
        for bound in MERGE_BUCKETS:
            assert grown[str(float(bound))] == (1 if requests <= bound else 0), bound

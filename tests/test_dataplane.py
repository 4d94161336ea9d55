from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from starlette.datastructures import State

from app.dataplane import DataPlane
from app.errors import BadRequest, InvalidFlight, NotFound, NotReady, PayloadTooLarge
from app.inference.flights import FlightValidator
from app.inference.microbatch import Scorer
from app.inference.model import FULL_MODEL, MINIMAL_MODEL, ModelSet
from app.server.overload import BatchThread
from app.tensors import InferenceRequest
from tests.conftest import MODELS_DIR

MINIMAL_COLUMNS: dict[str, list[Any]] = {
    "OPERA": ["Grupo LATAM", "Sky Airline"],
    "TIPOVUELO": ["I", "N"],
    "MES": [1, 7],
}


@pytest.fixture(scope="module")
def models() -> ModelSet:
    return ModelSet.load(MODELS_DIR)


@pytest.fixture
def dataplane(models: ModelSet) -> DataPlane:
    state = State()
    state.models = models
    state.validator = FlightValidator(models.operators, max_flights=3)
    state.batches = BatchThread(min_flights=2)  # the 2-flight requests below go to the thread
    state.scorer = Scorer(state.batches, merge=True)
    return DataPlane(state)


def test_before_the_models_load_it_is_live_but_not_ready() -> None:
    dataplane = DataPlane(State())
    assert not dataplane.ready()
    with pytest.raises(NotReady):
        dataplane.model(MINIMAL_MODEL)
    assert dataplane.server_metadata()["extensions"] == ["binary_tensor_data"]


def test_models_are_found_by_name_and_optional_version(dataplane: DataPlane) -> None:
    assert dataplane.ready()
    model = dataplane.model(FULL_MODEL)
    assert model.name == FULL_MODEL
    assert dataplane.model(FULL_MODEL, model.version) is model
    with pytest.raises(NotFound, match="no version 'v0'") as wrong_version:
        dataplane.model(FULL_MODEL, "v0")
    assert wrong_version.value.detail == {"versions": [model.version]}
    with pytest.raises(NotFound, match="no model named 'delay'") as unknown:
        dataplane.model("delay")
    assert unknown.value.detail == {"models": [FULL_MODEL, MINIMAL_MODEL]}


def test_model_metadata_lists_the_cards_inputs_and_both_outputs(dataplane: DataPlane) -> None:
    model = dataplane.model(MINIMAL_MODEL)
    metadata = dataplane.model_metadata(model)
    assert metadata["versions"] == [model.version]
    assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == [
        ("OPERA", "BYTES"),
        ("TIPOVUELO", "BYTES"),
        ("MES", "INT64"),
    ]
    assert [o["name"] for o in metadata["outputs"]] == ["label", "proba"]
    assert metadata["card"] == model.card.raw
    # the V2 protocol's fields a client reads besides the names: any batch size, which runtime
    assert {tuple(i["shape"]) for i in metadata["inputs"]} == {(-1,)}
    assert metadata["platform"] == "onnxruntime_onnx"


def test_infer_scores_the_rows_with_the_named_model(dataplane: DataPlane, models: ModelSet) -> None:
    model = dataplane.model(MINIMAL_MODEL)
    prediction = asyncio.run(dataplane.infer(model, InferenceRequest(None, MINIMAL_COLUMNS, {})))
    direct = models.minimal.predict_proba(
        FlightValidator(models.operators, 3)
        .batch(InferenceRequest(None, MINIMAL_COLUMNS, {}).rows())
        .single()
    )
    assert list(prediction.probabilities) == pytest.approx(direct.tolist(), abs=1e-7)


def test_infer_applies_the_flight_limit(dataplane: DataPlane) -> None:
    model = dataplane.model(MINIMAL_MODEL)
    columns = {name: values * 2 for name, values in MINIMAL_COLUMNS.items()}
    with pytest.raises(PayloadTooLarge):
        asyncio.run(dataplane.infer(model, InferenceRequest(None, columns, {})))


def test_over_the_flight_limit_is_refused_before_any_row_is_built(
    dataplane: DataPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a hostile-client probe: the row checks said 413, after a dict per flight (80 ms
    of the batch thread for a 1-MiB OIP request of 125,000 flights)."""

    def rows(self: InferenceRequest) -> list[dict[str, Any]]:
        raise AssertionError("rows built")

    monkeypatch.setattr(InferenceRequest, "rows", rows)
    model = dataplane.model(MINIMAL_MODEL)
    columns = {name: values * 2 for name, values in MINIMAL_COLUMNS.items()}
    with pytest.raises(PayloadTooLarge, match="4 flights in one request; the limit is 3"):
        asyncio.run(dataplane.infer(model, InferenceRequest(None, columns, {})))


@pytest.mark.parametrize("index", [0, 1, 2])
@pytest.mark.parametrize(
    ("field", "value"), [("OPERA", "Nope Air"), ("TIPOVUELO", "X"), ("MES", 13), ("MES", True)]
)
def test_a_wrong_flight_is_named_as_the_row_checks_name_it(
    dataplane: DataPlane, models: ModelSet, field: str, value: object, index: int
) -> None:
    """The column checks refuse, the rows name: the error /predict gives for the same flights."""
    columns: dict[str, list[Any]] = {
        name: [values[0]] * 3 for name, values in MINIMAL_COLUMNS.items()
    }
    columns[field][index] = value
    request = InferenceRequest(None, columns, {})
    with pytest.raises(InvalidFlight) as raised:
        asyncio.run(dataplane.infer(dataplane.model(MINIMAL_MODEL), request))
    with pytest.raises(InvalidFlight) as by_rows:
        FlightValidator(models.operators, 3).batch(request.rows())
    assert raised.value.to_json() == by_rows.value.to_json()
    assert raised.value.detail["index"] == index
    assert raised.value.message.startswith(f"flights[{index}].{field}: ")


def test_a_large_request_is_decoded_in_the_batch_thread_and_its_errors_raised_the_same(
    dataplane: DataPlane,
) -> None:
    """Found by a hostile-client probe: a 1-MiB OIP body of tiny tensor elements was decoded on
    the event loop, 100 ms and more of every other request's time (app.server.overload)."""
    size = dataplane._state.batches.min_bytes
    loop_thread = threading.get_ident()

    def decode(answer: str) -> tuple[str, int]:
        if answer == "refuse":
            raise BadRequest("input 'MES' has 2 elements; its shape [3] says 3")
        return answer, threading.get_ident()

    # `decode` stands in for a transport's, giving (answer, thread) where DataPlane.decode's
    # annotation names an InferenceRequest: the method passes either through as it came
    async def both() -> list[tuple[str, int]]:
        return [
            await dataplane.decode(size - 1, decode, "small"),  # type: ignore[arg-type,list-item]
            await dataplane.decode(size, decode, answer="large"),  # type: ignore[arg-type,list-item]
        ]

    (small, small_thread), (large, large_thread) = asyncio.run(both())
    assert (small, large) == ("small", "large")
    assert small_thread == loop_thread
    assert large_thread != loop_thread
    with pytest.raises(BadRequest, match=r"^input 'MES' has 2 elements; its shape \[3\] says 3$"):
        asyncio.run(dataplane.decode(size, decode, "refuse"))  # type: ignore[arg-type]


@pytest.mark.parametrize(("flights", "offloaded"), [(1, False), (2, True)])
def test_a_large_batch_is_scored_in_the_batch_thread_and_a_small_one_on_the_loop(
    dataplane: DataPlane,
    models: ModelSet,
    monkeypatch: pytest.MonkeyPatch,
    flights: int,
    offloaded: bool,
) -> None:
    """From `min_flights` (2 here) a batch is scored off the event loop, which meanwhile serves
    the worker's other requests (app.server.overload); answers alike either way, so only the
    thread shows which way it went."""
    threads: list[int] = []
    predict_with = models.predict_with

    def recording(*args: Any, **kwargs: Any) -> Any:  # the tabulated model's way either way
        threads.append(threading.get_ident())
        return predict_with(*args, **kwargs)

    monkeypatch.setattr(models, "predict_with", recording)
    columns = {name: values[:flights] for name, values in MINIMAL_COLUMNS.items()}
    model = dataplane.model(MINIMAL_MODEL)

    async def infer() -> int:
        await dataplane.infer(model, InferenceRequest(None, columns, {}))
        return threading.get_ident()

    loop_thread = asyncio.run(infer())
    assert len(threads) == 1
    assert (threads[0] != loop_thread) is offloaded


def test_valid_columns_are_scored_without_building_rows(
    dataplane: DataPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The column checks vouch for a valid request: the per-flight dicts (`rows`) are only for
    naming the first wrong flight, so a valid request never pays for them."""

    def rows(self: InferenceRequest) -> list[dict[str, Any]]:
        raise AssertionError("rows built")

    monkeypatch.setattr(InferenceRequest, "rows", rows)
    model = dataplane.model(MINIMAL_MODEL)
    for flights in (1, 2):  # on the loop and in the batch thread
        columns = {name: values[:flights] for name, values in MINIMAL_COLUMNS.items()}
        prediction = asyncio.run(dataplane.infer(model, InferenceRequest(None, columns, {})))
        assert len(prediction.labels) == flights

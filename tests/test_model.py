from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import pytest

from app import TELEMETRY_ENV
from app.errors import ModelLoadError
from app.inference.features import from_flights, take
from app.inference.flights import Batch, Columns
from app.inference.model import (
    BOUND_ROWS_BELOW,
    CONTRACT_INPUTS,
    FULL_MODEL,
    MINIMAL_MODEL,
    MODEL_NAMES,
    ModelCard,
    ModelSet,
    OnnxModel,
    Prediction,
    fit_problems,
    minimal_domain,
    read_regular,
)
from app.rest.http import dumps
from tests.conftest import MODELS_DIR, fifo_in_place, without_blocking


@pytest.fixture
def models_copy(tmp_path: Path) -> Path:
    for path in MODELS_DIR.glob("delay-*"):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def test_committed_models_load_and_are_ready() -> None:
    models = ModelSet.load(MODELS_DIR)
    assert models.ready
    assert set(models.by_name) == {MINIMAL_MODEL, FULL_MODEL}
    assert "Grupo LATAM" in models.operators


def test_labels_follow_the_cards_threshold() -> None:
    model = OnnxModel.load(MODELS_DIR, MINIMAL_MODEL)
    flights = minimal_domain(model.card.operators)
    prediction = model.predict(flights)
    assert isinstance(prediction.labels, np.ndarray)  # onnxruntime's answers: arrays
    assert isinstance(prediction.probabilities, np.ndarray)
    np.testing.assert_array_equal(prediction.labels, prediction.probabilities >= model.threshold)
    assert 0 < prediction.labels.sum() < len(flights)  # the threshold splits the domain


def test_the_minimal_table_gives_onnxruntimes_answers_on_the_whole_domain() -> None:
    tabulated = OnnxModel.load(MODELS_DIR, MINIMAL_MODEL)
    tabulated.tabulate()
    session = OnnxModel.load(MODELS_DIR, MINIMAL_MODEL)
    domain = minimal_domain(session.card.operators)
    assert len(domain) == len(session.card.operators) * 2 * 12  # 552 for the committed models
    table = tabulated.predict(domain)
    direct = session.predict(domain)
    assert isinstance(direct.labels, np.ndarray)
    assert table.labels == direct.labels.tolist()
    assert table.delayed == direct.delayed
    assert orjson.dumps(table.probabilities) == orjson.dumps(
        direct.probabilities, option=orjson.OPT_SERIALIZE_NUMPY
    )


def test_a_lone_flight_gets_the_tables_answer() -> None:
    """A request's lone flight skips the table's general loop: the same answer for each."""
    tabulated = OnnxModel.load(MODELS_DIR, MINIMAL_MODEL)
    tabulated.tabulate()
    domain = minimal_domain(tabulated.card.operators)
    whole = tabulated.predict(domain)
    for index, row in enumerate(
        zip(domain.operator, domain.flight_type, domain.month, strict=True)
    ):
        operator, flight_type, month = row
        alone = tabulated.predict(Columns([operator], [flight_type], [month]))
        assert alone.labels == [whole.labels[index]]
        assert alone.probabilities == [whole.probabilities[index]]
        assert alone.delayed == whole.labels[index]


def test_the_full_model_has_no_finite_table() -> None:
    with pytest.raises(ValueError, match="finite input domain"):
        OnnxModel.load(MODELS_DIR, FULL_MODEL).tabulate()


def _random_columns(model: OnnxModel, count: int, seed: int) -> Columns:
    """Flights of the model's contract from 2015 to 2019, as the validator gives them (lists):
    known and unseen destinations, airlines and flight numbers."""
    rng = np.random.default_rng(seed)

    def pick(values: list[str]) -> list[str]:
        return [values[i] for i in rng.integers(0, len(values), count)]

    departure = np.datetime64("2015-01-01T00:00") + rng.integers(0, 5 * 525_960, count)
    month = (departure.astype("datetime64[M]").astype(np.int64) % 12 + 1).tolist()
    minimal = (pick(list(model.card.operators)), pick(["I", "N"]), month)
    encoder = model.card.encoder
    if not encoder.schedule:
        return Columns(*minimal)
    return Columns(
        *minimal,
        departure.astype("datetime64[m]"),
        pick([*encoder.known_destinations(), "ZZZZ"]),
        pick([*encoder.known_airlines(), "ZZZ"]),
        [str(number) for number in rng.integers(1, 3000, count)],
    )


def _session_run(model: OnnxModel, columns: Columns) -> bytes:
    """The probabilities by `session.run` on the encoder's new matrix, as bytes."""
    return model.predict_features(model.card.encoder.encode_columns(columns)).tobytes()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_small_calls_give_session_runs_probabilities_bit_for_bit(name: str) -> None:
    """Calls of fewer than BOUND_ROWS_BELOW flights run on an IOBinding: the float32 bits of
    session.run, each call's answer an array of its own (the next call reuses the buffers)."""
    model = OnnxModel.load(MODELS_DIR, name)
    columns = _random_columns(model, 400, seed=1)
    for size in (1, 2, 7, BOUND_ROWS_BELOW - 1, BOUND_ROWS_BELOW):
        answers = []
        for start in range(0, 400 - size + 1, size):
            part = take(columns, np.arange(start, start + size))
            answers.append((model.predict_proba(part), _session_run(model, part)))
        assert all(answer.tobytes() == expected for answer, expected in answers), size
        assert len({answer.tobytes() for answer, _ in answers}) > 1


def test_every_real_flight_alone_gets_session_runs_probabilities(real_data: Path) -> None:
    """A one-flight request's path (FeatureEncoder._row into the bound buffer) against
    session.run on the column-wise encoding of all 68,206 flights, both served models."""
    from train.data import load

    dataset = load(real_data)
    for name in MODEL_NAMES:
        model = OnnxModel.load(MODELS_DIR, name)
        flights = dataset.flights(model.card.encoder.schedule)
        whole = model.card.encoder.encode_columns(from_flights(flights))
        for row, flight in enumerate(flights):
            expected = model.predict_features(whole[row : row + 1]).tobytes()
            assert model.predict_proba(from_flights([flight])).tobytes() == expected, (name, row)


def test_threads_scoring_at_once_get_their_own_answers() -> None:
    """The event loop and the batch thread may score small calls at the same moment: each
    thread has bindings of its own, so neither reads the other's features or probabilities."""
    model = OnnxModel.load(MODELS_DIR, FULL_MODEL)
    flights = [take(_random_columns(model, 2, seed), np.arange(1)) for seed in (1, 2)]
    expected = [_session_run(model, columns) for columns in flights]
    assert expected[0] != expected[1]
    start = threading.Barrier(2)
    wrong: list[int] = []

    def score(which: int) -> None:
        start.wait()
        for _ in range(3000):
            if model.predict_proba(flights[which]).tobytes() != expected[which]:
                wrong.append(which)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns every few operations, not every 5 ms
    try:
        threads = [threading.Thread(target=score, args=(which,)) for which in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert wrong == []


def test_observer_sees_every_prediction() -> None:
    seen: list[tuple[str, Prediction]] = []
    models = ModelSet.load(
        MODELS_DIR, observe=lambda model, columns, prediction: seen.append((model.name, prediction))
    )
    assert seen == []  # the warm-up inference is nobody's prediction: not counted
    models.predict(Batch(1, Columns(["Grupo LATAM"], ["N"], [3]), None))
    assert [name for name, _ in seen] == [MINIMAL_MODEL]


def test_missing_card_names_the_file(models_copy: Path) -> None:
    (models_copy / "delay-full.json").unlink()
    with pytest.raises(ModelLoadError, match=r"model card not found: .*delay-full\.json"):
        ModelSet.load(models_copy)


def test_missing_onnx_names_the_file(models_copy: Path) -> None:
    (models_copy / "delay-minimal.onnx").unlink()
    with pytest.raises(ModelLoadError, match=r"model file not found: .*delay-minimal\.onnx"):
        ModelSet.load(models_copy)


def test_truncated_onnx_is_refused_by_its_checksum(models_copy: Path) -> None:
    path = models_copy / "delay-full.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(
        ModelLoadError, match=r"does not match its card's sha256: .*delay-full\.onnx"
    ):
        ModelSet.load(models_copy)


def test_garbage_onnx_with_a_matching_checksum_is_refused(models_copy: Path) -> None:
    import hashlib

    garbage = b"not an onnx model"
    (models_copy / "delay-full.onnx").write_bytes(garbage)
    card_path = models_copy / "delay-full.json"
    card = orjson.loads(card_path.read_bytes())
    card["onnx"]["sha256"] = hashlib.sha256(garbage).hexdigest()
    card_path.write_bytes(orjson.dumps(card))
    with pytest.raises(ModelLoadError, match=r"model file unusable: .*delay-full\.onnx"):
        ModelSet.load(models_copy)


@pytest.mark.parametrize("name", ["delay-minimal.json", "delay-full.onnx"])
def test_a_file_the_os_cannot_read_is_refused_naming_it(models_copy: Path, name: str) -> None:
    """Not missing, but unreadable (a symlink loop here: root reads any mode): the OS's reason."""
    path = models_copy / name
    path.unlink()
    path.symlink_to(path)
    with pytest.raises(ModelLoadError) as refused:
        ModelSet.load(models_copy)
    assert str(refused.value) == f"cannot read {path}: Too many levels of symbolic links"


def test_unreadable_card_is_refused(models_copy: Path) -> None:
    (models_copy / "delay-minimal.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"model card unreadable: .*delay-minimal\.json"):
        ModelSet.load(models_copy)


def test_a_card_without_its_opera_input_is_unreadable_saying_so(models_copy: Path) -> None:
    """The card's OPERA input lists the airlines the validator allows: without it, no model."""
    edit_card(models_copy, MINIMAL_MODEL, lambda card: card["inputs"].pop(0))
    with pytest.raises(
        ModelLoadError, match=r"delay-minimal\.json: \"input 'OPERA' not described\""
    ):
        ModelSet.load(models_copy)


def edit_card(directory: Path, name: str, change: Callable[[dict[str, Any]], None]) -> None:
    path = directory / f"{name}.json"
    card = orjson.loads(path.read_bytes())
    change(card)
    path.write_bytes(orjson.dumps(card))


MINIMAL_CARD = orjson.loads((MODELS_DIR / "delay-minimal.json").read_bytes())
"""The minimal model's card in models/ (the committed one, or a retrain's): its sha256 and
its graph's width, which errors quote."""
MINIMAL_WIDTH = len(MINIMAL_CARD["encoder"]["features"])


def renamed(card: dict[str, Any]) -> None:
    """The operator probe's card: the minimal model renamed away, under a made-up version."""
    card.update(name="delay-full-typo", version="deadbeef0000")


def cut_inputs(card: dict[str, Any]) -> None:
    card["inputs"] = card["inputs"][:1]


def month_as_text(card: dict[str, Any]) -> None:
    card["inputs"][2]["datatype"] = "BYTES"


def schedule_inputs_on_the_minimal_card(card: dict[str, Any]) -> None:
    full = orjson.loads((MODELS_DIR / "delay-full.json").read_bytes())
    card["inputs"] = full["inputs"]


def months_in_two_buckets(card: dict[str, Any]) -> None:
    """The operator probe's profile: it loaded, then a lone flight of month 12 raised IndexError
    in every worker's flush."""
    card["profile"]["features"]["MES"] = {"buckets": ["1", "2"], "shares": [0.5, 0.5]}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            renamed,
            "it names itself 'delay-full-typo', not 'delay-minimal' (its file's model); "
            "version 'deadbeef0000' is not the start of its ONNX sha256 "
            + MINIMAL_CARD["onnx"]["sha256"][:12],
        ),
        (lambda card: card.update(threshold=5.0), "threshold 5.0 is not a probability"),
        (lambda card: card.update(threshold=0), "threshold 0 is not a probability"),
        (lambda card: card.update(threshold=1.0), "threshold 1.0 is not a probability"),
        (lambda card: card.update(threshold="0.5"), "threshold '0.5' is not a probability"),
        (lambda card: card.update(threshold=True), "threshold True is not a probability"),
        (
            cut_inputs,
            "inputs [OPERA BYTES] are not delay-minimal's contract "
            "[OPERA BYTES, TIPOVUELO BYTES, MES INT64]",
        ),
        (month_as_text, "inputs [OPERA BYTES, TIPOVUELO BYTES, MES BYTES] are not"),
        (schedule_inputs_on_the_minimal_card, "Vlo-I BYTES] are not delay-minimal's contract"),
        (
            lambda card: card["inputs"][0].update(allowed=[]),
            "its OPERA input allows no airline, or not as strings",
        ),
        (
            lambda card: card["profile"].update(features=[]),
            "its drift profile does not fit delay-minimal's contract: its features are a list",
        ),
        (
            months_in_two_buckets,
            "its drift profile does not fit delay-minimal's contract: MES's 2 buckets are not "
            "its 12 values '1' to '12'",
        ),
    ],
    ids=[
        "renamed",
        "5",
        "0",
        "1",
        "text",
        "bool",
        "cut",
        "month",
        "schedule",
        "no airline",
        "list",
        "MES",
    ],
)
def test_a_card_that_does_not_fit_its_model_is_refused_naming_it(
    models_copy: Path, change: Callable[[dict[str, Any]], None], problem: str
) -> None:
    """Such a card used to load: the model vanished from its routes while the server said ready,
    labelled every flight alike, or advertised inputs it does not take (an operator probe)."""
    edit_card(models_copy, MINIMAL_MODEL, change)
    with pytest.raises(ModelLoadError) as refused:
        ModelSet.load(models_copy)
    message = str(refused.value)
    assert message.startswith(f"model card refused: {models_copy / 'delay-minimal.json'}: ")
    assert problem in message
    assert "\n" not in message


def test_a_card_without_a_drift_profile_still_loads(models_copy: Path) -> None:
    """Cards exported before profiles existed are served, with no drift gauges."""
    edit_card(models_copy, MINIMAL_MODEL, lambda card: card.pop("profile"))
    assert ModelSet.load(models_copy).ready


def test_models_that_know_different_operators_are_refused_together(models_copy: Path) -> None:
    """Each card fits its own model, but one validator serves both: OPERA must allow the same
    airlines in each."""
    edit_card(models_copy, FULL_MODEL, lambda card: card["inputs"][0]["allowed"].pop())
    with pytest.raises(ModelLoadError, match=r"^the minimal and full models know different op"):
        ModelSet.load(models_copy)


@pytest.mark.parametrize(
    "probabilities",
    [np.array([np.nan], np.float32), np.array([0.2, 0.3], np.float32)],
    ids=["nan", "two"],
)
def test_a_warm_up_without_one_finite_probability_a_flight_is_refused(
    monkeypatch: pytest.MonkeyPatch, probabilities: np.ndarray
) -> None:
    model = OnnxModel.load(MODELS_DIR, MINIMAL_MODEL)
    monkeypatch.setattr(model, "predict_proba", lambda columns: probabilities)
    with pytest.raises(ModelLoadError, match="delay-minimal gave no usable probabilities"):
        model.warm_up(Columns(["Grupo LATAM"], ["N"], [3]))
    assert not model.ready


def test_another_models_encoder_is_refused_before_any_inference(models_copy: Path) -> None:
    """The full model's encoder on the minimal card: the graph takes 2 features (the committed
    model's), not 8, and the minimal contract has no schedule; said as such, not as a failed
    warm-up."""
    full = orjson.loads((models_copy / "delay-full.json").read_bytes())
    edit_card(models_copy, MINIMAL_MODEL, lambda card: card.update(encoder=full["encoder"]))
    with pytest.raises(ModelLoadError) as refused:
        ModelSet.load(models_copy)
    assert "its encoder takes the schedule, which delay-minimal's contract has not" in str(
        refused.value
    )
    assert f"the ONNX graph takes [features tensor(float) [None, {MINIMAL_WIDTH}]], not" in str(
        refused.value
    )


@pytest.mark.parametrize("name", ["delay-full.onnx", "delay-minimal.json"])
def test_a_fifo_in_place_of_a_model_file_is_refused_unopened(models_copy: Path, name: str) -> None:
    """A named pipe blocked its reader in open until someone wrote to it: a worker at start-up,
    the master on SIGHUP (an operator probe)."""
    fifo = fifo_in_place(models_copy / name)
    with pytest.raises(ModelLoadError) as refused:
        without_blocking(lambda: ModelSet.load(models_copy), [fifo])
    assert str(refused.value) == f"cannot read {fifo}: not a regular file but a named pipe (FIFO)"


def test_a_symlink_to_a_fifo_is_refused_as_what_it_resolves_to(
    models_copy: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    fifo = tmp_path_factory.mktemp("elsewhere") / "pipe"
    os.mkfifo(fifo)
    onnx = models_copy / "delay-full.onnx"
    onnx.unlink()
    onnx.symlink_to(fifo)
    with pytest.raises(ModelLoadError, match=r"delay-full\.onnx: not a regular file but a named"):
        without_blocking(lambda: ModelSet.load(models_copy), [fifo])


def test_a_fifo_swapped_in_after_the_path_check_is_refused_without_blocking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A regular file when `os.stat` looks, a named pipe when opened: opened non-blocking and
    checked again on its descriptor, it is refused rather than read or waited on."""
    fifo = tmp_path / "delay-minimal.json"
    os.mkfifo(fifo)
    regular, real_stat = os.stat(MODELS_DIR / "delay-minimal.json"), os.stat
    monkeypatch.setattr(
        os,
        "stat",
        lambda path, *args, **kwargs: (
            regular if str(path) == str(fifo) else real_stat(path, *args, **kwargs)
        ),
    )
    with pytest.raises(ModelLoadError) as refused:
        without_blocking(lambda: read_regular(fifo), [fifo])
    assert str(refused.value) == f"cannot read {fifo}: not a regular file but a named pipe (FIFO)"


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda path: os.mknod(path, stat.S_IFSOCK | 0o600), "a socket"),
        (lambda path: path.symlink_to("/dev/null"), "a character device"),
    ],
    ids=["socket", "character device"],
)
def test_a_card_that_is_no_file_is_refused_saying_what_it_is(
    models_copy: Path, make: Callable[[Path], None], kind: str
) -> None:
    card = models_copy / "delay-minimal.json"
    card.unlink()
    make(card)
    with pytest.raises(ModelLoadError) as refused:
        OnnxModel.load(models_copy, MINIMAL_MODEL)
    assert str(refused.value) == f"cannot read {card}: not a regular file but {kind}"


def test_a_mixed_batch_gets_each_contracts_answers_in_request_order_and_their_count() -> None:
    models = ModelSet.load(MODELS_DIR)
    minimal = _random_columns(models.minimal, 20, seed=3)
    full = _random_columns(models.full, 20, seed=4)
    batch = Batch(40, minimal, full, list(range(0, 40, 2)), list(range(1, 40, 2)))
    prediction = models.predict(batch)
    alone = (models.minimal.predict(minimal), models.full.predict(full))
    assert list(prediction.labels) == [
        int(label) for pair in zip(alone[0].labels, alone[1].labels, strict=True) for label in pair
    ]
    assert prediction.delayed == alone[0].delayed + alone[1].delayed == sum(prediction.labels)


def test_a_warm_up_inference_that_fails_is_refused_naming_the_model_and_the_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = OnnxModel.load(MODELS_DIR, MINIMAL_MODEL)

    def fail(columns: Columns) -> np.ndarray:
        raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT")

    monkeypatch.setattr(model, "predict_proba", fail)
    with pytest.raises(ModelLoadError) as refused:
        model.warm_up(Columns(["Grupo LATAM"], ["N"], [3]))
    assert str(refused.value) == (
        "model delay-minimal failed its warm-up inference: [ONNXRuntimeError] : 2 : INVALID_ARGUMENT"
    )
    assert not model.ready


def test_every_committed_card_fits_its_model() -> None:
    """fit_problems says nothing of the committed release (the export writes what it checks)."""
    for name in MODEL_NAMES:
        model = OnnxModel.load(MODELS_DIR, name)
        assert model.input_types == dict(CONTRACT_INPUTS[name])


def test_one_flights_label_is_the_arrays_comparison() -> None:
    """A lone flight's label (a Python comparison) is numpy's float32 comparison of an array,
    at the float32 neighbours of thresholds that a float32 cannot hold exactly, and JSON writes
    it the same."""
    rng = np.random.default_rng(3)
    for threshold in [0.5, 0.1, 0.3, 1 / 3, 0.2900000001, *rng.random(200).tolist()]:
        near = np.float32(threshold)
        candidates = [np.nextafter(near, np.float32(0)), near, np.nextafter(near, np.float32(1))]
        for probability in [*candidates, *rng.random(20).astype(np.float32)]:
            one = np.array([probability], dtype=np.float32)
            alone = Prediction.from_probabilities(one, threshold)
            expected = (one >= threshold).astype(np.int64)
            assert alone.labels == expected.tolist(), (threshold, probability)
            assert alone.delayed == int(expected[0])
            assert dumps({"predict": alone.labels}) == dumps({"predict": expected})
            assert alone.probabilities is one


def test_a_batch_labels_a_probability_equal_to_the_threshold_delayed() -> None:
    """Several flights' labels (one numpy comparison) follow the lone flight's rule at the
    threshold itself: equal is delayed."""
    below = np.nextafter(np.float32(0.5), np.float32(0))
    prediction = Prediction.from_probabilities(np.array([0.5, below], np.float32), 0.5)
    assert isinstance(prediction.labels, np.ndarray)
    assert prediction.labels.tolist() == [1, 0]
    assert prediction.delayed == 1


class _Outputs:
    """A session whose graph gives `outputs` ((name, type, shape) each) and the real inputs."""

    def __init__(
        self, session: ort.InferenceSession, outputs: list[tuple[str, str, list[Any]]]
    ) -> None:
        self.get_inputs = session.get_inputs
        self._outputs = [
            SimpleNamespace(name=name, type=type_, shape=shape) for name, type_, shape in outputs
        ]

    def get_outputs(self) -> list[SimpleNamespace]:
        return self._outputs


@pytest.mark.parametrize(
    "outputs",
    [
        [("label", "tensor(int64)", [None])],
        [("probabilities", "tensor(double)", [None, 2])],
        [("probabilities", "tensor(float)", [None, 3])],
        [("probabilities", "tensor(float)", [None])],
    ],
    ids=["none", "double", "three", "flat"],
)
def test_a_graph_without_two_float_probability_columns_is_refused(
    outputs: list[tuple[str, str, list[Any]]],
) -> None:
    card = ModelCard.from_json(orjson.loads((MODELS_DIR / "delay-minimal.json").read_bytes()))
    session = ort.InferenceSession(str(MODELS_DIR / card.onnx_file))
    assert fit_problems(card, MINIMAL_MODEL, session) == []
    problems = fit_problems(card, MINIMAL_MODEL, _Outputs(session, outputs))
    assert problems == ["the ONNX graph gives no probabilities tensor(float) [N, 2]"]


def test_a_threshold_at_the_lowest_samples_probability_is_refused_at_the_highest_it_fits() -> None:
    """A flight is delayed at a probability equal to the threshold: at the lowest sample's every
    sample is delayed (one label for all), at the highest that one sample alone is."""
    data = orjson.loads((MODELS_DIR / "delay-minimal.json").read_bytes())
    session = ort.InferenceSession(str(MODELS_DIR / data["onnx"]["file"]))
    probabilities = [sample["proba"] for sample in data["samples"]]
    lowest, highest = min(probabilities), max(probabilities)
    problems = fit_problems(
        ModelCard.from_json(data | {"threshold": lowest}), MINIMAL_MODEL, session
    )
    assert problems == [
        f"threshold {lowest:.6f} is outside its parity samples' probabilities "
        f"[{lowest:.6f}, {highest:.6f}] (the lowest and highest at training): every flight "
        "would get one label"
    ]
    card = ModelCard.from_json(data | {"threshold": highest})
    assert fit_problems(card, MINIMAL_MODEL, session) == []


@pytest.mark.parametrize(
    ("probabilities", "refused"),
    [([0.2, 0.4], True), ([0.2], False), ([0.2, "nan", 0.4], False)],
    ids=["two", "one", "not finite"],
)
def test_a_threshold_is_held_to_the_samples_span_when_two_finite_ones_give_it(
    probabilities: list[Any], refused: bool
) -> None:
    """One sample spans nothing, and a probability that is no number cannot bound anything:
    then, as with no samples, the threshold is only held inside (0, 1)."""
    data = orjson.loads((MODELS_DIR / "delay-minimal.json").read_bytes())
    session = ort.InferenceSession(str(MODELS_DIR / data["onnx"]["file"]))
    samples = [{"proba": probability} for probability in probabilities]
    card = ModelCard.from_json(data | {"threshold": 0.5, "samples": samples})
    problems = fit_problems(card, MINIMAL_MODEL, session)
    assert problems == (
        [
            "threshold 0.500000 is outside its parity samples' probabilities [0.200000, 0.400000]"
            " (the lowest and highest at training): every flight would get one label"
        ]
        if refused
        else []
    )


def test_a_graph_of_two_inputs_is_refused_listing_them() -> None:
    card = ModelCard.from_json(MINIMAL_CARD)
    session = ort.InferenceSession(str(MODELS_DIR / card.onnx_file))
    features = session.get_inputs()[0]
    extra = SimpleNamespace(name="extra", type="tensor(int64)", shape=[None])
    two_inputs = SimpleNamespace(
        get_inputs=lambda: [features, extra], get_outputs=session.get_outputs
    )
    assert fit_problems(card, MINIMAL_MODEL, two_inputs) == [
        f"the ONNX graph takes [features tensor(float) {features.shape}, extra tensor(int64) "
        f"[None]], not features tensor(float) [N, {MINIMAL_WIDTH}] (its card's encoder's features)"
    ]


def _array(values: list[int] | list[float] | np.ndarray) -> np.ndarray:
    """A Prediction's labels or probabilities known to be onnxruntime's: an array."""
    assert isinstance(values, np.ndarray)
    return values


def test_a_prediction_splits_into_its_requests_parts() -> None:
    probabilities = np.array([0.1, 0.9, 0.8, 0.2, 0.7], dtype=np.float32)
    whole = Prediction.from_probabilities(probabilities, 0.5)
    parts = whole.split([2, 1, 2])
    assert [_array(part.labels).tolist() for part in parts] == [[0, 1], [1], [0, 1]]
    assert [_array(part.probabilities).tolist() for part in parts] == [
        probabilities[:2].tolist(),
        probabilities[2:3].tolist(),
        probabilities[3:].tolist(),
    ]
    assert [part.delayed for part in parts] == [1, 1, 1]
    (alone,) = whole.split([5])
    assert alone is whole  # one request's merge: its prediction as it is


def test_an_onnxruntime_prediction_carries_its_calls_time_and_a_table_answer_none() -> None:
    model = OnnxModel.load(MODELS_DIR, MINIMAL_MODEL)  # not tabulated: onnxruntime scores
    lone = Columns(["Grupo LATAM"], ["N"], [3])
    timed = model.predict(lone)
    assert 0 < timed.seconds < 1.0
    model.tabulate()
    assert model.predict(lone).seconds == 0.0  # the table's answer
    whole = Prediction.from_probabilities(np.array([0.1, 0.9], np.float32), 0.5, timed.seconds)
    assert [part.seconds for part in whole.split([1, 1])] == [0.0, 0.0]  # the call counts once


@pytest.mark.parametrize("given", [None, "0"])
def test_loading_the_models_writes_nothing_in_home_or_tmpdir(
    tmp_path: Path, given: str | None
) -> None:
    """onnxruntime's telemetry is off unless the operator turns it on (app.TELEMETRY_ENV): on,
    a load wrote a device ID and an event database in $HOME/.cache and a `.ses` file in TMPDIR,
    left behind."""
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    env = {n: v for n, v in os.environ.items() if n not in (TELEMETRY_ENV, "XDG_CACHE_HOME")}
    env |= {"HOME": str(home), "TMPDIR": str(tmp)} | ({TELEMETRY_ENV: given} if given else {})
    script = (
        "import os; from pathlib import Path; from app.inference.model import ModelSet; "
        f"ModelSet.load(Path({str(MODELS_DIR)!r})); print(os.environ.get({TELEMETRY_ENV!r}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert loaded.returncode == 0, loaded.stderr
    if given is None:
        assert [str(p) for p in tmp_path.rglob("*") if p.is_file()] == []
        assert "telemetry" not in loaded.stderr
    assert loaded.stdout.strip() == (given or "1")  # an operator's own value is kept

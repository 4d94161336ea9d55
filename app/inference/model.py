"""The model contract: load an exported model, predict, say whether it is ready.

A model is an ONNX file plus its card (JSON): the card carries the feature encoding, the
decision threshold and the file's sha256, so a model can never be served with another model's
vocabulary or threshold, and a truncated or swapped file is refused at start-up. A card that does
not fit its model (another model's name, a version that is not its file's, a threshold that is no
probability, inputs other than its contract's or the graph's, a drift profile whose histograms do
not fit those inputs) is refused too (`fit_problems`), by start-up, a SIGHUP reload and
check_models alike; and a file that is not a regular one (a FIFO would block the reader forever)
is refused before it is read (`read_regular`).
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson

from app.errors import ModelLoadError
from app.inference.features import ROWS_BELOW, FeatureEncoder
from app.inference.flights import (
    FLIGHT_TYPES,
    MINIMAL_FIELDS,
    SCHEDULE_FIELDS,
    Batch,
    Columns,
    FlightValidator,
)
from app.observability.drift import Profile

MINIMAL_MODEL = "delay-minimal"
FULL_MODEL = "delay-full"
MODEL_NAMES = (MINIMAL_MODEL, FULL_MODEL)
ONNX_INPUT = "features"
ONNX_PROBABILITIES = "probabilities"
CLASSES = 2
"""Columns of ONNX_PROBABILITIES: on time, delayed."""
VERSION_HEX = 12
"""A model's version is the first this many hex digits of its ONNX file's sha256 (export.card)."""
CONTRACT_INPUTS: dict[str, tuple[tuple[str, str], ...]] = {
    model: tuple((field, "INT64" if field == "MES" else "BYTES") for field in fields)
    for model, fields in (
        (MINIMAL_MODEL, MINIMAL_FIELDS),
        (FULL_MODEL, MINIMAL_FIELDS + SCHEDULE_FIELDS),
    )
}
"""Each model's request contract, (name, OIP datatype) in order: what its card's `inputs` must
say, since the OIP decoder and the model metadata take them from the card."""
BOUND_ROWS_BELOW = ROWS_BELOW
"""Calls of fewer flights run on an IOBinding (`_Binding`): the encoder's by-rows calls, whose
time session.run's fixed cost (3 us) is a large part of."""


Observer = Callable[["OnnxModel", Columns, "Prediction"], None]
"""Told of every prediction (model, its flights, result): how metrics count and drift is watched
without this module knowing."""


@dataclass(frozen=True)
class ModelCard:
    name: str
    version: str
    threshold: float
    onnx_file: str
    onnx_sha256: str
    encoder: FeatureEncoder
    operators: tuple[str, ...]
    inputs: tuple[tuple[str, str], ...]
    """(name, datatype) of each request input, in the card's order"""
    raw: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelCard:
        return cls(
            name=str(data["name"]),
            version=str(data["version"]),
            threshold=float(data["threshold"]),
            onnx_file=str(data["onnx"]["file"]),
            onnx_sha256=str(data["onnx"]["sha256"]),
            encoder=FeatureEncoder.from_json(data["encoder"]),
            operators=tuple(_input(data, "OPERA")["allowed"]),
            inputs=tuple((str(item["name"]), str(item["datatype"])) for item in data["inputs"]),
            raw=data,
        )


def fit_problems(card: ModelCard, name: str, session: ort.InferenceSession) -> list[str]:
    """What makes `card` unfit to serve the model `name` from `session` (nothing: it fits). The
    loader refuses such a card (OnnxModel.load), so start-up, a reload and check_models keep one
    rule: a card that passed could otherwise rename a model away (its routes 404 while the server
    is ready), label every flight alike, advertise and decode other inputs than it takes, or
    crash every worker's drift monitor (app.observability.drift_metrics) on its profile."""
    problems = []
    if card.name != name:
        problems.append(f"it names itself {card.name!r}, not {name!r} (its file's model)")
    if card.version != card.onnx_sha256[:VERSION_HEX]:
        problems.append(
            f"version {card.version!r} is not the start of its ONNX sha256 {card.onnx_sha256}"
        )
    threshold = card.raw["threshold"]
    span = _sample_span(card.raw.get("samples"))
    if type(threshold) not in (int, float) or not (math.isfinite(threshold) and 0 < threshold < 1):
        problems.append(f"threshold {threshold!r} is not a probability strictly inside (0, 1)")
    elif span is not None and not span[0] < threshold <= span[1]:
        problems.append(
            f"threshold {threshold:.6f} is outside its parity samples' probabilities "
            f"[{span[0]:.6f}, {span[1]:.6f}] (the lowest and highest at training): every flight "
            "would get one label"
        )
    contract = CONTRACT_INPUTS[name]
    if card.inputs != contract:
        problems.append(
            f"inputs [{_listed(card.inputs)}] are not {name}'s contract [{_listed(contract)}]"
        )
    schedule = any(field in SCHEDULE_FIELDS for field, _ in contract)
    if card.encoder.schedule != schedule:
        problems.append(
            f"its encoder {'takes' if card.encoder.schedule else 'lacks'} the schedule, which "
            f"{name}'s contract {'has' if schedule else 'has not'}"
        )
    if not card.operators or not all(type(operator) is str for operator in card.operators):
        problems.append("its OPERA input allows no airline, or not as strings")
    profile = card.raw.get("profile")
    if profile is not None:  # a card exported before profiles is served without drift gauges
        try:
            Profile.from_json(profile, schedule)
        except ValueError as error:
            problems.append(f"its drift profile does not fit {name}'s contract: {error}")
    width = len(card.encoder.feature_names)
    graph_inputs = [(item.name, item.type, item.shape) for item in session.get_inputs()]
    if [(n, t) for n, t, _ in graph_inputs] != [(ONNX_INPUT, "tensor(float)")] or not _columns(
        graph_inputs[0][2], width
    ):
        shown = ", ".join(f"{n} {t} {s}" for n, t, s in graph_inputs)
        problems.append(
            f"the ONNX graph takes [{shown}], not {ONNX_INPUT} tensor(float) [N, {width}] "
            "(its card's encoder's features)"
        )
    outputs = {item.name: item for item in session.get_outputs()}
    output = outputs.get(ONNX_PROBABILITIES)
    if output is None or output.type != "tensor(float)" or not _columns(output.shape, CLASSES):
        problems.append(
            f"the ONNX graph gives no {ONNX_PROBABILITIES} tensor(float) [N, {CLASSES}]"
        )
    return problems


def _sample_span(samples: Any) -> tuple[float, float] | None:
    """The lowest and highest probability among the card's parity samples, which the export
    draws to run from the lowest training probability to the highest; None when there are none
    to read (app.inference.check_models says so; the server loads such a card)."""
    try:
        probabilities = [float(sample["proba"]) for sample in samples]
    except (KeyError, TypeError, ValueError):
        return None
    if len(probabilities) < 2 or not all(map(math.isfinite, probabilities)):
        return None
    return min(probabilities), max(probabilities)


def _listed(inputs: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{name} {datatype}" for name, datatype in inputs)


def _columns(shape: Sequence[Any], width: int) -> bool:
    """Whether an ONNX shape is [N, width] (a dimension without a fixed size fits any)."""
    return len(shape) == 2 and (not isinstance(shape[1], int) or shape[1] == width)


_NOT_REGULAR = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def read_regular(path: Path) -> bytes:
    """The bytes of `path`, which must be a regular file once symlinks are followed: anything
    else is refused (ModelLoadError naming it) before a blocking open or read. A FIFO would block
    the reader, the gunicorn master on SIGHUP included, until someone writes to it. Opened
    non-blocking and checked again on the open descriptor, so a swap between the two checks
    cannot block either. Other failures are the OSError they are (FileNotFoundError...)."""
    _refuse_unless_regular(path, os.stat(path).st_mode)
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(descriptor, "rb") as file:
        _refuse_unless_regular(path, os.fstat(descriptor).st_mode)
        os.set_blocking(descriptor, True)
        return file.read()


def _refuse_unless_regular(path: Path, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    kind = next((kind for test, kind in _NOT_REGULAR if test(mode)), "not a file")
    raise ModelLoadError(f"cannot read {path}: not a regular file but {kind}")


@dataclass(slots=True)
class Prediction:
    """One label and probability per flight, in order: numpy arrays from onnxruntime, plain
    lists from a tabulated model (orjson writes either without converting element by element)."""

    labels: list[int] | np.ndarray
    """1 = delayed more than 15 minutes"""
    probabilities: list[float] | np.ndarray
    """float32 values"""
    delayed: int
    """how many labels are 1"""
    seconds: float = 0.0
    """Wall time of the onnxruntime model call that made it, its features' encoding included;
    0.0 for the table's answers and in the parts `split` cuts a merged call into."""

    @classmethod
    def from_probabilities(
        cls, probabilities: np.ndarray, threshold: float, seconds: float = 0.0
    ) -> Prediction:
        if len(probabilities) == 1:  # one flight: a Python comparison, not three numpy calls
            # numpy compares a float32 array with a Python float in float32 (NEP 50): so does
            # this, exactly, on the two float32 values widened to doubles (1.8 -> 0.3 us)
            label = int(probabilities.item(0) >= _float32(threshold))
            return cls([label], probabilities, label, seconds)
        labels = (probabilities >= threshold).astype(np.int64)
        return cls(labels, probabilities, int(np.count_nonzero(labels)), seconds)

    def split(self, sizes: Sequence[int]) -> list[Prediction]:
        """Consecutive parts of `sizes` flights each, in order."""
        if list(sizes) == [len(self.labels)]:  # a merge of one request (alone in its loop pass)
            return [self]
        parts = []
        start = 0
        for size in sizes:
            labels = self.labels[start : start + size]
            probabilities = self.probabilities[start : start + size]
            parts.append(Prediction(labels, probabilities, int(np.count_nonzero(labels))))
            start += size
        return parts


def _input(card: dict[str, Any], name: str) -> dict[str, Any]:
    for item in card["inputs"]:
        if item["name"] == name:
            return dict(item)
    raise KeyError(f"input {name!r} not described")


class OnnxModel:
    """One exported model in one onnxruntime session."""

    def __init__(self, card: ModelCard, session: ort.InferenceSession) -> None:
        self.card = card
        self.name = card.name
        self.version = card.version
        self.threshold = card.threshold
        self.input_types = dict(card.inputs)
        self._encode = card.encoder.encode_columns
        self._run = session.run
        self._outputs = [ONNX_PROBABILITIES]
        self._bindings = _Bindings(session, len(card.encoder.feature_names))
        self._table: dict[tuple[str, str, int], tuple[int, float]] | None = None
        self.ready = False

    @classmethod
    def load(cls, models_dir: Path, name: str, threads: int = 1) -> OnnxModel:
        card_path = models_dir / f"{name}.json"
        try:
            card = ModelCard.from_json(orjson.loads(read_regular(card_path)))
        except FileNotFoundError:
            raise ModelLoadError(f"model card not found: {card_path}") from None
        except OSError as error:  # no permission, a directory in its place...
            raise ModelLoadError(f"cannot read {card_path}: {error.strerror}") from None
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
            raise ModelLoadError(f"model card unreadable: {card_path}: {error}") from None
        onnx_path = models_dir / card.onnx_file
        try:
            onnx_bytes = read_regular(onnx_path)
        except FileNotFoundError:
            raise ModelLoadError(f"model file not found: {onnx_path}") from None
        except OSError as error:
            raise ModelLoadError(f"cannot read {onnx_path}: {error.strerror}") from None
        if hashlib.sha256(onnx_bytes).hexdigest() != card.onnx_sha256:
            raise ModelLoadError(f"model file does not match its card's sha256: {onnx_path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own untyped failures
            raise ModelLoadError(f"model file unusable: {onnx_path}: {error}") from None
        problems = fit_problems(card, name, session)
        if problems:
            raise ModelLoadError(f"model card refused: {card_path}: {'; '.join(problems)}")
        return cls(card, session)

    def warm_up(self, flights: Columns) -> None:
        """One real inference before serving, so the first client does not pay for it; a model
        its card does not describe (another encoding) fails here, before any client sees it."""
        try:
            probabilities = self.predict_proba(flights)
        except Exception as error:  # onnxruntime raises its own untyped failures
            raise ModelLoadError(
                f"model {self.name} failed its warm-up inference: {error}"
            ) from None
        if probabilities.shape != (len(flights),) or not np.isfinite(probabilities).all():
            raise ModelLoadError(f"model {self.name} gave no usable probabilities on warm-up")
        self.ready = True

    def tabulate(self) -> None:
        """Scores the minimal model's whole input domain once, so that every later prediction
        is a dict lookup instead of an onnxruntime call.

        The domain is finite: 23 airlines x 2 flight types x 12 months = 552 flights, each
        scored here by the same session with the same threshold, so a table answer is the
        onnxruntime answer (tests/test_model.py checks every entry). It is not a cache: it is
        complete before the first request, never misses and never evicts.
        """
        if self.card.encoder.schedule:
            raise ValueError("only the minimal model has a finite input domain")
        domain = minimal_domain(self.card.operators)
        prediction = Prediction.from_probabilities(self.predict_proba(domain), self.threshold)
        self._table = {
            key: (int(label), _shortest(probability))
            for key, label, probability in zip(
                zip(domain.operator, domain.flight_type, domain.month, strict=True),
                prediction.labels,
                prediction.probabilities,
                strict=True,
            )
        }

    @property
    def tabulated(self) -> bool:
        """Whether a prediction is a table lookup (`tabulate`) rather than an onnxruntime call."""
        return self._table is not None

    def predict(self, columns: Columns) -> Prediction:
        table = self._table
        if table is None:
            start = time.perf_counter()
            probabilities = self.predict_proba(columns)
            seconds = time.perf_counter() - start
            return Prediction.from_probabilities(probabilities, self.threshold, seconds)
        if len(columns) == 1:  # a lone flight, the usual request: a third of the general way
            label, probability = table[
                columns.operator[0], columns.flight_type[0], columns.month[0]
            ]
            return Prediction([label], [probability], label)
        answers = [
            table[key]
            for key in zip(columns.operator, columns.flight_type, columns.month, strict=True)
        ]
        labels = [label for label, _ in answers]
        return Prediction(labels, [probability for _, probability in answers], sum(labels))

    def predict_proba(self, columns: Columns) -> np.ndarray:
        """Probability of a delay over 15 minutes, one per flight."""
        rows = len(columns)
        if not 0 < rows < BOUND_ROWS_BELOW:
            return self.predict_features(self._encode(columns))
        binding = self.binding(rows)
        self._encode(columns, binding.features)
        return binding.run()

    def binding(self, rows: int) -> _Binding:
        """The calling thread's IOBinding for calls of `rows` flights (fewer than
        BOUND_ROWS_BELOW): how `predict_proba` runs them (and `make bench` times them)."""
        return self._bindings.of(rows)

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        probabilities: np.ndarray = self._run(self._outputs, {ONNX_INPUT: features})[0]
        return np.ascontiguousarray(probabilities[:, 1])  # orjson serialises contiguous arrays only


class _Binding:
    """A session's IOBinding for calls of one number of flights, over buffers of its own: the
    encoder writes the features straight into `features`, onnxruntime its probabilities into
    another array, without the checks and conversions session.run makes on every call (for one
    flight of the full model: 9.0 -> 6.2 us). The same values: the same graph on the same input.
    Its buffers serve every call: one thread's only (`_Bindings`)."""

    def __init__(self, session: ort.InferenceSession, rows: int, width: int) -> None:
        self.features = np.zeros((rows, width), dtype=np.float32)
        self._probabilities = np.zeros((rows, CLASSES), dtype=np.float32)
        binding = session.io_binding()
        # OrtValues over the arrays (no copy on CPU), kept alive by the binding
        binding.bind_ortvalue_input(ONNX_INPUT, ort.OrtValue.ortvalue_from_numpy(self.features))
        binding.bind_ortvalue_output(
            ONNX_PROBABILITIES, ort.OrtValue.ortvalue_from_numpy(self._probabilities)
        )
        self._session = session
        self._binding = binding

    def run(self) -> np.ndarray:
        """The delay probabilities of `features`, in an array of their own (the buffer is
        overwritten by the next call)."""
        self._session.run_with_iobinding(self._binding)
        return self._probabilities[:, 1].copy()


class _Bindings(threading.local):
    """Each thread's own `_Binding`s of one session, by number of flights, made on first use: the
    event loop's requests and the batch thread (app.server.overload) may score at once."""

    def __init__(self, session: ort.InferenceSession, width: int) -> None:
        self._session = session
        self._width = width
        self._by_rows: dict[int, _Binding] = {}

    def of(self, rows: int) -> _Binding:
        binding = self._by_rows.get(rows)
        if binding is None:
            binding = self._by_rows[rows] = _Binding(self._session, rows, self._width)
        return binding


@lru_cache(maxsize=64)
def _float32(value: float) -> float:
    """`value` rounded to float32 and widened back; remembered, since a model's threshold is one
    value and np.float32() was most of a lone flight's label (0.2 of 0.3 us)."""
    return float(np.float32(value))


def _shortest(probability: float) -> float:
    """The double whose shortest repr is the float32's, so JSON shows the same digits either way."""
    return float(str(np.float32(probability)))


class ModelSet:
    """Both contracts' models: each flight goes to the model its fields allow."""

    def __init__(
        self, minimal: OnnxModel, full: OnnxModel, observe: Observer | None = None
    ) -> None:
        if minimal.card.operators != full.card.operators:
            raise ModelLoadError("the minimal and full models know different operators (OPERA)")
        self.minimal = minimal
        self.full = full
        self.by_name = {minimal.name: minimal, full.name: full}
        self.operators = minimal.card.operators
        calendar = full.card.encoder.calendar
        self.departure_years = None if calendar is None else calendar.exact_years
        """The years of departure (first, last) the full model's holiday calendar encodes
        exactly; None when it has no holiday features."""
        self.observe: Observer = observe or (lambda model, columns, prediction: None)
        """public: app.main adds the drift monitor once the models are loaded"""
        named = {model: f"{model.name}={model.version}".encode() for model in (minimal, full)}
        self._scored_by = {
            (True, False): named[minimal],
            (False, True): named[full],
            (True, True): named[minimal] + b", " + named[full],
        }

    def validator(self, max_flights: int) -> FlightValidator:
        """The request contract these models serve: their operators and the years their
        calendar encodes, at most `max_flights` flights a request."""
        return FlightValidator(self.operators, max_flights, self.departure_years)

    @classmethod
    def load(
        cls,
        models_dir: Path,
        threads: int = 1,
        observe: Observer | None = None,
        tabulate_minimal: bool = True,
    ) -> ModelSet:
        minimal, full = (OnnxModel.load(models_dir, name, threads) for name in MODEL_NAMES)
        models = cls(minimal, full, observe)
        example = Columns(
            [models.operators[0]], ["I"], [1], np.array(["2017-01-01T12:00"], "datetime64[m]"),
            ["SCFA"], ["LAN"], ["100"],
        )  # fmt: skip
        models.minimal.warm_up(example)
        models.full.warm_up(example)
        if tabulate_minimal:
            models.minimal.tabulate()
        return models

    @property
    def ready(self) -> bool:
        return self.minimal.ready and self.full.ready

    def scored_by(self, batch: Batch) -> bytes:
        """`name=version` of each model that scores `batch`, in MODEL_NAMES order: a /predict
        answer's X-Model-Version header (app.rest.routes). Its body, the challenge's contract,
        cannot say which release answered, and across a reload two releases answer at once."""
        return self._scored_by[batch.minimal is not None, batch.full is not None]

    def predict(self, batch: Batch) -> Prediction:
        """Each flight scored by its contract's model, in request order."""
        if batch.full is None:
            assert batch.minimal is not None
            return self.predict_with(self.minimal, batch.minimal)
        if batch.minimal is None:
            return self.predict_with(self.full, batch.full)
        labels = np.empty(batch.size, dtype=np.int64)
        probabilities = np.empty(batch.size, dtype=np.float32)
        delayed = 0
        for model, columns, rows in (
            (self.minimal, batch.minimal, batch.minimal_rows),
            (self.full, batch.full, batch.full_rows),
        ):
            part = self.predict_with(model, columns)
            labels[rows] = part.labels
            probabilities[rows] = part.probabilities
            delayed += part.delayed
        return Prediction(labels, probabilities, delayed)

    def predict_with(self, model: OnnxModel, columns: Columns) -> Prediction:
        prediction = model.predict(columns)
        self.observe(model, columns, prediction)
        return prediction

    def onnxruntime_model(self, batch: Batch) -> OnnxModel | None:
        """The model that scores every flight of `batch` by one onnxruntime call; None when the
        batch mixes the contracts or the table answers it."""
        if batch.minimal is not None and batch.full is not None:
            return None
        model = self.minimal if batch.full is None else self.full
        return None if model.tabulated else model

    def predict_each(self, model: OnnxModel, parts: Sequence[Columns]) -> list[Prediction]:
        """Several requests' flights, scored by `model` in one onnxruntime call and observed once,
        as the same flights in one request would be (app.inference.microbatch); each request its
        slice."""
        prediction = self.predict_with(model, Columns.joined(parts))
        return prediction.split([len(part) for part in parts])


def minimal_domain(operators: Sequence[str]) -> Columns:
    """Every minimal flight there can be: each operator, flight type and month."""
    rows = [(o, kind, month) for o in operators for kind in FLIGHT_TYPES for month in range(1, 13)]
    operator, flight_type, month = (list(column) for column in zip(*rows, strict=True))
    return Columns(operator, flight_type, month)

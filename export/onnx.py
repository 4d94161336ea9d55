"""scikit-learn estimator to ONNX bytes, and the parity check a model must pass to be written."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from lightgbm import LGBMClassifier
from onnx import TensorProto, helper
from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
from skl2onnx import to_onnx, update_registered_converter
from skl2onnx.common.data_types import FloatTensorType
from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes

from app.inference.model import ONNX_INPUT, ONNX_PROBABILITIES
from train.metrics import Platt

PARITY_TOLERANCE = 1e-4
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


class ParityError(Exception):
    """The ONNX model does not reproduce scikit-learn: it must not be written."""


@dataclass(frozen=True)
class Parity:
    rows: int
    max_abs_diff: float
    label_mismatches: int
    """Rows whose label differs although sklearn's probability is clear of the threshold."""
    near_threshold: int
    """Rows within the tolerance of the threshold, where float32 rounding may flip the label."""


def _register_lightgbm() -> None:
    """skl2onnx converts LightGBM with onnxmltools' converter once it is registered."""
    update_registered_converter(
        LGBMClassifier,
        "LightGbmLGBMClassifier",
        calculate_linear_classifier_output_shapes,
        convert_lightgbm,
        options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
    )


def convert(estimator: Any, n_features: int) -> bytes:
    """Probabilities as a plain [N, 2] float tensor (no ZipMap), input named `features`."""
    _register_lightgbm()
    model = to_onnx(
        estimator,
        initial_types=[(ONNX_INPUT, FloatTensorType([None, n_features]))],
        options={"zipmap": False},
        target_opset=TARGET_OPSET,
    )
    _order_opset_imports(model)
    _drop_unused_initializers(model)
    return bytes(model.SerializeToString())


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    """skl2onnx leaves a blend's `classes_ind` in the graph, read by no node: onnxruntime then
    warns on stderr, outside the service's JSON logs, at every session it opens."""
    graph = model.graph
    used = {name for node in graph.node for name in node.input}
    used |= {output.name for output in graph.output}
    kept = [initializer for initializer in graph.initializer if initializer.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _order_opset_imports(model: onnx.ModelProto) -> None:
    """skl2onnx lists the opset imports in the order of a set of (domain, version), which
    follows the process's string-hash seed: the same model came out as two different byte
    strings. Ordered by the first node of each domain (stable), the bytes depend on the model
    alone."""
    first: dict[str, int] = {}
    for position, node in enumerate(model.graph.node):
        first.setdefault(node.domain, position)
    ordered = sorted(
        model.opset_import,
        key=lambda opset: (first.get(opset.domain, len(model.graph.node)), opset.domain),
    )
    copies = [onnx.OperatorSetIdProto(domain=o.domain, version=o.version) for o in ordered]
    del model.opset_import[:]
    model.opset_import.extend(copies)


def onnx_probabilities(onnx_bytes: bytes, features: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    result: np.ndarray = session.run([ONNX_PROBABILITIES], {ONNX_INPUT: features})[0]
    return result[:, 1]


def with_platt(onnx_bytes: bytes, platt: Platt) -> bytes:
    """The model's probabilities passed through the Platt map inside the graph, so the service
    runs the calibrated model as one onnxruntime call: [1 - q, q], q = sigmoid(a logit(p) + b)."""
    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    raw = "uncalibrated_probabilities"
    # a blend's graph also reads its probabilities (its label is their ArgMax): those nodes
    # read the raw ones, computed before them, and the graph stays topologically sorted
    for node in graph.node:
        node.input[:] = [raw if name == ONNX_PROBABILITIES else name for name in node.input]
        node.output[:] = [raw if name == ONNX_PROBABILITIES else name for name in node.output]
    constants: dict[str, np.ndarray] = {
        "platt_one": np.array(1.0, dtype=np.float32),
        "platt_a": np.array(platt.a, dtype=np.float32),
        "platt_b": np.array(platt.b, dtype=np.float32),
        "platt_start": np.array([1], dtype=np.int64),
        "platt_end": np.array([2], dtype=np.int64),
        "platt_axis": np.array([1], dtype=np.int64),
    }
    graph.initializer.extend(
        helper.make_tensor(
            name,
            TensorProto.FLOAT if value.dtype == np.float32 else TensorProto.INT64,
            value.shape,
            value.flatten().tolist(),
        )
        for name, value in constants.items()
    )
    graph.node.extend(
        [
            helper.make_node("Slice", [raw, "platt_start", "platt_end", "platt_axis"], ["p"]),
            helper.make_node("Sub", ["platt_one", "p"], ["not_p"]),
            helper.make_node("Div", ["p", "not_p"], ["odds"]),
            helper.make_node("Log", ["odds"], ["logit"]),
            helper.make_node("Mul", ["logit", "platt_a"], ["scaled"]),
            helper.make_node("Add", ["scaled", "platt_b"], ["shifted"]),
            helper.make_node("Sigmoid", ["shifted"], ["q"]),
            helper.make_node("Sub", ["platt_one", "q"], ["not_q"]),
            helper.make_node("Concat", ["not_q", "q"], [ONNX_PROBABILITIES], axis=1),
        ]
    )
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


@dataclass(frozen=True)
class Calibrated:
    """A fitted estimator and its Platt map: what the exported graph computes, in numpy."""

    estimator: Any
    platt: Platt

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        q = self.platt.apply(self.estimator.predict_proba(features)[:, 1])
        return np.stack([1 - q, q], axis=1)


def costs_per_row(
    models: Sequence[tuple[bytes, np.ndarray]], rounds: int = 15
) -> list[tuple[float, float]]:
    """onnxruntime microseconds per row of each model at 1 and at 1,000 rows (one thread, as
    served): its fastest call, the models called in alternating rounds (A B C A B C ...).

    The choice compares these costs, so they must not move with the machine's load. Interference
    only ever adds time: a call the scheduler interrupts for a tick (about 1 ms, as long as a
    1,000-row call) costs about twice its work, and under contention the longer of two models'
    calls is interrupted more often. The median round, used until the forty-fourth session, let
    that price the HGB at 0.49 x the blend it costs about 0.87 x of in one fresh-clone export,
    and at 0.5 x or less in another (each beside other slow tests; both then served the HGB);
    the fastest call gave 0.86-0.87 x quiet, beside two CPU-bound and beside two memory-bound
    processes (development runs)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    sessions = [
        ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        for onnx_bytes, _ in models
    ]
    costs: list[list[float]] = [[] for _ in models]
    for rows, calls in ((1, 20), (1000, 4)):
        batches = [
            {ONNX_INPUT: np.ascontiguousarray(np.resize(features, (rows, features.shape[1])))}
            for _, features in models
        ]
        fastest = [float("inf")] * len(models)
        for _ in range(rounds):
            for index, (session, batch) in enumerate(zip(sessions, batches, strict=True)):
                for _ in range(calls):
                    start = time.perf_counter()
                    session.run([ONNX_PROBABILITIES], batch)
                    fastest[index] = min(fastest[index], time.perf_counter() - start)
        for cost, seconds in zip(costs, fastest, strict=True):
            cost.append(seconds * 1e6 / rows)
    return [(cost[0], cost[1]) for cost in costs]


def check_parity(
    onnx_bytes: bytes,
    estimator: Any,
    features: np.ndarray,
    threshold: float,
    tolerance: float = PARITY_TOLERANCE,
) -> Parity:
    expected = estimator.predict_proba(features)[:, 1]
    actual = onnx_probabilities(onnx_bytes, features)
    clear = np.abs(expected - threshold) > tolerance
    parity = Parity(
        rows=len(features),
        max_abs_diff=float(np.max(np.abs(expected - actual))),
        label_mismatches=int(np.sum(((expected >= threshold) != (actual >= threshold)) & clear)),
        near_threshold=int(np.sum(~clear)),
    )
    if parity.max_abs_diff > tolerance or parity.label_mismatches:
        raise ParityError(
            f"ONNX differs from scikit-learn on {parity.rows} rows: max |dproba| "
            f"{parity.max_abs_diff:.2e} (limit {tolerance:.0e}), "
            f"{parity.label_mismatches} labels differ away from the threshold"
        )
    return parity

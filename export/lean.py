"""Few-node ONNX graphs of the logistic regressions, the tree models and the blend.

Why: onnxruntime's cost for a few rows is per node (about 0.2 us a node plus about 5 us a
call, measured by an onnxruntime profile of the served blend in the sixth session: its tree
ensemble was 3 % of the kernel time),
and skl2onnx writes a one-hot logistic regression as Gathers, Casts, OneHotEncoders, Concats and
a LinearClassifier (the served minimal model: 18 nodes with its Platt map; the blend: 52). The
function is small, so it is written here as:

* each one-hot or binned column's contribution to the logit, a step function of that column,
  as one small tree of ONE ai.onnx.ml TreeEnsembleRegressor (leaves = coefficients; the
  intercept in its base values); a blend's HistGradientBoosting trees are skl2onnx's own,
  copied into a single-target TreeEnsembleRegressor of their own (as a second target of the
  same ensemble they cost 1.4 x as much at 1,000 rows);
* the standardised rate columns as one Gemm over the whole input row (mean and scale folded
  into the weights and the bias), which also adds the ensemble's output;
* a lone logistic regression's Platt map folded in (sigmoid(a z + b) is again a logistic of the
  same features): [1 - q, q] is one Sigmoid of [-(a z + b), a z + b], so the model is
  TreeEnsembleRegressor -> Gemm -> Sigmoid (no Gemm without rate columns);
* a tree model alone (HistGradientBoosting, LightGBM): skl2onnx's trees (onnxmltools' for
  LightGBM) in one single-target TreeEnsembleRegressor, their leaves and base value scaled
  and shifted so that it gives a z + b, the Platt map's logit; a Mul by [-1, 1] and a Sigmoid
  give [1 - q, q] (three nodes; skl2onnx's classifier with the Platt map appended is ten);
* a blend: the members' logits concatenated, Sigmoid, then [S, k - S] (S the sum of the k
  members' probabilities, one Gemm; repeated to LOG_COLUMNS columns), Log, and the Platt map
  on log S - log(k - S) = logit(S / k) as one Gemm giving [-(a l + b), a l + b], then Sigmoid:
  nine nodes for the served blend (two ensembles, the logistic regression's Gemm, Concat, five
  more).

The graph has skl2onnx's input (`features`, [N, F] float) and `probabilities` ([N, 2] float),
the only output the service asks for (app.inference.model); skl2onnx's `label` output (the argmax of
the uncalibrated probabilities, not the card's threshold) is not written.

Codes: a one-hot column's step function takes a code's integer part, as skl2onnx's graph does
(it casts the float to int64 before its OneHotEncoder): the same for every float the encoder
emits (integer codes) and for any other, in range or not: a code that is no category, a
fraction's integer part that is none, a code below 0 or above the last category contribute 0,
like OneHotEncoder's "ignore". scikit-learn itself ignores a fraction (1.5 is no category), so
there both graphs differ from it; the encoder never emits one. A binned column's thresholds are
the bin edges rounded up to float32, so a float32 value falls in scikit-learn's bin
(searchsorted in float64) whatever its value. A tree never fails on any input: no lookup can
be out of range. NaN or an infinity in a code column (never emitted either) counts as no
category too (a tree model's copied trees send it where skl2onnx's do), unless the model has rate
columns: then the Gemm over the whole row (0 x NaN) makes the probability NaN, where skl2onnx's
graph, scaling the rate columns alone, ignores it.

tests/test_lean.py checks these graphs against skl2onnx's (the reference) on every code each
column can take and on real rows; the export checks them against skl2onnx's on the served rows
before writing them (`served_onnx`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from lightgbm import LGBMClassifier
from onnx import TensorProto, helper, numpy_helper
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, VotingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import KBinsDiscretizer, OneHotEncoder, StandardScaler

from app.inference.model import ONNX_INPUT, ONNX_PROBABILITIES
from export.onnx import TARGET_OPSET, convert, onnx_probabilities, with_platt
from train.metrics import Platt

TREE_MODELS = (HistGradientBoostingClassifier, LGBMClassifier)
"""Written with skl2onnx's (onnxmltools') trees, copied into a TreeEnsembleRegressor."""
REFERENCE_TOLERANCE = 1e-5
"""Largest |dproba| allowed between a lean graph and skl2onnx's on the served rows."""
IR_VERSION = 8
"""The ONNX IR version of opset 17, as skl2onnx writes it."""
LOG_COLUMNS = 16
"""A blend's Log reads [S, k - S] repeated to this many columns, of which the Platt map's Gemm
reads the first two: onnxruntime's Log computes whole SIMD vectors, then the last elements of a
tensor whose size is no multiple of the vector one by one, which can give another last bit. At
two columns a flight's probability depended on the number of flights in its call (alone, as
the third of three: 163 of 2,000 flights 1 ulp apart from their value in a batch), so on the
requests a worker merged with it (tests/test_transports.py); at 16 (a multiple of every x86 and
Arm vector width of floats) every element is in a whole vector whatever the rows. One thread
per session (ORT_THREADS=1, the default) is also needed: with more, the tree ensembles sum
their trees in an order that depends on the rows."""


class LeanGraphError(Exception):
    """A lean graph does not compute what skl2onnx's graph does: it must not be written."""


@dataclass
class _Trees:
    """TreeEnsembleRegressor attributes, filled tree by tree."""

    trees: int = 0
    nodes: dict[str, list[Any]] = field(
        default_factory=lambda: {
            key: []
            for key in (
                "nodes_treeids",
                "nodes_nodeids",
                "nodes_featureids",
                "nodes_modes",
                "nodes_values",
                "nodes_truenodeids",
                "nodes_falsenodeids",
                "nodes_missing_value_tracks_true",
            )
        }
    )
    targets: dict[str, list[Any]] = field(
        default_factory=lambda: {
            key: [] for key in ("target_treeids", "target_nodeids", "target_ids", "target_weights")
        }
    )

    def add_node(
        self, node: int, feature: int, mode: str, value: float, true: int, false: int
    ) -> None:
        for key, item in zip(
            self.nodes,
            (self.trees, node, feature, mode, value, true, false, 0),
            strict=True,
        ):
            self.nodes[key].append(item)

    def add_leaf(self, node: int, weights: Sequence[tuple[int, float]]) -> None:
        self.add_node(node, 0, "LEAF", 0.0, 0, 0)
        for target, weight in weights:
            for key, item in zip(self.targets, (self.trees, node, target, weight), strict=True):
                self.targets[key].append(item)

    def add_steps(
        self,
        feature: int,
        breaks: Sequence[tuple[float, str]],
        leaves: Sequence[float],
        factors: Sequence[float],
    ) -> None:
        """A step function of one column as a balanced tree: leaf i lies between breaks i - 1
        and i (a break (t, "BRANCH_LT") sends x < t to the left, (t, "BRANCH_LEQ") x <= t);
        a leaf adds factor_t times its value to each target t."""
        counter = iter(range(2 * len(leaves)))

        def build(low: int, high: int) -> int:
            node = next(counter)
            if low == high:
                self.add_leaf(node, [(t, f * leaves[low]) for t, f in enumerate(factors)])
                return node
            middle = (low + high) // 2
            position = len(self.nodes["nodes_nodeids"])
            self.add_node(node, feature, breaks[middle][1], breaks[middle][0], 0, 0)
            self.nodes["nodes_truenodeids"][position] = build(low, middle)
            self.nodes["nodes_falsenodeids"][position] = build(middle + 1, high)
            return node

        build(0, len(leaves) - 1)
        self.trees += 1

    def add_skl2onnx_trees(self, attributes: Mapping[str, Any], factor: float) -> None:
        """A binary TreeEnsembleClassifier's trees (`_skl2onnx_trees`), factor times their raw
        score as the one target."""
        offset = self.trees
        tree_ids = [offset + tree for tree in attributes["nodes_treeids"]]
        for key in self.nodes:
            values = tree_ids if key == "nodes_treeids" else attributes[key]
            if key == "nodes_modes":
                values = [mode.decode() for mode in values]
            self.nodes[key].extend(values)
        self.targets["target_treeids"].extend(offset + t for t in attributes["class_treeids"])
        self.targets["target_nodeids"].extend(attributes["class_nodeids"])
        self.targets["target_ids"].extend(0 for _ in attributes["class_ids"])
        self.targets["target_weights"].extend(factor * w for w in attributes["class_weights"])
        self.trees = max(tree_ids, default=offset - 1) + 1

    def node(self, base_values: Sequence[float], output: str) -> onnx.NodeProto:
        attributes: dict[str, Any] = {
            key: _f32s(values) if key.endswith(("values", "weights")) else values
            for key, values in {**self.nodes, **self.targets}.items()
        }
        return helper.make_node(
            "TreeEnsembleRegressor",
            [ONNX_INPUT],
            [output],
            domain="ai.onnx.ml",
            n_targets=len(base_values),
            aggregate_function="SUM",
            post_transform="NONE",
            base_values=[_f32(v) for v in base_values],
            **attributes,
        )


@dataclass(frozen=True)
class _Linear:
    """A logistic regression pipeline's logit: sum of step functions + weights . x + bias."""

    steps: list[tuple[int, list[tuple[float, str]], list[float]]]
    weights: np.ndarray
    bias: float


def _linear(estimator: Any, n_features: int) -> _Linear | None:
    """The pipelines of train.candidates (`logistic`, `baseline`), or None for another model."""
    if not (
        isinstance(estimator, Pipeline)
        and len(estimator.steps) == 2
        and isinstance(estimator.steps[0][1], ColumnTransformer)
        and isinstance(estimator.steps[1][1], LogisticRegression)
    ):
        return None
    transformer: ColumnTransformer = estimator.steps[0][1]
    regression: LogisticRegression = estimator.steps[1][1]
    if regression.coef_.shape[0] != 1 or list(regression.classes_) != [0, 1]:
        return None
    coefficients = regression.coef_[0].astype(np.float64)
    steps: list[tuple[int, list[tuple[float, str]], list[float]]] = []
    weights = np.zeros(n_features)
    bias = float(regression.intercept_[0])
    for name, part, columns in transformer.transformers_:
        if isinstance(part, str):
            if part != "drop":
                return None
            continue
        coef = coefficients[transformer.output_indices_[name]]
        if isinstance(part, OneHotEncoder):
            if not _plain_onehot(part):
                return None
            start = 0
            for column, categories in zip(columns, part.categories_, strict=True):
                codes = np.asarray(categories, dtype=np.float64)
                if not (np.all(codes == np.round(codes)) and np.all(codes >= 0)):
                    return None
                breaks, leaves = _category_steps(codes, coef[start : start + len(codes)])
                bias += _add_step(steps, column, breaks, leaves)
                start += len(codes)
        elif isinstance(part, KBinsDiscretizer):
            if part.encode != "onehot-dense" or len(columns) != 1:
                return None
            edges = np.asarray(part.bin_edges_[0], dtype=np.float64)[1:-1]
            breaks = [(_float32_at_or_above(edge), "BRANCH_LT") for edge in edges]
            bias += _add_step(steps, columns[0], breaks, coef.tolist())
        elif isinstance(part, StandardScaler):
            mean = np.zeros(len(columns)) if part.mean_ is None else part.mean_
            scale = np.ones(len(columns)) if part.scale_ is None else part.scale_
            weights[list(columns)] += coef / scale
            bias -= float(np.sum(coef * mean / scale))
        else:
            return None
    return _Linear(steps, weights, bias) if steps else None


def _add_step(
    steps: list[tuple[int, list[tuple[float, str]], list[float]]],
    column: int,
    breaks: Sequence[tuple[float, str]],
    leaves: Sequence[float],
) -> float:
    """Adds the step function with equal neighbouring leaves merged; a constant one is not a
    tree: returns the constant, for the bias (0 otherwise)."""
    kept_breaks, kept_leaves = [], [leaves[0]]
    for brk, leaf in zip(breaks, leaves[1:], strict=True):
        if leaf != kept_leaves[-1]:
            kept_breaks.append(brk)
            kept_leaves.append(leaf)
    if len(kept_leaves) == 1:
        return kept_leaves[0]
    steps.append((column, kept_breaks, kept_leaves))
    return 0.0


def _plain_onehot(encoder: OneHotEncoder) -> bool:
    return (
        encoder.drop_idx_ is None
        and encoder.handle_unknown == "ignore"
        and encoder.min_frequency is None
        and encoder.max_categories is None
    )


def _category_steps(
    codes: np.ndarray, coef: np.ndarray
) -> tuple[list[tuple[float, str]], list[float]]:
    """A one-hot column's contribution by the integer part of the code (skl2onnx's cast):
    <= -1: none; (-1, 1): code 0's; [k, k + 1): code k's; from the last code + 1 on: none."""
    value = dict(zip(codes.astype(np.int64).tolist(), coef.tolist(), strict=True))
    last = max(value)
    breaks = [(-1.0, "BRANCH_LEQ")] + [(float(k), "BRANCH_LT") for k in range(1, last + 2)]
    leaves = [0.0] + [value.get(k, 0.0) for k in range(last + 1)] + [0.0]
    return breaks, leaves


def _float32_at_or_above(edge: float) -> float:
    """The least float32 >= edge: for a float32 x, x >= edge exactly when x >= it."""
    rounded = np.float32(edge)
    if float(rounded) < edge:
        rounded = np.nextafter(rounded, np.float32(np.inf))
    return float(rounded)


def _members(estimator: Any) -> list[Any] | None:
    """A blend's fitted members, or the model itself; None if not lean-convertible."""
    if isinstance(estimator, VotingClassifier):
        if estimator.voting != "soft" or estimator.weights is not None:
            return None
        return list(estimator.estimators_)
    return [estimator]


def lean_onnx(estimator: Any, n_features: int, platt: Platt) -> bytes | None:
    """The lean graph of a logistic regression pipeline, of a HistGradientBoosting or LightGBM
    classifier, or of a soft-vote blend of these, with its Platt map; None for any other model."""
    members = _members(estimator)
    if members is None:
        return None
    linear = [_linear(member, n_features) for member in members]
    if not all(
        part is not None or isinstance(member, TREE_MODELS)
        for member, part in zip(members, linear, strict=True)
    ):
        return None
    k = len(members)
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    if k == 1 and linear[0] is None:
        # a tree model alone, its Platt map folded in: one single-target ensemble of a z + b
        # (as two targets [-(a z + b), a z + b] its trees cost 1.2-1.5 x as much at 1,000
        # rows), then [-1, 1] times it and a Sigmoid
        logits = _member_logits(
            members[0], None, n_features, [platt.a], [platt.b], "z", nodes, initializers
        )
        initializers.append(_tensor("signs", np.array([-1.0, 1.0])))
        nodes += [
            helper.make_node("Mul", [logits, "signs"], ["calibrated_logits"]),
            helper.make_node("Sigmoid", ["calibrated_logits"], [ONNX_PROBABILITIES]),
        ]
    elif k == 1:
        # a lone logistic regression, its Platt map folded in: targets [-(a z + b), a z + b]
        logits = _member_logits(
            members[0],
            linear[0],
            n_features,
            [-platt.a, platt.a],
            [-platt.b, platt.b],
            "z",
            nodes,
            initializers,
        )
        nodes.append(helper.make_node("Sigmoid", [logits], [ONNX_PROBABILITIES]))
    else:
        # one single-target ensemble a member: at 1,000 rows the blend's two members as two
        # targets of one ensemble cost 1.4 x as much (onnxruntime 1.32)
        parts = [
            _member_logits(member, part, n_features, [1.0], [0.0], f"z{m}", nodes, initializers)
            for m, (member, part) in enumerate(zip(members, linear, strict=True))
        ]
        nodes.append(helper.make_node("Concat", parts, ["z"], axis=1))
        repeats = LOG_COLUMNS // 2
        platt_map = np.array([[-platt.a, platt.a], [platt.a, -platt.a]])
        initializers += [
            _tensor("sum_and_rest", np.tile([[1.0, -1.0]], (k, repeats))),
            _tensor("members", np.tile([0.0, float(k)], repeats)),
            _tensor("platt", np.vstack([platt_map, np.zeros((LOG_COLUMNS - 2, 2))])),
            _tensor("platt_b", np.array([-platt.b, platt.b])),
        ]
        nodes += [
            helper.make_node("Sigmoid", ["z"], ["member_probabilities"]),
            helper.make_node("Gemm", ["member_probabilities", "sum_and_rest", "members"], ["s"]),
            helper.make_node("Log", ["s"], ["log_s"]),
            helper.make_node("Gemm", ["log_s", "platt", "platt_b"], ["calibrated_logits"]),
            helper.make_node("Sigmoid", ["calibrated_logits"], [ONNX_PROBABILITIES]),
        ]
    graph = helper.make_graph(
        nodes,
        "lean",
        [helper.make_tensor_value_info(ONNX_INPUT, TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info(ONNX_PROBABILITIES, TensorProto.FLOAT, [None, 2])],
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(d, v) for d, v in TARGET_OPSET.items()],
        ir_version=IR_VERSION,
        producer_name="export.lean",
    )
    onnx.checker.check_model(model, full_check=True)
    return bytes(model.SerializeToString())


def _member_logits(
    member: Any,
    part: _Linear | None,
    n_features: int,
    factors: Sequence[float],
    shifts: Sequence[float],
    name: str,
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto],
) -> str:
    """Appends the nodes computing factor_t * (the member's logit) + shift_t for each target
    t: one TreeEnsembleRegressor (skl2onnx's trees for a tree model, one target only), then
    for a logistic regression with rate columns a Gemm adding their terms; returns the output."""
    trees = _Trees()
    if part is None:
        (factor,), (shift,) = factors, shifts
        attributes = _skl2onnx_trees(member, n_features)
        trees.add_skl2onnx_trees(attributes, factor)
        (base,) = attributes["base_values"]
        nodes.append(trees.node([factor * base + shift], name))
        return name
    for column, breaks, leaves in part.steps:
        trees.add_steps(column, breaks, leaves, factors)
    bases = [f * part.bias + shift for f, shift in zip(factors, shifts, strict=True)]
    if not np.any(part.weights):
        nodes.append(trees.node(bases, name))
        return name
    nodes.append(trees.node(bases, f"{name}_steps"))
    initializers.append(_tensor(f"{name}_rates", np.outer(part.weights, factors)))
    nodes.append(helper.make_node("Gemm", [ONNX_INPUT, f"{name}_rates", f"{name}_steps"], [name]))
    return name


def _skl2onnx_trees(member: Any, n_features: int) -> dict[str, Any]:
    """The attributes of the TreeEnsembleClassifier skl2onnx writes for a binary
    HistGradientBoosting (onnxmltools' for LightGBM, which writes no base value: 0), parsed:
    p = sigmoid(base + the trees' sum)."""
    model = onnx.load_from_string(convert(member, n_features))
    (classifier,) = [n for n in model.graph.node if n.op_type == "TreeEnsembleClassifier"]
    attributes = {a.name: helper.get_attribute_value(a) for a in classifier.attribute}
    attributes.setdefault("base_values", [0.0])
    if (
        attributes.get("post_transform") != b"LOGISTIC"
        or list(attributes.get("classlabels_int64s", [])) != [0, 1]
        or set(attributes["class_ids"]) != {0}
        or len(attributes["base_values"]) != 1
    ):
        raise LeanGraphError(f"skl2onnx wrote a {type(member).__name__} in an unexpected form")
    return attributes


def served_onnx(
    estimator: Any, n_features: int, platt: Platt, reference: np.ndarray | None = None
) -> bytes:
    """The graph the service runs: the lean one when the model has one, else skl2onnx's with
    the Platt map appended. With `reference` rows, the lean graph must give skl2onnx's
    probabilities on them (REFERENCE_TOLERANCE), or LeanGraphError."""
    lean = lean_onnx(estimator, n_features, platt)
    if lean is None:
        return with_platt(convert(estimator, n_features), platt)
    if reference is not None:
        library = with_platt(convert(estimator, n_features), platt)
        expected = onnx_probabilities(library, reference)
        gap = float(np.max(np.abs(onnx_probabilities(lean, reference) - expected)))
        if not gap <= REFERENCE_TOLERANCE:
            raise LeanGraphError(
                f"the lean graph differs from skl2onnx's by {gap:.2e} on {len(reference)} rows "
                f"(limit {REFERENCE_TOLERANCE:.0e})"
            )
    return lean


def _f32(value: float) -> float:
    return float(np.float32(value))


def _f32s(values: Sequence[float]) -> list[float]:
    return [float(value) for value in np.asarray(values, dtype=np.float32)]


def _tensor(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)

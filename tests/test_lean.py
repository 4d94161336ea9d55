"""export.lean against skl2onnx (the reference) and scikit-learn: on every code each column can
take, on codes the encoder never emits, and on the real data when it is there; for the
logistic regressions, the tree models alone and the blend."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import orjson
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

import export.lean as lean
from app.inference.features import HOLIDAY_HORIZON, Calendar, FeatureEncoder, from_flights
from app.inference.flights import Columns
from app.inference.model import ONNX_INPUT, ONNX_PROBABILITIES
from export.__main__ import fit_all
from export.lean import TREE_MODELS, LeanGraphError, lean_onnx, served_onnx
from export.onnx import Calibrated, check_parity, convert, onnx_probabilities, with_platt
from tests.conftest import MODELS_DIR, challenge_models
from train.candidates import (
    CANDIDATES,
    baseline,
    gradient_boosting,
    light_gradient_boosting,
    logistic,
)
from train.data import chilean_holidays, data_location, load
from train.metrics import Platt
from train.select import prepare, recipe_from_card

EXACT = 1e-6
"""Largest |dproba| between the lean graph and skl2onnx's (float32 sums in another order)."""
PLATT = Platt(a=0.8, b=-0.3)
FULL = ("hour", "weekday", "day", "holiday", "days_to_holiday", "days_after_holiday")
RATES = ("airline_rate", "flight_rate")


def domain(name: str, encoder: FeatureEncoder | None = None, operators: int = 24) -> np.ndarray:
    """Every value app.inference.features.FeatureEncoder can put in the column `name` (the rate
    columns, continuous, by a grid over the logits' clipped range): the request validator
    bounds MES to 1-12, a departure's minute gives the hour."""
    if name in ("OPERA", "TIPOVUELO"):
        size = operators if encoder is None else len(encoder.vocabularies[name].values)
        return np.arange(size if name == "OPERA" or encoder else 3)
    values = {
        "MES": np.arange(1, 13),
        "hour": np.arange(1440) / 60,
        "weekday": np.arange(7),
        "day": np.arange(1, 32),
        "day_of_year": np.arange(1, 367),
        "high_season": np.arange(2),
        "holiday": np.arange(2),
        "days_to_holiday": np.arange(HOLIDAY_HORIZON + 1),
        "days_after_holiday": np.arange(HOLIDAY_HORIZON + 1),
    }
    if name in values:
        return values[name]
    return np.linspace(-9.3, 9.3, 187)  # logits of rates clipped to [1e-4, 1 - 1e-4]


def on_the_domain(rows: np.ndarray, names: tuple[str, ...], **kwargs: Any) -> np.ndarray:
    """Each row with each column set to each value of its domain in turn."""
    blocks = []
    for column, name in enumerate(names):
        values = domain(name, **kwargs).astype(np.float32)
        block = np.repeat(rows, len(values), axis=0)
        block[:, column] = np.tile(values, len(rows))
        blocks.append(block)
    return np.concatenate(blocks)


def synthetic(names: tuple[str, ...], rows: int = 3000, seed: int = 0) -> tuple[Any, Any]:
    """Features shaped like the encoder's, fitted on a part of each domain only: OPERA code 15
    (an encoder's "~other") and TIPOVUELO 1 never occur, nor day 31, nor hours before 5 or
    after 23:00, so the tests meet codes a model never saw."""
    rng = np.random.default_rng(seed)
    columns = []
    for name in names:
        values = domain(name)
        if name == "OPERA":
            values = values[values != 15]
        elif name == "TIPOVUELO":
            values = np.array([0, 2])
        elif name == "day":
            values = values[:-1]
        elif name == "hour":
            values = values[(values >= 5) & (values < 23)]
        columns.append(rng.choice(values, rows))
    features = np.column_stack(columns).astype(np.float32)
    signal = features[:, 0] / 10 + (features[:, -1] if names[-1] in RATES else 0)
    labels = (rng.random(rows) < 1 / (1 + np.exp(-(signal - 1)))).astype(np.int64)
    return features, labels


def fitted(kind: str) -> tuple[Any, np.ndarray, tuple[str, ...]]:
    if kind == "minimal":
        names: tuple[str, ...] = ("OPERA", "TIPOVUELO")
        features, labels = synthetic(names)
        return logistic(names, {"C": 1.0}).fit(features, labels), features, names
    if kind == "baseline":
        names = ("OPERA", "TIPOVUELO", "MES")
        features, labels = synthetic(names)
        return baseline(names, {}).fit(features, labels), features, names
    names = FULL + RATES
    features, labels = synthetic(names)
    if kind == "logreg":
        return logistic(names, {"C": 0.1}).fit(features, labels), features, names
    if kind == "hgb":
        params: dict[str, Any] = {"max_iter": 30, "max_leaf_nodes": 15}
        return gradient_boosting(names, params).fit(features, labels), features, names
    if kind == "lgbm":
        params = {"n_estimators": 30, "num_leaves": 15}
        return light_gradient_boosting(names, params).fit(features, labels), features, names
    blend = next(c for c in CANDIDATES if c.components)
    params = {"logreg": {"C": 0.1}, "hgb": {"max_iter": 30, "max_leaf_nodes": 15}}
    return blend.build(names, params).fit(features, labels), features, names


KINDS = ("minimal", "baseline", "logreg", "hgb", "lgbm", "blend")


@pytest.fixture(scope="module", params=KINDS)
def model(request: pytest.FixtureRequest) -> tuple[Any, np.ndarray, tuple[str, ...]]:
    return fitted(request.param)


@pytest.fixture(scope="module", params=KINDS)
def kind_and_model(
    request: pytest.FixtureRequest,
) -> tuple[str, tuple[Any, np.ndarray, tuple[str, ...]]]:
    return str(request.param), fitted(request.param)


def reference(estimator: Any, width: int) -> bytes:
    return with_platt(convert(estimator, width), PLATT)


def ops(onnx_bytes: bytes) -> list[str]:
    return [node.op_type for node in onnx.load_from_string(onnx_bytes).graph.node]


def test_the_lean_graph_is_skl2onnxs_on_every_code_of_every_column(model: Any) -> None:
    estimator, features, names = model
    graph = lean_onnx(estimator, len(names), PLATT)
    assert graph is not None
    grid = on_the_domain(features[:40], names)
    expected = onnx_probabilities(reference(estimator, len(names)), grid)
    assert np.max(np.abs(onnx_probabilities(graph, grid) - expected)) <= EXACT
    # and scikit-learn's (the export's parity check) for a logistic regression; a tree model's
    # trees are skl2onnx's, whose float32 thresholds put some hours of this grid on the other
    # side of a split than scikit-learn's float64 ones (up to 3e-2 here)
    if isinstance(estimator, Pipeline):
        parity = check_parity(graph, Calibrated(estimator, PLATT), grid, 0.5)
        assert parity.max_abs_diff <= EXACT


def test_a_code_never_emitted_takes_its_integer_part_as_skl2onnx_does(model: Any) -> None:
    """Fractions, negative codes and codes past the last category: the same as skl2onnx's
    graph (its Cast to int64): a category's coefficient for its integer part, else none."""
    estimator, features, names = model
    graph = lean_onnx(estimator, len(names), PLATT)
    assert graph is not None
    rng = np.random.default_rng(1)
    rows = np.repeat(features[:20], 40, axis=0)
    coded = [i for i, name in enumerate(names) if name not in RATES and name != "hour"]
    for column in coded:
        odd = rows.copy()
        odd[:, column] = rng.uniform(-3.5, 45.5, len(odd)).astype(np.float32)
        odd[:5, column] = [-1.0, -0.999, 0.999, 1.0, 1e9]
        expected = onnx_probabilities(reference(estimator, len(names)), odd)
        assert np.max(np.abs(onnx_probabilities(graph, odd) - expected)) <= EXACT


def test_nan_and_infinite_codes_never_fail(model: Any) -> None:
    """Not emitted by the encoder; a tree cannot fail on any float (a Gather out of range
    would be a 500): a tree model's copied trees send them where skl2onnx's graph does; a
    logistic regression without rate columns scores them as a code with no category (-5);
    with them, the Gemm over the whole row (0 x NaN) makes the probability NaN, where
    skl2onnx's graph (which scales the rate columns alone) ignores them."""
    estimator, features, names = model
    graph = lean_onnx(estimator, len(names), PLATT)
    assert graph is not None
    for column, name in enumerate(names):
        if name in RATES or name == "hour":
            continue
        odd = np.repeat(features[:1], 4, axis=0)
        odd[:, column] = [np.nan, np.inf, -np.inf, -5.0]
        probabilities = onnx_probabilities(graph, odd)
        assert np.isfinite(probabilities[3])
        if isinstance(estimator, TREE_MODELS):
            expected = onnx_probabilities(reference(estimator, len(names)), odd)
            assert np.max(np.abs(probabilities - expected)) <= EXACT
        elif any(name in RATES for name in names):
            assert np.all(np.isnan(probabilities[:3]))
        else:
            assert np.all(probabilities[:3] == probabilities[3])


def test_an_hour_falls_in_scikit_learns_bin_whatever_its_float32_value() -> None:
    """Bin edges rounded up to float32: every float32 next to an edge is binned as
    KBinsDiscretizer bins it (in float64), and hours outside the fitted range clip."""
    estimator, features, names = fitted("logreg")
    graph = lean_onnx(estimator, len(names), PLATT)
    assert graph is not None
    edges = estimator.named_steps["encode"].named_transformers_["hour"].bin_edges_[0]
    near: list[float] = []
    for edge in edges:
        value = np.float32(edge)
        for _ in range(3):
            value = np.nextafter(value, np.float32(-np.inf))
        for _ in range(7):
            near.append(float(value))
            value = np.nextafter(value, np.float32(np.inf))
    near += [-50.0, 0.0, 4.99, 23.99, 24.0, 1e6]
    rows = np.repeat(features[:3], len(near), axis=0)
    rows[:, names.index("hour")] = np.tile(np.array(near, dtype=np.float32), 3)
    parity = check_parity(graph, Calibrated(estimator, PLATT), rows, 0.5)
    assert parity.max_abs_diff <= EXACT


def test_float32_at_or_above_is_the_least_float32_not_below_the_edge() -> None:
    for edge in [0.1, 1 / 3, 5.0, 23.958333333333332, -2.7, 1e-30]:
        rounded = lean._float32_at_or_above(edge)
        assert float(np.float32(rounded)) == rounded >= edge
        assert float(np.nextafter(np.float32(rounded), np.float32(-np.inf))) < edge


def test_the_graphs_are_a_few_nodes_with_the_services_input_and_output(
    kind_and_model: tuple[str, tuple[Any, np.ndarray, tuple[str, ...]]],
) -> None:
    kind, (estimator, features, names) = kind_and_model
    graph = lean_onnx(estimator, len(names), PLATT)
    assert graph is not None
    expected = {
        "minimal": ["TreeEnsembleRegressor", "Sigmoid"],
        "baseline": ["TreeEnsembleRegressor", "Sigmoid"],
        "logreg": ["TreeEnsembleRegressor", "Gemm", "Sigmoid"],
        "hgb": ["TreeEnsembleRegressor", "Mul", "Sigmoid"],
        "lgbm": ["TreeEnsembleRegressor", "Mul", "Sigmoid"],
        "blend": [
            *("TreeEnsembleRegressor", "Gemm", "TreeEnsembleRegressor", "Concat", "Sigmoid"),
            *("Gemm", "Log", "Gemm", "Sigmoid"),
        ],
    }
    assert ops(graph) == expected[kind]
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    [given] = session.get_inputs()
    [output] = session.get_outputs()
    assert (given.name, given.type, given.shape[1]) == (ONNX_INPUT, "tensor(float)", len(names))
    assert (output.name, output.type, output.shape[1]) == (ONNX_PROBABILITIES, "tensor(float)", 2)
    probabilities = session.run([ONNX_PROBABILITIES], {ONNX_INPUT: features[:50]})[0]
    assert probabilities.shape == (50, 2)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-6)
    assert lean_onnx(estimator, len(names), PLATT) == graph  # same model, same bytes


def test_a_rows_probability_does_not_depend_on_the_rows_called_with_it(model: Any) -> None:
    """A blend's Log once gave a flight alone, or third of three, another last bit than in a
    batch (onnxruntime's element-wise tail): the service merges concurrent requests into one
    call, so a flight's answer depended on its neighbours (export.lean.LOG_COLUMNS)."""
    estimator, features, names = model
    graph = lean_onnx(estimator, len(names), PLATT)
    assert graph is not None
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # as the service runs it (Settings.ort_threads)
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    rows = features[:300]

    def in_calls_of(size: int) -> np.ndarray:
        calls = [rows[start : start + size] for start in range(0, len(rows), size)]
        return np.concatenate([session.run(None, {ONNX_INPUT: call})[0][:, 1] for call in calls])

    batch = in_calls_of(len(rows))
    for size in (1, 3, 5, 17):
        assert np.array_equal(in_calls_of(size), batch), size


def test_a_model_without_a_lean_graph_keeps_skl2onnxs_graph_and_its_platt_map() -> None:
    features, labels = synthetic(FULL + RATES)
    estimator = LogisticRegression().fit(features, labels)  # no pipeline: not train.candidates'
    assert lean_onnx(estimator, features.shape[1], PLATT) is None
    served = served_onnx(estimator, features.shape[1], PLATT, reference=features)
    assert served == reference(estimator, features.shape[1])


@pytest.mark.parametrize("kind", ["hgb", "blend"])
def test_the_export_refuses_a_lean_graph_that_differs_from_skl2onnxs(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    estimator, features, names = fitted(kind)
    assert served_onnx(estimator, len(names), PLATT, features) == lean_onnx(
        estimator, len(names), PLATT
    )
    original = lean.lean_onnx

    def shifted(estimator: Any, width: int, platt: Platt) -> bytes | None:
        return original(estimator, width, Platt(platt.a, platt.b + 1e-3))

    monkeypatch.setattr(lean, "lean_onnx", shifted)
    with pytest.raises(LeanGraphError, match="differs from skl2onnx's"):
        served_onnx(estimator, len(names), PLATT, features)


# Real data: the served recipes (the committed cards) refitted, as the export fits them.

needs_data = pytest.mark.skipif(
    not data_location().is_file(), reason=f"real data not found at {data_location()}"
)


@pytest.fixture(scope="module")
def served_recipes() -> dict[str, tuple[Any, FeatureEncoder, np.ndarray, Platt]]:
    dataset = load(data_location())
    departure = dataset.table["Fecha-I"].to_numpy().astype("datetime64[m]")
    holidays = chilean_holidays()
    fitted_models = {}
    for name in ("delay-minimal", "delay-full"):
        card_path = MODELS_DIR / f"{name}.json"
        card = orjson.loads(card_path.read_bytes())
        recipe, _ = recipe_from_card(card_path)
        assert recipe is not None
        schedule = card["contract"] == "full"
        columns = from_flights(dataset.flights(schedule))
        months = prepare(columns, dataset.labels, holidays if schedule else None, departure).months
        estimator, encoder = fit_all(recipe, columns, dataset.labels, holidays, months)
        platt = Platt(card["calibration"]["a"], card["calibration"]["b"])
        fitted_models[name] = (estimator, encoder, encoder.encode_columns(columns), platt)
    return fitted_models


@needs_data
@pytest.mark.parametrize("name", ["delay-minimal", "delay-full", "delay-full hgb"])
def test_the_served_recipes_lean_graphs_are_skl2onnxs_on_real_rows_and_every_code(
    name: str, served_recipes: dict[str, tuple[Any, FeatureEncoder, np.ndarray, Platt]]
) -> None:
    """The served models, and the served blend's HistGradientBoosting member alone with the
    blend's Platt map: a tree model as the cost rule prices it (and the export would serve it)."""
    model_name, _, member = name.partition(" ")
    estimator, encoder, matrix, platt = served_recipes[model_name]
    if member and not hasattr(estimator, "named_estimators_"):
        pytest.skip(f"{model_name} in models/ is no blend (a retrain's choice): no {member} member")
    if member:
        estimator = estimator.named_estimators_[member]
    width = matrix.shape[1]
    graph = lean_onnx(estimator, width, platt)
    assert graph is not None
    library = with_platt(convert(estimator, width), platt)
    grid = on_the_domain(matrix[::2000], encoder.feature_names, encoder=encoder)
    for rows in (matrix, grid):
        gap = np.abs(onnx_probabilities(graph, rows) - onnx_probabilities(library, rows))
        assert np.max(gap) <= EXACT
    assert check_parity(graph, Calibrated(estimator, platt), matrix, 0.5).max_abs_diff <= EXACT


def test_the_committed_models_are_lean_graphs_of_few_nodes() -> None:
    """The committed models' node counts; models a retrain chose on other data (other recipes)
    are held to their cards' account of their graphs only."""
    committed = challenge_models()
    for name, nodes in (("delay-minimal", 2), ("delay-full", 9)):
        graph = onnx.load_from_string((MODELS_DIR / f"{name}.onnx").read_bytes())
        card = orjson.loads((MODELS_DIR / f"{name}.json").read_bytes())
        assert graph.producer_name == card["onnx"]["producer"]
        assert len(graph.graph.node) == card["onnx"]["nodes"]
        if committed:
            assert graph.producer_name == "export.lean"
            assert len(graph.graph.node) == nodes


def test_the_domains_hold_every_value_the_encoder_emits() -> None:
    """Every 13th minute of 2016-2020 (a leap year; 13 is prime to a day's 1,440 minutes, so
    every minute of the day comes) through the encoder's calendar groups and hour."""
    groups = ("hour", "weekday", "day", "day_of_year", "high season", "holidays")
    encoder = FeatureEncoder(groups, {}, calendar=Calendar(chilean_holidays()))
    minutes = np.arange(
        np.datetime64("2016-01-01T00:00"), np.datetime64("2021-01-01T00:00"), 13
    ).astype("datetime64[m]")
    rows = len(minutes)
    columns = Columns(["x"] * rows, ["I"] * rows, [1] * rows, minutes, None, None, None)
    matrix = encoder.encode_columns(columns)
    for column, name in enumerate(encoder.feature_names):
        emitted = np.unique(matrix[:, column])
        assert np.array_equal(emitted, np.unique(domain(name).astype(np.float32))), name

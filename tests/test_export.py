from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import orjson
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from starlette.testclient import TestClient

import export.__main__ as export_main
from app.inference.features import from_flights
from app.inference.model import MODEL_NAMES, ModelSet
from app.main import create_app
from app.settings import Settings
from export.onnx import (
    Calibrated,
    ParityError,
    check_parity,
    convert,
    costs_per_row,
    onnx_probabilities,
    with_platt,
)
from tests.conftest import MODELS_DIR, ROOT, challenge_models
from train.candidates import CANDIDATES, light_gradient_boosting
from train.data import CSV_SHA256, chilean_holidays, load
from train.evaluate import (
    Forward,
    Recipe,
    ages_after,
    forward_folds,
    inner_folds,
    month_keys,
)
from train.metrics import Platt
from train.provenance import machine
from train.report import FIGURES
from train.select import ContractEvaluation


def _toy(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.integers(0, 6, size=(600, 3)).astype(np.float32)
    labels = (features[:, 0] + rng.normal(0, 1.5, 600) > 3).astype(np.int64)
    return features, labels


def test_a_small_tree_ensemble_converts_under_the_installed_protobuf() -> None:
    """skl2onnx 1.20 cannot build TreeEnsembleClassifier under protobuf 7: pyproject pins <7."""
    features, labels = _toy()
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(features, labels)
    onnx_bytes = convert(model, 3)
    parity = check_parity(onnx_bytes, model, features, threshold=0.5)
    assert parity.max_abs_diff < 1e-5
    assert convert(model, 3) == onnx_bytes  # same model, same bytes


def test_costs_are_priced_together_one_pair_per_model_in_order() -> None:
    """The choice compares these costs: each model gets its own pair, in the order given (a
    2,000-leaf ensemble against a 3-tree one: far apart at 1,000 rows whatever the machine)."""
    features, labels = _toy()
    small = HistGradientBoostingClassifier(max_iter=3, max_leaf_nodes=4, random_state=0)
    large = HistGradientBoostingClassifier(
        max_iter=200, max_leaf_nodes=10, min_samples_leaf=1, early_stopping=False, random_state=0
    )
    models = [(convert(m.fit(features, labels), 3), features) for m in (large, small, small)]
    costs = costs_per_row(models, rounds=3)
    assert len(costs) == 3
    assert all(0 < c < 1e6 for pair in costs for c in pair)
    assert costs[0][1] > 3 * max(costs[1][1], costs[2][1])


def test_a_cost_is_the_fastest_call_however_many_calls_are_slowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Interference only adds time: a model whose calls are nearly all interrupted (here 19 in
    20 slowed by 5 ms) is priced by one that was not, so a loaded machine cannot make it look
    cheaper or dearer than another."""
    work_s, interrupted_s = 0.001, 0.005

    class Session:
        calls = 0

        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def run(self, *args: object) -> None:
            Session.calls += 1
            time.sleep(work_s if Session.calls % 20 == 10 else work_s + interrupted_s)

    monkeypatch.setattr("export.onnx.ort.InferenceSession", Session)
    features = np.zeros((2, 3), dtype=np.float32)
    # 5 rounds: 5 x 20 calls at one row, then 5 x 4 at 1,000 rows, one in 20 uninterrupted
    ((one_row_us, thousand_rows_us),) = costs_per_row([(b"", features)], rounds=5)
    assert work_s * 1e6 <= one_row_us < (work_s + interrupted_s / 2) * 1e6
    assert work_s * 1e3 <= thousand_rows_us < (work_s + interrupted_s / 2) * 1e3


def test_lightgbm_converts_through_onnxmltools() -> None:
    """The LightGBM candidate: same parity check as every exported model, same bytes twice."""
    features, labels = _toy()
    model = light_gradient_boosting(("a", "b", "c"), {"n_estimators": 20, "num_leaves": 7})
    model.fit(features, labels)
    onnx_bytes = convert(model, 3)
    parity = check_parity(onnx_bytes, model, features, threshold=0.5)
    assert parity.max_abs_diff < 1e-5
    assert convert(model, 3) == onnx_bytes


def test_the_blend_converts_to_one_graph() -> None:
    """The logistic-regression pipeline and the trees averaged in one ONNX graph: parity with
    scikit-learn, and the same bytes twice."""
    features, labels = _toy()
    names = ("OPERA", "hour", "airline_rate")
    blend = next(c for c in CANDIDATES if c.components)
    model = blend.build(names, {"logreg": {"C": 0.1}, "hgb": {"max_iter": 20}})
    model.fit(features, labels)
    onnx_bytes = convert(model, 3)
    parity = check_parity(onnx_bytes, model, features, threshold=0.5)
    assert parity.max_abs_diff < 1e-5
    assert convert(model, 3) == onnx_bytes
    # no initializer that no node reads (onnxruntime warns about each on stderr)
    graph = onnx.load_from_string(onnx_bytes).graph
    read = {name for node in graph.node for name in node.input}
    assert {initializer.name for initializer in graph.initializer} <= read
    # served, it carries its Platt map (its graph reads its own probabilities for the label)
    platt = Platt(a=0.8, b=-0.3)
    calibrated = with_platt(onnx_bytes, platt)
    assert check_parity(calibrated, Calibrated(model, platt), features, 0.5).max_abs_diff < 1e-5


_CONVERT_A_PIPELINE = """
import hashlib
import numpy as np
from export.onnx import convert
from train.candidates import logistic
rng = np.random.default_rng(0)
features = rng.integers(0, 4, size=(200, 2)).astype(np.float32)
model = logistic(("OPERA", "TIPOVUELO"), {}).fit(features, rng.integers(0, 2, 200))
print(hashlib.sha256(convert(model, 2)).hexdigest())
"""


def test_conversion_does_not_depend_on_the_string_hash_seed() -> None:
    """skl2onnx orders opset imports by a set of strings: without export.onnx's ordering, the
    same model gave different bytes from one process to the next (as a pytest run and a
    `make export` once did)."""
    digests = {
        subprocess.run(
            [sys.executable, "-c", _CONVERT_A_PIPELINE],
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
        ).stdout
        for seed in range(4)
    }
    assert len(digests) == 1


def test_the_platt_map_inside_the_graph_matches_numpy() -> None:
    features, labels = _toy()
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(features, labels)
    platt = Platt(a=0.8, b=-0.3)
    onnx_bytes = with_platt(convert(model, 3), platt)
    parity = check_parity(onnx_bytes, Calibrated(model, platt), features, threshold=0.5)
    assert parity.max_abs_diff < 1e-5
    raw = model.predict_proba(features)[:, 1]
    assert not np.allclose(onnx_probabilities(onnx_bytes, features), raw)


@pytest.mark.xfail(
    strict=True,
    reason="skl2onnx 1.20 converts HGB native categorical splits wrongly; "
    "we rank-encode categories instead. XPASS means it is fixed.",
)
def test_native_categorical_splits_convert_faithfully() -> None:
    features, labels = _toy()
    model = HistGradientBoostingClassifier(max_iter=20, categorical_features=[0], random_state=0)
    model.fit(features, labels)
    expected = model.predict_proba(features)[:, 1]
    assert np.abs(onnx_probabilities(convert(model, 3), features) - expected).max() < 1e-4


def test_parity_check_refuses_a_model_that_differs() -> None:
    features, labels = _toy()
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(features, labels)
    other = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(features, labels)
    with pytest.raises(ParityError, match="max \\|dproba\\|"):
        check_parity(convert(other, 3), model, features, threshold=0.5)


def test_export_writes_models_cards_and_report(synthetic_export: Path, synthetic_csv: Path) -> None:
    for name in MODEL_NAMES:
        card = orjson.loads((synthetic_export / "models" / f"{name}.json").read_bytes())
        onnx_bytes = (synthetic_export / "models" / f"{name}.onnx").read_bytes()
        assert card["onnx"]["sha256"] == hashlib.sha256(onnx_bytes).hexdigest()
        assert card["version"] == card["onnx"]["sha256"][:12]
        assert card["data"]["csv_sha256"] == load(synthetic_csv).csv_sha256
        assert card["parity"]["max_abs_diff"] <= 1e-4
        assert 0 < card["threshold"] < 1
        assert {"scikit-learn", "skl2onnx", "onnxruntime"} <= set(card["libraries"])
        assert card["seed"] == 0
        assert {
            "forward",
            "baseline_forward",
            "holdout_last_two_months",
            "cv_grouped_by_week",
            "cv_grouped_by_date_optimistic",
        } <= set(card["metrics"])
        forward = card["metrics"]["forward"]
        low, high = forward["interval"]
        assert low <= forward["mean_roc_auc"] <= high
        assert [m["month"] for m in forward["months"]] == [f"2017-{m:02d}" for m in range(6, 13)]
        assert card["encoder"]["groups"] == card["feature_groups"]["used"]
    report = (synthetic_export / "reports" / "model.md").read_text()
    assert "## minimal contract" in report
    assert "## full contract" in report
    assert "Nested rule" in report
    assert "One decision does read the report months" in report  # the GATE=1 veto
    assert "Champion/challenger" in report
    assert "at other recency weightings (reported only" in report
    assert "| blend(logreg(C=" in report  # a finalist in both contracts' tables
    assert report.count("Choice (select months only): best mean") == 2
    assert report.count("Never chosen on, for the record: each other finalist") == 2
    assert report.count("What any model of this contract can reach") == 1  # minimal only
    head = subprocess.run(
        ["git", "rev-parse", "--short=7", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    assert f"at code revision `{head}`" in report
    _, cpu, cores = machine()
    assert re.search(
        rf"`{head}`[^,]*, \d{{4}}-\d\d-\d\d \d\d:\d\d UTC, on {cores} cores of ", report
    )
    assert f"cores of {cpu}; every number below comes from that run (the timings" in report
    for figure in FIGURES:
        assert (synthetic_export / "reports" / "figures" / f"{figure}.png").stat().st_size > 1000


def test_exported_models_serve(synthetic_export: Path) -> None:
    app = create_app(Settings(models_dir=synthetic_export / "models"))
    with TestClient(app) as client:
        flight = {"OPERA": "Avianca", "TIPOVUELO": "I", "MES": 5}
        response = client.post("/predict?proba=true", json={"flights": [flight]})
        assert response.status_code == 200
        assert (
            client.post(
                "/predict", json={"flights": [flight | {"OPERA": "Grupo LATAM SA"}]}
            ).status_code
            == 400
        )


def test_export_is_deterministic(synthetic_export: Path, synthetic_csv: Path) -> None:
    _, staged = export_main.train_and_convert(load(synthetic_csv), synthetic_csv.name, quick=True)
    for name, item in staged.items():
        assert item.onnx == (synthetic_export / "models" / f"{name}.onnx").read_bytes()
        assert item.card == orjson.loads(
            (synthetic_export / "models" / f"{name}.json").read_bytes()
        )


def test_a_parity_failure_writes_nothing(
    synthetic_csv: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def failing(*args: object, **kwargs: object) -> None:
        raise ParityError("ONNX differs from scikit-learn")

    monkeypatch.setattr(export_main, "check_parity", failing)
    status = export_main.main(
        [
            "--data",
            str(synthetic_csv),
            "--models-dir",
            str(tmp_path / "m"),
            "--reports-dir",
            str(tmp_path / "r"),
            "--search",
            "first",
        ]
    )
    assert status == 1
    assert not (tmp_path / "m").exists()
    assert "ONNX differs" in capsys.readouterr().err


def test_missing_data_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        export_main.main(["--data", str(tmp_path / "none.csv.gz"), "--models-dir", str(tmp_path)])
        == 1
    )
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "data file not found" in error


def test_committed_models_come_from_the_real_data(real_data: Path) -> None:
    """The models in models/ were exported from the data $SCL_DATA names: the challenge's file
    for the committed ones, the pulled data in the retrain workflow (which exports into models/
    and then runs the tests on that data)."""
    models = ModelSet.load(MODELS_DIR)
    dataset = load(real_data)
    for model in models.by_name.values():
        card = model.card.raw
        assert card["data"]["csv_sha256"] == dataset.csv_sha256
        assert card["data"]["rows"] == card["parity"]["rows"] == len(dataset.table)
        if dataset.csv_sha256 == CSV_SHA256:
            assert card["data"]["rows"] == 68_206
        alert_rates = [month["alert_rate"] for month in card["metrics"]["forward"]["months"]]
        assert max(alert_rates) < 0.6


def _beats_the_baseline(name: str) -> bool:
    """Issue 9: forward mean and the last-two-months holdout both above the baseline's."""
    metrics = orjson.loads((MODELS_DIR / f"{name}.json").read_bytes())["metrics"]
    return bool(
        metrics["forward"]["mean_roc_auc"] > metrics["baseline_forward"]["mean_roc_auc"]
        and metrics["holdout_last_two_months"]["roc_auc"]
        > metrics["baseline_holdout_last_two_months"]["roc_auc"]
    )


def test_the_full_model_beats_the_baseline_forward(real_data: Path) -> None:
    assert _beats_the_baseline("delay-full")


@pytest.mark.xfail(
    strict=True,
    reason="three categorical fields: the minimal model's forward mean is above the baseline's "
    "(inside the noise with the month as the unit) but 0.0003 behind it on the holdout "
    "(reports/model.md); XPASS means it now beats it on both",
)
def test_the_minimal_model_beats_the_baseline_forward(real_data: Path) -> None:
    if not challenge_models():
        pytest.skip("the xfail is a fact of the models exported from the challenge's 2017 file")
    assert _beats_the_baseline("delay-minimal")


def test_gate_refuses_a_challenger_worse_beyond_the_interval() -> None:
    good = _forward_of(signal=1.0)
    bad = _forward_of(signal=0.1)
    evaluation = ContractEvaluation("full", bad, [bad], bad, [], [], "")
    evaluation.champion = good
    refusal = export_main.gate_refusal(evaluation)
    assert refusal is not None
    assert "worse than champion" in refusal
    evaluation.champion = _forward_of(signal=0.1, seed=1)  # as good, other noise
    assert export_main.gate_refusal(evaluation) is None
    evaluation.champion = None
    assert export_main.gate_refusal(evaluation) is None


def test_a_gate_without_a_champion_says_the_challenger_passes_unchecked() -> None:
    challenger = _forward_of(signal=1.0)
    evaluation = ContractEvaluation("full", challenger, [challenger], challenger, [], [], "")
    evaluation.champion_note = "delay-full: not a model card: no version, or no model"
    notice = export_main.gate_notice(evaluation)
    assert notice == (
        "full: no champion to compare the challenger with (delay-full: not a model card: no "
        "version, or no model): it passes unchecked"
    )
    evaluation.champion = _forward_of(signal=1.0, seed=1)
    assert export_main.gate_notice(evaluation) is None


def _forward_of(signal: float, seed: int = 0) -> Forward:
    rng = np.random.default_rng(seed)
    months = np.array([f"2017-{m:02d}" for m in range(1, 9) for _ in range(400)])
    folds = forward_folds(months)
    labels = [(rng.random(400) < 0.2).astype(np.int64) for _ in folds]
    scores = [1 / (1 + np.exp(-(signal * y + rng.normal(0, 1, 400)))) for y in labels]
    days = [np.repeat(np.arange(20), 20) for _ in folds]
    recipe = Recipe("logreg", CANDIDATES[1].build, {"signal": signal}, ("OPERA",))
    return Forward(recipe, folds, labels, scores, days, None, 0.0)


def test_gate_keeps_the_models_in_place(
    synthetic_export: Path,
    synthetic_csv: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    models = tmp_path / "models"
    shutil.copytree(synthetic_export / "models", models)
    (models / "delay-minimal.json").write_text("{")  # a champion the gate cannot read
    before = {path.name: path.read_bytes() for path in models.iterdir()}
    monkeypatch.setattr(export_main, "gate_refusal", lambda evaluation: "worse, say")
    arguments = ["--data", str(synthetic_csv), "--models-dir", str(models)]
    arguments += ["--reports-dir", str(tmp_path / "r"), "--search", "first"]
    assert export_main.main([*arguments, "--gate"]) == 1
    said = capsys.readouterr().err
    assert "gate: worse, say" in said
    assert "gate: minimal: no champion to compare the challenger with (" in said
    assert "gate: full: no champion" not in said
    assert {path.name: path.read_bytes() for path in models.iterdir()} == before
    assert not (tmp_path / "r").exists()


def test_a_weighted_recipe_is_served_fitted_on_rows_weighted_for_the_month_after_the_data(
    synthetic_csv: Path,
) -> None:
    dataset = load(synthetic_csv)
    flights = dataset.flights(True)
    columns = from_flights(flights)
    departure = dataset.table["Fecha-I"].to_numpy().astype("datetime64[m]")
    months = month_keys(departure)
    hgb = next(c for c in CANDIDATES if c.name == "hgb")
    recipe = Recipe("hgb", hgb.build, {"max_iter": 20}, ("OPERA", "hour"))
    weighted = replace(recipe, half_life=1.0)
    labels, holidays = dataset.labels, chilean_holidays()
    plain, encoder = export_main.fit_all(recipe, columns, labels, holidays, months)
    served, _ = export_main.fit_all(weighted, columns, labels, holidays, months)
    features = encoder.encode_training(columns, labels, inner_folds(columns))
    by_hand = weighted.fit(features, labels, ages_after(months))
    matrix = encoder.encode_columns(columns)
    probabilities = served.predict_proba(matrix)[:, 1]
    np.testing.assert_array_equal(probabilities, by_hand.predict_proba(matrix)[:, 1])
    assert not np.array_equal(probabilities, plain.predict_proba(matrix)[:, 1])


def _subset(real_data: Path, tmp_path: Path, months: int) -> Path:
    """The rows of the data's first `months` months (YYYY-MM: the month number alone would take
    the same months of every year of a longer file)."""
    table = pd.read_csv(real_data, dtype=str, keep_default_na=False)
    month = pd.to_datetime(table["Fecha-I"]).dt.strftime("%Y-%m")
    kept = sorted(set(month))[:months]
    path = tmp_path / f"months-1-{months}.csv.gz"
    table[month.isin(kept)].to_csv(path, index=False)
    return path


def test_fewer_than_four_months_of_real_data_is_a_one_line_error(
    real_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = [
        "--data",
        str(_subset(real_data, tmp_path, 3)),
        "--models-dir",
        str(tmp_path / "m"),
    ]
    assert export_main.main(arguments) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "needs at least 4" in error
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_export_works_on_january_to_october(
    real_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Today's crash: no November-December. The holdout becomes September-October."""
    arguments = ["--data", str(_subset(real_data, tmp_path, 10)), "--search", "first"]
    arguments += ["--models-dir", str(tmp_path / "m"), "--reports-dir", str(tmp_path / "r")]
    assert export_main.main(arguments) == 0
    card = orjson.loads((tmp_path / "m" / "delay-full.json").read_bytes())
    months = [m["month"] for m in card["metrics"]["forward"]["months"]]
    table = pd.read_csv(real_data, dtype=str, keep_default_na=False)
    present = sorted(set(pd.to_datetime(table["Fecha-I"]).dt.strftime("%Y-%m")))[:10]
    assert months == present[5:]  # 2017-06..2017-10 in the challenge's file
    assert f"{present[8]}..{present[9]}" in (tmp_path / "r" / "model.md").read_text()
    # The gate on real data: challengers that only know TIPOVUELO lose to these champions.
    before = {path.name: path.read_bytes() for path in (tmp_path / "m").iterdir()}
    crippled = [CANDIDATES[0]] + [
        replace(candidate, grid=candidate.grid[:1], groups=("TIPOVUELO",))
        for candidate in CANDIDATES[1:]
    ]
    monkeypatch.setattr(export_main, "CANDIDATES", crippled)
    assert export_main.main([*arguments, "--gate"]) == 1
    assert "worse than champion" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in (tmp_path / "m").iterdir()} == before


@pytest.mark.slow
def test_make_export_reproduces_the_committed_models(real_data: Path, tmp_path: Path) -> None:
    """Run as `make export` runs it, in its own process (an earlier in-process run gave other
    minimal-model bytes: the opset-import order, fixed in export.onnx and tested above)."""
    arguments = ["--data", str(real_data), "--models-dir", str(tmp_path / "models")]
    arguments += ["--reports-dir", str(tmp_path / "reports")]
    subprocess.run([sys.executable, "-m", "export", *arguments], check=True, cwd=ROOT)
    for name in MODEL_NAMES:
        committed = orjson.loads((MODELS_DIR / f"{name}.json").read_bytes())
        rebuilt = orjson.loads((tmp_path / "models" / f"{name}.json").read_bytes())
        assert rebuilt["metrics"] == committed["metrics"]
        assert rebuilt["version"] == committed["version"]

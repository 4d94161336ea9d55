"""train/slices.py: the served models' forward figures by airline and flight type."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from app.inference.flights import Columns
from tests.conftest import MODELS_DIR, ROOT
from train.candidates import CANDIDATES
from train.data import load
from train.evaluate import Fold, Forward, Recipe, forward_folds, run_forward
from train.slices import (
    MIN_FLIGHTS,
    OTHER_AIRLINES,
    Pooled,
    _verdicts,
    contract_slices,
    main,
    novelty,
    pooled,
    render,
    slice_figures,
    slices,
)


def _pooled(labels: np.ndarray, probabilities: np.ndarray, alerts: np.ndarray) -> Pooled:
    days = np.repeat(np.arange(len(labels) // 10), 10)
    return Pooled(np.arange(len(labels)), labels, probabilities, alerts, days)


def test_large_airlines_are_their_own_slice_largest_first_and_the_rest_pooled() -> None:
    airlines = np.array(["B"] * MIN_FLIGHTS + ["A"] * (MIN_FLIGHTS + 5) + ["C", "D"])
    kinds = np.resize(["N", "I"], len(airlines))
    masks = slices(airlines, kinds, np.arange(len(airlines)))
    assert list(masks) == ["all flights", "A", "B", OTHER_AIRLINES, "TIPOVUELO I", "TIPOVUELO N"]
    assert masks["all flights"].all()
    assert masks[OTHER_AIRLINES].sum() == 2
    assert masks["A"].sum() == MIN_FLIGHTS + 5
    assert masks["TIPOVUELO I"].sum() == len(airlines) // 2  # odd: one more N
    # masks are over the pooled flights (`rows` picks them from the data set's rows)
    assert len(slices(airlines, kinds, np.array([0, 1, len(airlines) - 1]))["all flights"]) == 3


def test_a_slice_ranked_perfectly_gains_over_a_baseline_that_ranks_by_chance() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(400) < 0.25).astype(np.int64)
    perfect = 0.1 + 0.8 * labels + rng.uniform(0, 0.05, 400)
    chance = rng.random(400)
    alerts = perfect > 0.5
    served = _pooled(labels, perfect, alerts)
    figures = slice_figures("all", served, _pooled(labels, chance, alerts), np.ones(400, bool))
    assert figures.flights == 400
    assert figures.roc_auc == 1.0
    assert figures.precision == 1.0
    assert figures.recall == 1.0
    assert figures.alert_rate == pytest.approx(labels.mean())
    assert figures.mean_probability == pytest.approx(perfect.mean())
    assert figures.gain_interval is not None
    assert figures.gain_interval[0] > 0.3
    assert figures.roc_auc_interval == (1.0, 1.0)


def test_the_gain_is_paired_a_model_against_itself_gains_exactly_nothing() -> None:
    """Both models' ROC-AUCs are taken on the same resampled days: unpaired, a model against
    itself would show a gain interval around 0 as wide as its own noise."""
    rng = np.random.default_rng(1)
    labels = (rng.random(400) < 0.3).astype(np.int64)
    served = _pooled(labels, rng.random(400) + 0.3 * labels, np.zeros(400, bool))
    figures = slice_figures("all", served, served, np.ones(400, bool))
    assert figures.gain_interval == (0.0, 0.0)
    assert figures.roc_auc_interval is not None
    assert figures.roc_auc_interval[0] < figures.roc_auc_interval[1]


def test_the_verdicts_sort_slices_by_where_the_gain_interval_lies() -> None:
    rows: list[dict[str, Any]] = [
        {"slice": "up", "gain_interval": (0.01, 0.05)},
        {"slice": "down", "gain_interval": (-0.05, -0.01)},
        {"slice": "either", "gain_interval": (-0.01, 0.01)},
        {"slice": "one outcome", "gain_interval": None},
    ]
    assert _verdicts(rows) == [
        "- Ranks better than the baseline (the gain's interval above 0): up.",
        "- Ranks worse than the baseline (the gain's interval below 0): down.",
        "- Ranks not shown better or worse (the interval contains 0): either.",
    ]
    assert _verdicts(rows[2:])[0].endswith("above 0): none.")


def test_a_slice_of_one_outcome_has_no_ranking_and_no_precision() -> None:
    labels = np.zeros(50, dtype=np.int64)
    served = _pooled(labels, np.linspace(0, 1, 50), np.zeros(50, bool))
    figures = slice_figures("none delayed", served, served, np.ones(50, bool))
    assert figures.roc_auc is None
    assert figures.gain_interval is None
    assert figures.precision is None
    assert figures.recall is None
    assert figures.delay_rate == 0.0


def test_a_flight_number_or_route_is_new_when_its_fold_never_trained_on_it() -> None:
    months = np.array(["2017-01", "2017-01", "2017-02", "2017-02", "2017-02", "2017-02"])
    columns = Columns(
        ["A"] * 6, ["N"] * 6, [1, 1, 2, 2, 2, 2],
        np.array(["2017-01-01T10:00"] * 6, dtype="datetime64[m]"),
        ["SCEL", "SAEZ", "SCEL", "SAEZ", "KMIA", "KMIA"],
        ["LAN"] * 6,
        ["1", "2", "1", "3", "4", "1"],
    )  # fmt: skip
    test = np.flatnonzero(months == "2017-02")
    fold = Fold("2017-02", np.flatnonzero(months == "2017-01"), test, "report", np.ones(2))
    flags = novelty(columns, [fold])
    new_flight = flags["flight number new (scored by its route or airline)"]
    # LAN 1 seen (to SCEL, and to KMIA a new route, still scored by LAN 1's rate); LAN 3, 4 not
    assert new_flight[test].tolist() == [False, True, True, False]
    by_airline = flags["flight number and route new (scored by its airline)"]
    assert by_airline[test].tolist() == [False, False, True, False]
    assert (flags["flight number seen in earlier months"] == ~new_flight).all()
    assert novelty(Columns(["A"], ["N"], [1]), [fold]) == {}


def test_pooling_keeps_the_forward_months_with_their_own_thresholds() -> None:
    rng = np.random.default_rng(3)
    months = np.repeat([f"2017-{m:02d}" for m in range(1, 9)], 100)
    folds = forward_folds(months)
    labels = [(rng.random(100) < 0.3).astype(np.int64) for _ in folds]
    probabilities = [np.clip(0.3 * y + rng.random(100) * 0.7, 0, 1) for y in labels]
    days = [np.repeat(np.arange(10), 10) for _ in folds]
    forward = Forward(
        Recipe("logreg", CANDIDATES[1].build, {}, ()), folds, labels, probabilities, days, None, 0
    )
    flights = pooled(forward)
    scored = [k for k, fold in enumerate(folds) if fold.role != "warm-up"]
    assert np.array_equal(flights.rows, np.concatenate([folds[k].test_rows for k in scored]))
    expected = np.concatenate([probabilities[k] >= forward.threshold_before(k) for k in scored])
    assert np.array_equal(flights.alerts, expected)
    assert np.array_equal(flights.probabilities, np.concatenate(forward.calibrated[1:]))


def test_main_slices_a_real_export(
    synthetic_csv: Path, synthetic_export: Path, tmp_path: Path
) -> None:
    models = synthetic_export / "models"
    assert (
        main(["--data", str(synthetic_csv), "--models-dir", str(models), "--out", str(tmp_path)])
        == 0
    )
    result = json.loads((tmp_path / "model-slices.json").read_text())
    assert (tmp_path / "model-slices.md").read_text() == render(result)
    for contract, name in (("minimal", "delay-minimal"), ("full", "delay-full")):
        figures = result["contracts"][contract]
        card = orjson.loads((models / f"{name}.json").read_bytes())
        assert figures["version"] == card["version"]
        rows = {row["slice"]: row for row in figures["slices"]}
        everything = rows["all flights"]["flights"]
        kinds = [row for name, row in rows.items() if name.startswith("TIPOVUELO")]
        assert sum(row["flights"] for row in kinds) == everything
        novel = {name: row for name, row in rows.items() if "new" in name or "seen" in name}
        airlines = [
            row
            for name, row in rows.items()
            if name != "all flights" and row not in kinds and name not in novel
        ]
        assert sum(row["flights"] for row in airlines) == everything
        if contract == "minimal":
            assert not novel  # no schedule, no flight numbers
        else:
            seen = novel["flight number seen in earlier months"]["flights"]
            new = novel.get("flight number new (scored by its route or airline)", {"flights": 0})
            assert seen + new["flights"] == everything
    report = (tmp_path / "model-slices.md").read_text()
    assert "## full contract: delay-full.json" in report
    assert "- Ranks better than the baseline" in report


def test_the_version_reported_is_that_of_the_card_whose_recipe_was_refitted(
    synthetic_csv: Path, synthetic_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export that replaces the card while its recipe is being refitted (seconds) must
    not lend its version to figures of the recipe read before it."""
    for path in (synthetic_export / "models").iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    card_path = tmp_path / "delay-full.json"
    card = orjson.loads(card_path.read_bytes())

    def refit_while_replaced(*args: Any, **kwargs: Any) -> Forward:
        card_path.write_bytes(orjson.dumps(card | {"version": "replaced meanwhile"}))
        return run_forward(*args, **kwargs)

    monkeypatch.setattr("train.slices.run_forward", refit_while_replaced)
    result = contract_slices(load(synthetic_csv), "full", card_path)
    assert result["version"] == card["version"]
    assert result["model"] == f"delay-full.json {card['version']}"


def test_a_card_without_a_recipe_is_one_line(
    synthetic_csv: Path, synthetic_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for path in (synthetic_export / "models").iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "delay-full.json").write_bytes(
        orjson.dumps({"version": "x", "model": {"estimator": "hgb"}, "encoder": {}})
    )
    assert main(["--data", str(synthetic_csv), "--models-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip().endswith("its recipe cannot be refitted by this code")


def test_a_card_cut_short_is_one_line(
    synthetic_csv: Path, synthetic_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for path in (synthetic_export / "models").iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    card = tmp_path / "delay-full.json"
    card.write_bytes(card.read_bytes()[:100])
    assert main(["--data", str(synthetic_csv), "--models-dir", str(tmp_path)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"{card}: not a model card: " in line


def test_missing_data_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(tmp_path / "none.csv.gz")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("model-slices: data file not found")
    assert "(--data, or make's SCL_DATA=)" in err  # not DATA=, which make ignores


def test_the_committed_report_is_of_the_committed_models_and_code() -> None:
    """`make model-slices` reruns after every export (the retrain workflow's step); a report of
    other models, or of uncommitted code, would describe what is not served."""
    result = json.loads((ROOT / "reports" / "model-slices.json").read_text())
    assert "uncommitted" not in result["revision"]
    for contract, name in (("minimal", "delay-minimal"), ("full", "delay-full")):
        card = orjson.loads((MODELS_DIR / f"{name}.json").read_bytes())
        assert result["contracts"][contract]["version"] == card["version"], (
            f"reports/model-slices.md is of another {contract} model: run `make model-slices`"
        )

from __future__ import annotations

import numpy as np
import pytest

from train.metrics import Platt, alert_as_many_as_delayed, expected_calibration_error, score


def test_perfectly_calibrated_probabilities_have_no_calibration_error() -> None:
    probabilities = np.repeat([0.05, 0.25, 0.75], 20)
    labels = np.concatenate([[1] + [0] * 19, [1] * 5 + [0] * 15, [1] * 15 + [0] * 5])
    assert expected_calibration_error(labels, probabilities) == pytest.approx(0.0)


def test_overconfident_probabilities_have_a_calibration_error() -> None:
    labels = np.array([0, 1] * 50)
    assert expected_calibration_error(labels, np.full(100, 0.95)) == pytest.approx(0.45)


def test_the_threshold_alerts_as_many_flights_as_were_delayed() -> None:
    rng = np.random.default_rng(0)
    probabilities = rng.random(1000)
    labels = (rng.random(1000) < 0.2).astype(np.int64)
    threshold = alert_as_many_as_delayed(labels, probabilities)
    assert (probabilities >= threshold).mean() == pytest.approx(labels.mean(), abs=0.002)
    scores = score(labels, probabilities, threshold)
    assert scores.precision == pytest.approx(scores.recall, abs=0.02)


def test_score_counts_the_confusion_matrix_at_the_threshold() -> None:
    labels = np.array([0, 0, 1, 1])
    probabilities = np.array([0.2, 0.7, 0.4, 0.8])
    scores = score(labels, probabilities, 0.5)
    assert scores.confusion == [[1, 1], [1, 1]]
    assert (scores.precision, scores.recall, scores.accuracy, scores.f1) == (0.5, 0.5, 0.5, 0.5)
    assert scores.roc_auc == pytest.approx(0.75)
    assert set(scores.to_json()) >= {"roc_auc", "pr_auc", "brier", "ece", "threshold", "confusion"}


def test_platt_recalibrates_a_shifted_model_without_reordering_it() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random(5000) * 0.5
    labels = (rng.random(5000) < truth).astype(np.int64)
    shifted = np.clip(truth * 0.5, 1e-3, 1)  # ranks right, half the level
    platt = Platt.fit(labels, shifted)
    calibrated = platt.apply(shifted)
    assert expected_calibration_error(labels, calibrated) < 0.02
    assert expected_calibration_error(labels, shifted) > 0.05
    assert (np.argsort(calibrated, kind="stable") == np.argsort(shifted, kind="stable")).all()


def test_calibration_bins_are_tenths_and_a_probability_of_one_is_in_the_last() -> None:
    """0.1 and 0.19 share the bin [0.1, 0.2); 1.0 is in the last bin, [0.9, 1.0], not outside."""
    assert expected_calibration_error(np.array([0, 1]), np.array([0.1, 0.19])) == pytest.approx(
        abs(0.5 - 0.145)
    )
    assert expected_calibration_error(np.array([0]), np.array([1.0])) == pytest.approx(1.0)


def test_a_probability_at_the_threshold_is_alerted_and_no_alert_scores_zero() -> None:
    labels = np.array([0, 1, 1])
    probabilities = np.array([0.2, 0.5, 0.4])
    alerted = score(labels, probabilities, 0.5)
    assert alerted.confusion == [[1, 0], [1, 1]]
    assert (alerted.precision, alerted.recall) == (1.0, 0.5)
    assert alerted.to_json()["f1"] == 0.666667  # 2 p r / (p + r), rounded to 6 digits
    assert alerted.to_json()["accuracy"] == 0.666667
    silent = score(labels, probabilities, 0.9)  # nothing alerted: no precision to speak of
    assert (silent.precision, silent.recall, silent.f1) == (0.0, 0.0, 0.0)
    assert silent.confusion == [[1, 0], [2, 0]]


def test_the_platt_map_is_sigmoid_of_a_times_the_logit_plus_b() -> None:
    """The formula export/onnx.py folds into the served graph; Platt() is the identity."""
    probabilities = np.array([0.01, 0.2, 0.5, 0.9])
    np.testing.assert_allclose(Platt().apply(probabilities), probabilities)
    logit = np.log(probabilities / (1 - probabilities))
    expected = 1 / (1 + np.exp(-(2.0 * logit - 0.5)))
    np.testing.assert_allclose(Platt(2.0, -0.5).apply(probabilities), expected)


def test_calibration_errors_of_different_bins_do_not_cancel() -> None:
    """Each tenth is its own bin, the last one too: over- and under-confidence in two bins add
    up, where one bin for both (fewer or wider bins) would show none."""
    low, high = np.full(10, 0.1), np.full(10, 0.9)
    labels = np.array([1] * 3 + [0] * 7 + [1] * 7 + [0] * 3)  # 0.3 at 0.1, 0.7 at 0.9
    assert expected_calibration_error(labels, np.concatenate([low, high])) == pytest.approx(0.2)
    top = np.concatenate([np.full(20, 0.85), np.full(20, 0.95)])
    labels = np.array([1] * 19 + [0] + [1] * 17 + [0] * 3)  # 0.95 at 0.85, 0.85 at 0.95
    assert expected_calibration_error(labels, top) == pytest.approx(0.1)


def test_platt_fits_and_maps_probabilities_of_exactly_zero_and_one() -> None:
    """Trees answer 0 and 1 exactly: their logits are clipped, never infinite."""
    probabilities = np.array([0.0, 0.0, 0.3, 0.6, 1.0, 1.0] * 10)
    labels = np.array([0, 1, 0, 1, 1, 1] * 10)
    platt = Platt.fit(labels, probabilities)
    assert np.isfinite([platt.a, platt.b]).all()
    mapped = Platt().apply(np.array([0.0, 1.0]))
    assert 0.0 < mapped[0] < 1e-6
    assert 1 - 1e-6 < mapped[1] < 1.0

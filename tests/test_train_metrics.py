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
    assert (scores.precision, scores.recall, scores.accuracy) == (0.5, 0.5, 0.5)
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

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from app.features import FULL_FEATURES, MINIMAL_FEATURES, OTHER, FeatureEncoder, Vocabulary
from app.flights import Flight, Schedule


def test_vocabulary_ranks_categories_by_delay_rate_and_pools_rare_ones() -> None:
    values = ["A"] * 4 + ["B"] * 4 + ["C"] * 4 + ["rare1", "rare2"]
    labels = [1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1]
    vocabulary = Vocabulary.fit(values, labels, min_count=3)
    assert vocabulary.values == ("B", "C", "A", OTHER)  # rates 0, .25, .75, 1.0


def test_vocabulary_without_rare_values_ranks_other_at_the_overall_rate() -> None:
    vocabulary = Vocabulary.fit(["A", "A", "B", "B"], [0, 0, 1, 1], min_count=1)
    assert vocabulary.values == ("A", OTHER, "B")


def test_vocabulary_must_hold_other_once() -> None:
    with pytest.raises(ValueError, match="OTHER"):
        Vocabulary(("A", "B"))


def _flights() -> list[Flight]:
    return [
        Flight("X", "I", 1, Schedule(datetime(2017, 1, 1, 23, 30), "KMIA", "AAL", "226")),
        Flight("Y", "N", 12, Schedule(datetime(2017, 12, 31, 6, 15), "SCFA", "SKU", "10")),
        Flight("Y", "N", 6, Schedule(datetime(2017, 6, 30, 12, 0), "SCFA", "SKU", "10")),
    ]


def test_full_encoding_derives_calendar_features_from_the_schedule() -> None:
    encoder = FeatureEncoder.fit(_flights(), [1, 0, 0], schedule=True)
    matrix = encoder.encode(_flights())
    assert matrix.dtype == np.float32
    assert matrix.shape == (3, len(FULL_FEATURES))
    row = dict(zip(FULL_FEATURES, matrix[1], strict=True))
    assert row["MES"] == 12
    assert row["hour"] == pytest.approx(6.25)
    assert row["weekday"] == 6  # 2017-12-31 was a Sunday
    assert row["day"] == 31
    assert row["day_of_year"] == 365


def test_unseen_categories_share_the_other_code() -> None:
    encoder = FeatureEncoder.fit(_flights(), [1, 0, 0], schedule=True)
    unseen = Flight("Z", "I", 1, Schedule(datetime(2017, 1, 1), "ZZZZ", "ZZZ", "1"))
    row = dict(zip(FULL_FEATURES, encoder.encode([unseen])[0], strict=True))
    for feature in ("OPERA", "Des-I", "Emp-I", "Emp-I+Vlo-I"):
        assert row[feature] == encoder.vocabularies[feature].codes[OTHER]


def test_minimal_encoding_ignores_the_schedule() -> None:
    encoder = FeatureEncoder.fit(_flights(), [1, 0, 0], schedule=False)
    assert encoder.feature_names == MINIMAL_FEATURES
    assert encoder.encode(_flights()).shape == (3, 3)


def test_full_encoder_refuses_a_flight_without_schedule() -> None:
    encoder = FeatureEncoder.fit(_flights(), [1, 0, 0], schedule=True)
    with pytest.raises(ValueError, match="schedule"):
        encoder.encode([Flight("X", "I", 1)])


def test_json_round_trip_encodes_identically() -> None:
    encoder = FeatureEncoder.fit(_flights(), [1, 0, 0], schedule=True)
    again = FeatureEncoder.from_json(encoder.to_json())
    np.testing.assert_array_equal(again.encode(_flights()), encoder.encode(_flights()))


def test_from_json_refuses_features_of_another_code_version() -> None:
    data = FeatureEncoder.fit(_flights(), [1, 0, 0], schedule=False).to_json()
    data["features"] = ["OPERA", "MES"]
    with pytest.raises(ValueError, match="do not match"):
        FeatureEncoder.from_json(data)

from __future__ import annotations

import re
from dataclasses import fields
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from app.inference.features import (
    GROUPS,
    MINIMAL_GROUPS,
    OTHER,
    ROWS_BELOW,
    SMOOTHING,
    Calendar,
    FeatureEncoder,
    Vocabulary,
    feature_names,
    from_flights,
    hierarchy_keys,
    high_season,
    take,
)
from app.inference.flights import Columns, Flight, Schedule
from app.inference.model import ModelSet
from tests.conftest import MODELS_DIR
from train.data import HOLIDAY_YEARS, chilean_holidays

HOLIDAYS = np.array(["2017-01-01", "2017-09-18", "2017-09-19", "2017-12-25"], dtype="datetime64[D]")


def _flights() -> list[Flight]:
    return [
        Flight("X", "I", 1, Schedule(datetime(2017, 1, 1, 23, 30), "KMIA", "AAL", "226")),
        Flight("Y", "N", 12, Schedule(datetime(2017, 12, 31, 6, 15), "SCFA", "SKU", "10")),
        Flight("Y", "N", 9, Schedule(datetime(2017, 9, 15, 12, 0), "SCFA", "SKU", "10")),
    ]


def _row(encoder: FeatureEncoder, flight: Flight) -> dict[str, float]:
    return dict(zip(encoder.feature_names, encoder.encode([flight])[0].tolist(), strict=True))


def test_vocabulary_ranks_categories_by_delay_rate() -> None:
    values = np.array(["A"] * 4 + ["B"] * 4 + ["C"] * 4)
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0])
    vocabulary = Vocabulary.fit(values, labels)
    assert vocabulary.values == ("B", "C", OTHER, "A")  # rates 0, .25, .33 overall, .75
    assert vocabulary.encode(np.array(["A", "Z"])).tolist() == [3, 2]


def test_vocabulary_must_hold_other_once() -> None:
    with pytest.raises(ValueError, match="OTHER"):
        Vocabulary(("A", "B"))
    with pytest.raises(ValueError, match="each value once"):  # a card listing one twice
        Vocabulary(("A", OTHER, "A"))


def test_calendar_features_come_from_the_schedule() -> None:
    encoder = FeatureEncoder.fit(
        from_flights(_flights()), np.array([1, 0, 0]), tuple(GROUPS), HOLIDAYS
    )
    assert encoder.feature_names == feature_names(tuple(GROUPS))
    row = _row(encoder, _flights()[1])
    assert row["MES"] == 12
    assert row["hour"] == pytest.approx(6.25)
    assert row["weekday"] == 6  # 2017-12-31 was a Sunday
    assert row["day"] == 31
    assert row["day_of_year"] == 365
    assert row["high_season"] == 1
    assert (row["holiday"], row["days_to_holiday"], row["days_after_holiday"]) == (0, 7, 6)
    september = _row(encoder, _flights()[2])  # Friday before the 18-19 national holidays
    assert (september["holiday"], september["days_to_holiday"]) == (0, 3)
    assert september["high_season"] == 1
    new_year = _row(encoder, _flights()[0])
    assert (new_year["holiday"], new_year["days_to_holiday"], new_year["days_after_holiday"]) == (
        1,
        0,
        0,
    )


def test_the_calendars_last_holiday_is_counted_to_and_from() -> None:
    """Past its second-to-last holiday the next one is the calendar's last: days to it (3 on
    2017-12-22), the day itself, then days after it once no holiday is ahead."""
    departures = np.array(
        ["2017-12-22T08:00", "2017-12-25T08:00", "2017-12-27T08:00"], dtype="datetime64[m]"
    )
    assert Calendar(HOLIDAYS).encode(departures).tolist() == [[0, 3, 7], [1, 0, 0], [0, 7, 2]]


@pytest.mark.parametrize(
    ("when", "inside"),
    [
        ("2017-12-14T23:59", 0),
        ("2017-12-15T00:00", 1),
        ("2017-03-03T23:59", 1),
        ("2017-03-04T00:00", 0),
        ("2017-07-14T23:59", 0),
        ("2017-07-15T00:00", 1),
        ("2017-07-31T23:59", 1),
        ("2017-08-01T00:00", 0),
        ("2017-09-10T23:59", 0),
        ("2017-09-11T00:00", 1),
        ("2017-09-30T23:59", 1),
        ("2017-10-01T00:00", 0),
        ("2017-12-31T23:59", 1),
        ("2017-01-01T00:00", 1),
        ("2020-02-29T12:00", 1),
    ],
)
def test_high_season_is_the_challenges_periods(when: str, inside: int) -> None:
    assert high_season(np.array([when], dtype="datetime64[m]")).tolist() == [inside]


def _hierarchy_data() -> tuple[Columns, np.ndarray]:
    """Airline LAN: route LAN>SCFA always late (flight 1 with 100 rows), route LAN>SCIE never."""
    rows = [("LAN", "SCFA", "1", 1)] * 100 + [("LAN", "SCIE", "2", 0)] * 100
    rows += [("SKU", "SCFA", "7", 0)] * 100
    departure = np.full(len(rows), np.datetime64("2017-03-01T10:00"))
    columns = Columns(
        ["Grupo LATAM"] * len(rows),
        ["N"] * len(rows),
        [3] * len(rows),
        departure,
        [r[1] for r in rows],
        [r[0] for r in rows],
        [r[2] for r in rows],
    )
    return columns, np.array([r[3] for r in rows])


def _one(airline: str, destination: str, number: str) -> Columns:
    return Columns(
        ["Grupo LATAM"],
        ["N"],
        [3],
        np.array(["2017-03-01T10:00"], dtype="datetime64[m]"),
        [destination],
        [airline],
        [number],
    )


def test_known_destinations_are_the_routes_without_a_destination_group() -> None:
    """What the model card lists as known (export.card): the served full model has no Des-I
    group, so its destinations are those of its routes."""
    columns, labels = _hierarchy_data()
    by_routes = FeatureEncoder.fit(columns, labels, ("Emp-I", "flight number"))
    assert by_routes.known_destinations() == ["SCFA", "SCIE"]
    assert by_routes.known_airlines() == ["LAN", "SKU"]
    own = FeatureEncoder.fit(columns, labels, ("Des-I",))
    assert own.known_destinations() == ["SCFA", "SCIE"]
    assert own.known_airlines() == []
    assert FeatureEncoder.fit(columns, labels, ("MES",)).known_destinations() == []


def test_unseen_flight_numbers_fall_back_to_route_then_airline_then_overall() -> None:
    columns, labels = _hierarchy_data()
    encoder = FeatureEncoder.fit(columns, labels, ("flight number", "Emp-I"))
    assert encoder.hierarchy is not None

    def rate(airline: str, destination: str, number: str) -> float:
        flight = encoder.encode_columns(_one(airline, destination, number))[0, 1]
        return float(1 / (1 + np.exp(-flight)))

    known = rate("LAN", "SCFA", "1")
    new_on_late_route = rate("LAN", "SCFA", "999")
    new_on_punctual_route = rate("LAN", "SCIE", "999")
    new_route = rate("LAN", "SABE", "999")
    new_airline = rate("ZZZ", "SABE", "999")
    assert known > new_on_late_route > new_route > new_on_punctual_route
    assert new_route == pytest.approx(
        float(1 / (1 + np.exp(-encoder.hierarchy.airline.logits["LAN"])))
    )
    assert new_airline == pytest.approx(1 / 3, abs=1e-6)  # the overall rate
    # the same number under another airline is another flight
    assert rate("SKU", "SCFA", "1") == pytest.approx(rate("SKU", "SCFA", "7"), abs=0.05)


def test_hierarchy_logits_are_the_rate_tables_lookups_level_by_level() -> None:
    """One loop a row (Hierarchy.logits) against one RateTable.lookup a level on the keys
    hierarchy_keys gives, as numbers of flights, as strings, known and unknown."""
    columns, labels = _random_columns(2_000)
    hierarchy = FeatureEncoder.fit(columns, labels, ("Emp-I", "flight number")).hierarchy
    assert hierarchy is not None
    # numbers of flights as ints too, on purpose: not the str Columns annotates
    columns.number = [int(n) if i % 2 else n for i, n in enumerate(columns.number or ())]  # type: ignore[misc]
    flight, route, airline = hierarchy_keys(columns)
    airline_logit = hierarchy.airline.lookup(airline)
    flight_logit = hierarchy.flight.lookup(flight, hierarchy.route.lookup(route, airline_logit))
    assert hierarchy.logits(columns) == (airline_logit.tolist(), flight_logit.tolist())
    assert len(set(flight_logit.tolist())) > 40  # flights, routes and airlines of their own


def test_rates_are_shrunk_toward_the_parent_by_the_smoothing() -> None:
    columns, labels = _hierarchy_data()
    encoder = FeatureEncoder.fit(columns, labels, ("Emp-I",))
    assert encoder.hierarchy is not None
    lan = 1 / (1 + np.exp(-encoder.hierarchy.airline.logits["LAN"]))
    assert lan == pytest.approx((100 + SMOOTHING / 3) / (200 + SMOOTHING))
    # each level's parent is the level above, as a rate: route LAN>SCFA (100 rows, all late)
    # toward LAN's, flight LAN 1 (the same rows) toward its route's
    flight, route, _ = hierarchy_keys(_one("LAN", "SCFA", "1"))
    scfa = 1 / (1 + np.exp(-encoder.hierarchy.route.lookup(route)[0]))
    assert scfa == pytest.approx((100 + SMOOTHING * lan) / (100 + SMOOTHING))
    one = 1 / (1 + np.exp(-encoder.hierarchy.flight.lookup(flight)[0]))
    assert one == pytest.approx((100 + SMOOTHING * scfa) / (100 + SMOOTHING))


@pytest.mark.parametrize("count", [2, 3])
def test_training_rates_are_out_of_fold(count: int) -> None:
    """A flight seen only in one fold gets, in training, the rate of its route without it: each
    fold's rows encoded by a fit on all the other folds (with two folds, a fit on the fold
    itself swapped for the other's gave the same numbers, so three are checked too)."""
    columns, labels = _hierarchy_data()
    encoder = FeatureEncoder.fit(columns, labels, ("flight number",))
    folds = np.arange(len(labels)) % count
    in_sample = encoder.encode_columns(columns)[:, 0]
    out_of_fold = encoder.encode_training(columns, labels, folds)[:, 0]
    assert not np.allclose(in_sample, out_of_fold)
    others = FeatureEncoder.fit(
        take(columns, np.flatnonzero(folds != 0)), labels[folds != 0], ("flight number",)
    )
    np.testing.assert_allclose(
        out_of_fold[folds == 0],
        others.encode_columns(take(columns, np.flatnonzero(folds == 0)))[:, 0],
    )


def test_column_wise_and_flight_encodings_agree() -> None:
    encoder = FeatureEncoder.fit(
        from_flights(_flights()), np.array([1, 0, 0]), tuple(GROUPS), HOLIDAYS
    )
    columns = from_flights(_flights())
    np.testing.assert_array_equal(encoder.encode(_flights()), encoder.encode_columns(columns))
    assert encoder.encode(_flights()).dtype == np.float32


def _random_columns(count: int) -> tuple[Columns, np.ndarray]:
    """Flights from 1930 to 2050 (before 1970: negative minutes), known and unknown values."""
    rng = np.random.default_rng(7)
    departure = rng.integers(-40 * 525_960, 80 * 525_960, count).astype("datetime64[m]")

    def pick(values: list[str]) -> list[str]:
        return [values[i] for i in rng.integers(0, len(values), count)]

    columns = Columns(
        pick(["Grupo LATAM", "Sky Airline", "American Airlines", "Nuevo"]),
        pick(["I", "N"]),
        (departure.astype("datetime64[M]").astype(np.int64) % 12 + 1).tolist(),
        departure,
        pick(["SCFA", "KMIA", "SABE", "ZZZZ"]),
        pick(["LAN", "SKU", "AAL", "ZZZ"]),
        [str(number) for number in rng.integers(0, 40, count)],
    )
    return columns, rng.integers(0, 2, count).astype(np.float64)


def _encoder(which: str) -> FeatureEncoder:
    if which == "committed full model":
        from app.inference.model import ModelSet
        from tests.conftest import MODELS_DIR

        return ModelSet.load(MODELS_DIR).full.card.encoder
    columns, labels = _random_columns(2_000)
    holidays = np.concatenate([HOLIDAYS, np.array(["1950-05-01", "2040-01-01"], "datetime64[D]")])
    return FeatureEncoder.fit(columns, labels, tuple(GROUPS), holidays)


@pytest.mark.parametrize("which", ["every group", "committed full model"])
def test_small_batches_encode_by_rows_bit_for_bit_as_columns(which: str) -> None:
    """Batches under ROWS_BELOW flights take the by-rows path, larger ones the column-wise one:
    every flight's features are the same float32 bits either way, whatever the batch size."""
    encoder = _encoder(which)
    columns, _ = _random_columns(600)
    whole = encoder.encode_columns(columns)
    assert len(columns) >= ROWS_BELOW
    for size in (1, 3, ROWS_BELOW - 1):
        parts = [
            encoder.encode_columns(take(columns, np.arange(start, min(start + size, 600))))
            for start in range(0, 600, size)
        ]
        joined = np.concatenate(parts)
        assert joined.dtype == whole.dtype == np.float32
        assert joined.shape == whole.shape
        assert joined.tobytes() == whole.tobytes(), size
    # as the validator gives them: lists, not arrays
    assert columns.destination is not None
    assert columns.airline is not None
    assert columns.number is not None
    first = Columns(
        list(columns.operator[:5]),
        list(columns.flight_type[:5]),
        list(columns.month[:5]),
        columns.departure[:5] if columns.departure is not None else None,
        list(columns.destination[:5]),
        list(columns.airline[:5]),
        list(columns.number[:5]),
    )
    assert encoder.encode_columns(first).tobytes() == whole[:5].tobytes()
    for row in range(5):  # one flight (FeatureEncoder._row), as the validator gives it
        alone = Columns(*(getattr(first, field.name)[row : row + 1] for field in fields(first)))
        assert encoder.encode_columns(alone).tobytes() == whole[row : row + 1].tobytes()


@pytest.mark.parametrize("group", list(GROUPS))
def test_one_flight_of_a_single_group_encodes_as_columns(group: str) -> None:
    """`_row` lays out each group's values by itself (flags decided once per encoder): any
    group alone gives the column-wise bits."""
    columns, labels = _random_columns(300)
    encoder = FeatureEncoder.fit(columns, labels, (group,), HOLIDAYS)
    whole = encoder.encode_columns(columns)
    for row in range(100):
        alone = encoder.encode_columns(take(columns, np.arange(row, row + 1)))
        assert alone.tobytes() == whole[row : row + 1].tobytes(), row


@pytest.mark.parametrize("which", ["every group", "committed full model"])
@pytest.mark.parametrize("size", [1, 3, ROWS_BELOW - 1, ROWS_BELOW, 100])
def test_encoding_into_a_buffer_writes_the_same_bits(which: str, size: int) -> None:
    """`into` (app.inference.model's bound input buffer) gets the float32 bits of a new matrix,
    by rows, by `_row` and column-wise, known and unknown values, whatever the buffer held."""
    encoder = _encoder(which)
    columns, _ = _random_columns(600)
    whole = encoder.encode_columns(columns)
    buffer = np.full((size, len(encoder.feature_names)), np.nan, dtype=np.float32)
    for start in range(0, 600 - size + 1, size):
        part = take(columns, np.arange(start, start + size))
        assert encoder.encode_columns(part, buffer) is buffer
        assert buffer.tobytes() == whole[start : start + size].tobytes(), start


def test_one_flight_encodes_bit_for_bit_as_in_the_whole_real_data(real_data: Path) -> None:
    """Every flight of the real data alone (a one-flight request's path, FeatureEncoder._row)
    gets the float32 bits the column-wise encoding of all 68,206 gives it, for both served
    models."""
    from app.inference.model import ModelSet
    from tests.conftest import MODELS_DIR
    from train.data import load

    models = ModelSet.load(MODELS_DIR)
    dataset = load(real_data)
    for model in (models.minimal, models.full):
        flights = dataset.flights(model.card.encoder.schedule)
        whole = model.card.encoder.encode_columns(from_flights(flights))
        assert len(flights) == len(whole) == len(dataset.table)
        for row, flight in enumerate(flights):
            alone = model.card.encoder.encode_columns(from_flights([flight]))
            assert alone.tobytes() == whole[row : row + 1].tobytes(), (model.name, row)


def test_minimal_encoding_ignores_the_schedule() -> None:
    encoder = FeatureEncoder.fit(from_flights(_flights()), np.array([1, 0, 0]), MINIMAL_GROUPS)
    assert not encoder.schedule
    assert encoder.feature_names == ("OPERA", "TIPOVUELO", "MES")
    assert encoder.encode([Flight("X", "I", 1)]).shape == (1, 3)


def test_full_encoder_refuses_a_flight_without_schedule() -> None:
    encoder = FeatureEncoder.fit(from_flights(_flights()), np.array([1, 0, 0]), ("hour",))
    with pytest.raises(ValueError, match="schedule"):
        encoder.encode([Flight("X", "I", 1)])


def test_json_round_trip_encodes_identically() -> None:
    encoder = FeatureEncoder.fit(
        from_flights(_flights()), np.array([1, 0, 0]), tuple(GROUPS), HOLIDAYS
    )
    again = FeatureEncoder.from_json(encoder.to_json())
    np.testing.assert_array_equal(again.encode(_flights()), encoder.encode(_flights()))


def test_from_json_refuses_features_of_another_code_version() -> None:
    data = FeatureEncoder.fit(
        from_flights(_flights()), np.array([1, 0, 0]), MINIMAL_GROUPS
    ).to_json()
    data["features"] = ["OPERA", "MES"]
    with pytest.raises(ValueError, match="do not match"):
        FeatureEncoder.from_json(data)


def test_unknown_groups_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown feature group"):
        FeatureEncoder(("weather",), {})


def test_an_encoder_without_the_tables_its_groups_need_is_refused() -> None:
    with pytest.raises(ValueError, match=re.escape("vocabularies for ['OPERA'] expected, got []")):
        FeatureEncoder(("OPERA", "MES"), {})
    missing = "no fitted table for feature group(s) ['Des-I', 'holidays']"
    with pytest.raises(ValueError, match=re.escape(missing)):
        FeatureEncoder(("Des-I", "holidays", "MES"), {})
    columns, labels = _hierarchy_data()
    with pytest.raises(ValueError, match=r"^the holidays group needs the holiday calendar$"):
        FeatureEncoder.fit(columns, labels, ("holidays",))


def test_the_committed_calendar_encodes_every_day_of_its_exact_years_as_a_wider_one_would() -> None:
    """The card's calendar holds 2016-2036; a day after its last holiday counted days to the
    next one as the horizon, though New Year's Day 2037 was a few days away (2036-12-26 to 31).
    Every day of the exact years must encode as with the neighbouring years' holidays too."""
    calendar = ModelSet.load(MODELS_DIR).full.card.encoder.calendar
    assert calendar is not None
    first, last = calendar.exact_years
    assert (first, last) == (HOLIDAY_YEARS[0], HOLIDAY_YEARS[1] - 1)
    wider = Calendar(chilean_holidays((first - 1, last + 2)))
    days = np.arange(np.datetime64(f"{first}-01-01"), np.datetime64(f"{last + 1}-01-01"))
    departures = days.astype("datetime64[m]") + np.timedelta64(23 * 60 + 59, "m")
    assert np.array_equal(calendar.encode(departures), wider.encode(departures))
    after = np.arange(np.datetime64(f"{last + 1}-12-26"), np.datetime64(f"{last + 2}-01-01"))
    assert not np.array_equal(calendar.encode(after), wider.encode(after))  # why it stops


def test_committed_full_model_scores_an_unseen_flight_number_like_its_route(
    real_data: Path,
) -> None:
    """On the real data: a new LAN flight number to SCFA is scored by LAN's SCFA route, not
    by a pooled rare bucket; a new route by the airline."""
    from app.inference.model import ModelSet
    from tests.conftest import MODELS_DIR

    encoder = ModelSet.load(MODELS_DIR).full.card.encoder
    assert encoder.hierarchy is not None
    hierarchy = encoder.hierarchy
    index = encoder.feature_names.index("flight_rate")

    def flight_logit(airline: str, destination: str, number: str) -> float:
        return float(encoder.encode_columns(_one(airline, destination, number))[0, index])

    assert "LAN>SCFA" in hierarchy.route.logits
    assert "LAN 9999" not in hierarchy.flight.logits
    assert flight_logit("LAN", "SCFA", "9999") == pytest.approx(
        hierarchy.route.logits["LAN>SCFA"], abs=1e-6
    )
    assert flight_logit("LAN", "ZZZZ", "9999") == pytest.approx(
        hierarchy.airline.logits["LAN"], abs=1e-6
    )
    known = next(key for key in hierarchy.flight.logits if key.startswith("LAN "))
    assert flight_logit("LAN", "SCFA", known.split()[1]) == pytest.approx(
        hierarchy.flight.logits[known], abs=1e-6
    )
    # routes of one airline differ, so the route level carries information of its own
    lan_routes = [v for k, v in hierarchy.route.logits.items() if k.startswith("LAN>")]
    assert max(lan_routes) - min(lan_routes) > 0.5

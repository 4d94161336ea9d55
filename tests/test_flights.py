from __future__ import annotations

from datetime import datetime

import pytest

from app.errors import BadRequest, InvalidFlight, PayloadTooLarge
from app.flights import ALLOWED_FIELDS, Flight, FlightValidator, Schedule

VALIDATOR = FlightValidator(["Grupo LATAM", "Sky Airline"], max_flights=3)
SCHEDULED = {
    "OPERA": "Sky Airline",
    "TIPOVUELO": "N",
    "MES": 2,
    "Fecha-I": "2017-02-28 23:59:00",
    "Des-I": "SCFA",
    "Emp-I": "SKU",
    "Vlo-I": "1104A",
}


def test_minimal_flight() -> None:
    flight = VALIDATOR.flight({"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 12}, 0)
    assert flight == Flight("Grupo LATAM", "I", 12, None)


def test_scheduled_flight_is_parsed() -> None:
    flight = VALIDATOR.flight(SCHEDULED, 0)
    assert flight.schedule == Schedule(datetime(2017, 2, 28, 23, 59), "SCFA", "SKU", "1104A")


def test_integer_flight_number_becomes_the_data_sets_string() -> None:
    assert VALIDATOR.flight(SCHEDULED | {"Vlo-I": 226}, 0).schedule == Schedule(
        datetime(2017, 2, 28, 23, 59), "SCFA", "SKU", "226"
    )


@pytest.mark.parametrize("value", [-1, 10000, 2.0, True, "", "12345", "1 2", "ab"])
def test_flight_number_outside_the_data_sets_shape(value: object) -> None:
    with pytest.raises(InvalidFlight, match="Vlo-I"):
        VALIDATOR.flight(SCHEDULED | {"Vlo-I": value}, 0)


@pytest.mark.parametrize(
    "value",
    [
        "2017-02-28",
        "2017-02-28 23:59",
        "2017-02-28 23:59:00+00:00",
        "2017-02-28 25:00:00",
        "2017-02-28X23:59:00",
        20170228,
        None,
    ],
)
def test_scheduled_time_must_be_the_data_sets_format(value: object) -> None:
    with pytest.raises(InvalidFlight, match="Fecha-I") as raised:
        VALIDATOR.flight(SCHEDULED | {"Fecha-I": value}, 4)
    assert raised.value.detail["index"] == 4


def test_scheduled_month_must_agree_with_mes() -> None:
    with pytest.raises(InvalidFlight, match="contradicts MES=3"):
        VALIDATOR.flight(SCHEDULED | {"MES": 3}, 0)


@pytest.mark.parametrize("missing", ["Fecha-I", "Des-I", "Emp-I", "Vlo-I"])
def test_a_schedule_needs_all_four_fields(missing: str) -> None:
    partial = {k: v for k, v in SCHEDULED.items() if k != missing}
    with pytest.raises(InvalidFlight) as raised:
        VALIDATOR.flight(partial, 0)
    assert raised.value.detail["field"] == missing


def test_extra_fields_are_refused_with_the_allowed_list() -> None:
    with pytest.raises(InvalidFlight) as raised:
        VALIDATOR.flight(SCHEDULED | {"SIGLADES": "Antofagasta"}, 0)
    assert raised.value.detail["field"] == "SIGLADES"
    assert raised.value.detail["allowed"] == list(ALLOWED_FIELDS)


def test_batch_limits() -> None:
    flight = {"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 1}
    assert len(VALIDATOR.request({"flights": [flight] * 3})) == 3
    with pytest.raises(PayloadTooLarge):
        VALIDATOR.request({"flights": [flight] * 4})
    with pytest.raises(BadRequest, match="empty"):
        VALIDATOR.request({"flights": []})


def test_error_names_index_field_value_and_allowed() -> None:
    with pytest.raises(InvalidFlight) as raised:
        VALIDATOR.flights(
            [
                {"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 1},
                {"OPERA": "LATAM", "TIPOVUELO": "I", "MES": 1},
            ]
        )
    assert raised.value.to_json() == {
        "error": "flights[1].OPERA: unknown airline",
        "detail": {
            "index": 1,
            "field": "OPERA",
            "value": "LATAM",
            "allowed": ["Grupo LATAM", "Sky Airline"],
        },
    }

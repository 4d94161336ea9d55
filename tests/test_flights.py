from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from app.errors import SHOWN_ITEMS, BadRequest, InvalidFlight, PayloadTooLarge, ServiceError
from app.inference import flights as flights_module
from app.inference.flights import (
    ALLOWED_FIELDS,
    SCHEDULE_FIELDS,
    SCHEDULE_FIELDS_DECLARED,
    Batch,
    Columns,
    Flight,
    FlightValidator,
    Schedule,
    operated_in,
)
from app.inference.model import ModelCard, minimal_domain
from tests.conftest import MODELS_DIR, challenge_data, synthetic_rows

VALIDATOR = FlightValidator(["Grupo LATAM", "Sky Airline"], max_flights=3)
SCHEDULED: dict[str, object] = {
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


def test_a_flight_lists_its_request_fields_as_it_was_sent() -> None:
    """Flight.request_fields (the model card's samples, the tests' request streams) gives the
    body a flight came from, schedule included."""
    minimal = {"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 12}
    assert VALIDATOR.flight(minimal, 0).request_fields() == minimal
    assert VALIDATOR.flight(SCHEDULED, 0).request_fields() == SCHEDULED


def test_integer_flight_number_becomes_the_data_sets_string() -> None:
    assert VALIDATOR.flight(SCHEDULED | {"Vlo-I": 226}, 0).schedule == Schedule(
        datetime(2017, 2, 28, 23, 59), "SCFA", "SKU", "226"
    )


PADDED_NUMBERS = {
    "0226": "226",
    "0226A": "226A",
    "02A": "2A",
    "226": "226",
    "0000": "0",
    "00A": "0A",
    "0": "0",
}
"""Flight numbers as sent -> as the data writes them (and the model knows them)."""


def test_leading_zeros_of_a_flight_number_are_dropped_alone_in_a_batch_and_in_columns() -> None:
    """Schedules padded to four digits (IATA SSIM's) named, to the model, a flight number it had
    never seen: `0226` was scored by its route only, where `226` has its own rate."""
    sent, expected = list(PADDED_NUMBERS), list(PADDED_NUMBERS.values())
    validator = FlightValidator(["Sky Airline"], max_flights=len(sent))
    for number, unpadded in PADDED_NUMBERS.items():
        alone = validator.decode(orjson.dumps({"flights": [SCHEDULED | {"Vlo-I": number}]}))
        assert alone.full is not None
        assert list(alone.full.number or []) == [unpadded]
    flights = [SCHEDULED | {"Vlo-I": number} for number in sent]
    batch = validator.decode(orjson.dumps({"flights": flights}))
    assert batch.full is not None
    assert list(batch.full.number or []) == expected
    columns = validator.columns({name: [f[name] for f in flights] for name in SCHEDULED})
    assert columns is not None
    assert list(columns.number or []) == expected


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
        "2017-W09-2 23:59:00",  # ISO week date: fromisoformat took it
        "2017-02-28T235900.5",  # compact time with a fraction: fromisoformat took it
        "2017-02-28T23:59:00Z",
        "2017-02-28 23:59:00\n",
        "0000-02-28 23:59:00",
        "\uff12\uff10\uff11\uff17-02-28 23:59:00",  # full-width digits: \d would match them
        20170228,
        None,
    ],
)
def test_scheduled_time_must_be_the_data_sets_format(value: object) -> None:
    with pytest.raises(InvalidFlight, match="Fecha-I") as raised:
        VALIDATOR.flight(SCHEDULED | {"Fecha-I": value}, 4)
    assert raised.value.detail["index"] == 4


def test_scheduled_month_must_agree_with_mes() -> None:
    with pytest.raises(InvalidFlight, match="contradicts MES=4"):
        VALIDATOR.flight(SCHEDULED | {"MES": 4}, 0)


@pytest.mark.parametrize(
    ("month", "allowed"),
    [
        (4, "a departure in month 4, or on the last day of month 3"),
        (1, "a departure in month 1, or on the last day of month 12"),  # across the year
    ],
)
def test_a_month_contradicting_mes_says_what_mes_allows(month: int, allowed: str) -> None:
    """The README promises every refused flight's `allowed`: a client whose MES and Fecha-I
    disagree is told which departures its MES allows (operated_in)."""
    departure = "2017-06-15 10:00:00"
    with pytest.raises(InvalidFlight) as raised:
        VALIDATOR.flight(SCHEDULED | {"MES": month, "Fecha-I": departure}, 0)
    assert raised.value.detail == {
        "index": 0,
        "field": "Fecha-I",
        "value": departure,
        "allowed": allowed,
    }


@pytest.mark.parametrize(
    ("departure", "month", "allowed"),
    [
        ("2017-02-28 23:59:00", 3, True),  # the month's last day: the next month too
        ("2017-12-31 23:55:00", 1, True),  # across the year
        ("2017-01-31 00:05:00", 2, True),  # any time of that day (it may leave hours late)
        ("2017-01-31T23:30:00", 2, True),  # the T form too
        ("2017-02-27 23:59:00", 3, False),
        ("2016-02-28 23:59:00", 3, False),  # a leap year's February has a 29th
        ("2016-02-29 23:59:00", 3, True),
        ("2017-02-28 23:59:00", 4, False),
        ("2017-03-01 00:05:00", 2, False),  # not the month before
    ],
)
def test_mes_may_be_the_month_of_operation(departure: str, month: int, allowed: bool) -> None:
    """The SCL data's MES is the month of operation: a flight scheduled on a month's last day
    that left after midnight carries the next month (9 of its flights). The row way, a batch and
    the inference protocol's column way agree."""
    flight = SCHEDULED | {"Fecha-I": departure, "MES": month}
    validator = FlightValidator(["Grupo LATAM", "Sky Airline"], max_flights=3)
    assert operated_in(departure, month) is allowed
    columns = validator.columns({name: [flight[name]] * 2 for name in flight})
    if allowed:
        assert validator.flight(flight, 0).month == month
        full = _decoded([flight, flight]).full
        assert full is not None
        assert list(full.month) == [month, month]
        assert columns is not None
        assert list(columns.month) == [month, month]
    else:
        with pytest.raises(InvalidFlight, match=f"contradicts MES={month}"):
            _decoded([SCHEDULED, flight])
        assert columns is None


def test_every_flight_of_the_real_data_is_accepted(real_data: Path) -> None:
    """As the data writes them, in batches: nine of them carry the month they left in, after
    midnight on a month's last day (operated_in); such a batch was refused whole."""
    table = pd.read_csv(real_data, dtype=str, keep_default_na=False)
    card = ModelCard.from_json(orjson.loads((MODELS_DIR / "delay-full.json").read_bytes()))
    validator = FlightValidator(card.operators, max_flights=len(table))
    flights = [
        {
            "OPERA": row["OPERA"],
            "TIPOVUELO": row["TIPOVUELO"],
            "MES": int(row["MES"]),
            "Fecha-I": row["Fecha-I"],
            "Des-I": row["Des-I"],
            "Emp-I": row["Emp-I"],
            "Vlo-I": row["Vlo-I"].strip(),
        }
        for row in table.to_dict("records")
    ]
    batch = validator.decode(orjson.dumps({"flights": flights}))
    assert batch.size == len(table)
    assert batch.full is not None
    departures = pd.to_datetime(table["Fecha-I"])
    if challenge_data(real_data):
        assert len(table) == 68_206
        assert (departures.dt.month != table["MES"].astype(int)).sum() == 9


@pytest.mark.parametrize("missing", ["Fecha-I", "Des-I", "Emp-I", "Vlo-I"])
def test_a_schedule_needs_all_four_fields(missing: str) -> None:
    partial = {k: v for k, v in SCHEDULED.items() if k != missing}
    with pytest.raises(InvalidFlight) as raised:
        VALIDATOR.flight(partial, 0)
    assert raised.value.detail["field"] == missing


@pytest.mark.parametrize("year", [1900, 2015, 2036, 9999])
def test_a_departure_outside_the_holiday_calendars_years_is_refused_naming_them(year: int) -> None:
    """Outside the years of the model's holiday calendar a flight was scored as in a year
    without holidays (1 January 2037 no holiday): a 400 naming the years, on every path. The
    committed calendar holds 2016-2036 and encodes 2016-2035 exactly (Calendar.exact_years)."""
    validator = FlightValidator(["Sky Airline"], max_flights=3, years=(2016, 2035))
    wrong = SCHEDULED | {"Fecha-I": f"{year:04}-02-01 10:00:00"}
    expected = {
        "error": f"flights[1].Fecha-I: year {year} is outside the model's holiday calendar",
        "detail": {
            "index": 1,
            "field": "Fecha-I",
            "value": wrong["Fecha-I"],
            "allowed": "2016 to 2035",
        },
    }
    refusals: tuple[Callable[[], object], ...] = (
        lambda: validator.decode(orjson.dumps({"flights": [SCHEDULED, wrong]})),
        lambda: validator.batch([SCHEDULED, wrong]),
    )
    for refuse in refusals:
        with pytest.raises(InvalidFlight) as raised:
            refuse()
        assert raised.value.to_json() == expected
    with pytest.raises(InvalidFlight, match="outside the model's holiday calendar"):
        validator.decode(orjson.dumps({"flights": [wrong]}))
    columns = {name: [SCHEDULED[name], wrong[name]] for name in SCHEDULED}
    assert validator.columns(columns) is None  # the rows then name it, as above
    assert FlightValidator(["Sky Airline"], max_flights=3).columns(columns) is not None


def test_the_first_and_last_days_of_the_calendars_years_are_accepted() -> None:
    validator = FlightValidator(["Sky Airline"], max_flights=3, years=(2016, 2035))
    first = SCHEDULED | {"MES": 1, "Fecha-I": "2016-01-01 00:00:00"}
    last = SCHEDULED | {"MES": 12, "Fecha-I": "2035-12-31T23:59:00"}
    assert validator.decode(orjson.dumps({"flights": [first, last]})).size == 2
    columns = validator.columns({name: [first[name], last[name]] for name in SCHEDULED})
    assert columns is not None


def test_a_wrong_flight_after_the_calendars_first_and_last_days_is_the_one_named() -> None:
    """A batch the column checks refuse is checked flight by flight to name the first wrong
    one: there too the calendar's first and last years are inside it, and the error names the
    wrong flight, not a good one before it."""
    validator = FlightValidator(["Sky Airline"], max_flights=3, years=(2016, 2035))
    first = SCHEDULED | {"MES": 1, "Fecha-I": "2016-01-01 00:00:00"}
    last = SCHEDULED | {"MES": 12, "Fecha-I": "2035-12-31T23:59:00"}
    wrong = SCHEDULED | {"Des-I": "scfa"}
    with pytest.raises(InvalidFlight) as raised:
        validator.decode(orjson.dumps({"flights": [first, last, wrong]}))
    assert raised.value.message == "flights[2].Des-I: not an ICAO airport code"


def test_extra_fields_are_refused_with_the_allowed_list() -> None:
    with pytest.raises(InvalidFlight) as raised:
        VALIDATOR.flight(SCHEDULED | {"SIGLADES": "Antofagasta"}, 0)
    assert raised.value.detail["field"] == "SIGLADES"
    assert raised.value.detail["allowed"] == list(ALLOWED_FIELDS)


def test_batch_limits() -> None:
    flight = {"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 1}
    assert VALIDATOR.request({"flights": [flight] * 3}).size == 3
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


@pytest.mark.parametrize("value", ["2017-02-28 23:59:00", "2017-02-28T23:59:00"])
def test_scheduled_time_takes_exactly_the_documented_forms(value: str) -> None:
    schedule = VALIDATOR.flight(SCHEDULED | {"Fecha-I": value}, 0).schedule
    assert schedule is not None
    assert schedule.departure == datetime(2017, 2, 28, 23, 59)


def _decoded(flights: list[Any]) -> Batch:
    return VALIDATOR.decode(orjson.dumps({"flights": flights}))


def test_a_mixed_batch_keeps_request_order_and_splits_by_contract() -> None:
    minimal = {"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 12}
    batch = _decoded([minimal, SCHEDULED | {"Vlo-I": 7}, minimal])
    assert (batch.size, batch.minimal_rows, batch.full_rows) == (3, [0, 2], [1])
    assert batch.minimal is not None
    assert batch.full is not None
    assert batch.full.departure is not None
    assert batch.full.number is not None
    assert list(batch.minimal.month) == [12, 12]
    assert list(batch.full.number) == ["7"]
    assert batch.full.departure.tolist() == [datetime(2017, 2, 28, 23, 59)]
    assert batch.flights() == [
        VALIDATOR.flight(minimal, 0),
        VALIDATOR.flight(SCHEDULED | {"Vlo-I": "7"}, 0),
        VALIDATOR.flight(minimal, 0),
    ]


def test_a_batch_of_one_contract_is_not_split() -> None:
    batch = _decoded([SCHEDULED] * 3)
    assert batch.minimal is None
    assert batch.full_rows is None
    assert batch.full is not None
    assert batch.full.departure is not None
    assert batch.full.departure.dtype == np.dtype("datetime64[m]")


@pytest.mark.parametrize(
    "flight",
    [
        {"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 12},
        SCHEDULED | {"Vlo-I": 7},
        {k: v for k, v in SCHEDULED.items() if k != "Des-I"},
    ],
    ids=["minimal", "full", "partial-schedule"],
)
def test_a_lone_flight_decodes_as_in_a_batch(flight: dict[str, Any]) -> None:
    """One flight skips the batch's comprehensions: the same columns, or the same error."""

    def decoded(flights: list[dict[str, Any]]) -> Batch | str:
        try:
            return _decoded(flights)
        except ServiceError as error:
            return str(error.to_json())

    alone, batch = decoded([flight]), decoded([flight, flight])
    if isinstance(batch, str):
        assert alone == batch
        return
    assert isinstance(alone, Batch)
    assert (alone.size, alone.minimal_rows, alone.full_rows) == (1, None, None)
    for part, twice in ((alone.minimal, batch.minimal), (alone.full, batch.full)):
        assert (part is None) is (twice is None)
        if part is not None and twice is not None:
            for field in dataclasses.fields(Columns):
                value, values = getattr(part, field.name), getattr(twice, field.name)
                if value is None or values is None:
                    assert value is values is None, field.name
                else:
                    assert list(value) * 2 == list(values), field.name


def test_the_first_wrong_flight_is_named_whatever_rule_it_breaks() -> None:
    """The compiled pass meets flight 2's type error before checking the rules that join
    fields; the error still names flight 1, whose month contradicts its date."""
    wrong_month = SCHEDULED | {"MES": 4}
    wrong_type = SCHEDULED | {"TIPOVUELO": "X"}
    with pytest.raises(InvalidFlight) as raised:
        _decoded([SCHEDULED, wrong_month, wrong_type])
    assert raised.value.detail["index"] == 1
    assert raised.value.message == "flights[1].Fecha-I: month 2 contradicts MES=4"


WEIRD: list[object] = [None, True, 0, 13, -1, 2.0, "", "I", "N", "x", "SCFA", "SKU", "226", "2017-02-28 23:59:00",
         "2017-02-30 23:59:00", "Sky Airline", [], {}, 10000, 226, "SCFA\n"]  # fmt: skip


@pytest.mark.parametrize("field", ALLOWED_FIELDS)
def test_the_compiled_pass_and_the_explanation_agree(field: str) -> None:
    """Every field of a minimal and of a scheduled flight set to each odd value: the one-pass
    decoder refuses exactly the flights the field-by-field check explains, with its error."""
    minimal: dict[str, object] = {"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 2}
    for base, value in itertools.product((minimal, SCHEDULED), WEIRD):
        flight = base | {field: value}
        assert _answer(_decoded, [SCHEDULED, flight]) == _answer(VALIDATOR.flight, flight, 1), (
            flight
        )


SEPARATED = [
    "KMIA\x00LAN",
    "\x00",
    "LAN\x01",
    "2017-02-01 10:00:00\x00KMIA",
    "22\x006",
    "226\x012017-02-28 23:59:00\x00SCFA\x00SKU\x00226",  # the rest of a row, then a whole row
]
"""Values holding the schedule check's field and row separators: each would pass for two."""


@pytest.mark.parametrize("field", SCHEDULE_FIELDS)
def test_a_lone_flight_is_refused_as_the_explanation_says(field: str) -> None:
    """A lone flight's schedule is checked alone, without the batch's separator counts: the
    same verdict and error as the field-by-field check, separators included."""
    for value in WEIRD + SEPARATED:
        flight = SCHEDULED | {field: value}
        assert _answer(_decoded, [flight]) == _answer(VALIDATOR.flight, flight, 0), flight
        assert _answer(_decoded, [flight, SCHEDULED]) == _answer(VALIDATOR.flight, flight, 0)


def test_no_schedule_pattern_matches_a_separator() -> None:
    """What a lone flight's check relies on: a value holding a separator makes a field too many."""
    for field in SCHEDULE_FIELDS_DECLARED:
        valid = SCHEDULED[field.name]
        assert isinstance(valid, str)
        assert field.pattern is not None
        assert re.fullmatch(field.pattern, valid)
        for separator, at in itertools.product(("\x00", "\x01"), range(len(valid) + 1)):
            for value in (
                valid[:at] + separator + valid[at:],
                valid[:at] + separator + valid[at + 1 :],
            ):
                assert not re.fullmatch(field.pattern, value), (field.name, value)


def _answer(call: Callable[..., object], *args: Any) -> dict[str, Any] | None:
    """The error's JSON, or None when the call accepts."""
    try:
        call(*args)
    except ServiceError as error:
        return error.to_json()
    return None


def test_missing_and_unknown_fields_are_named_as_before() -> None:
    with pytest.raises(InvalidFlight) as raised:
        _decoded([{"TIPOVUELO": "N", "MES": 3}])
    assert raised.value.to_json()["detail"] == {
        "index": 0,
        "field": "OPERA",
        "value": None,
        "allowed": ["Grupo LATAM", "Sky Airline"],
    }
    with pytest.raises(InvalidFlight) as raised:
        _decoded([SCHEDULED | {"b": 1, "a": 2}])
    assert raised.value.detail["field"] == "a"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", "empty"),
        (b"[]", "JSON object"),
        (b'{"flights": 1}', "must be a list"),
        (b'{"flights": [], "x": 1}', "unknown top-level"),
        (b'{"flights": [1, 2, 3, 4]}', "limit is 3"),
        (b'{"flights": [', "malformed JSON"),
    ],
)
def test_body_errors(body: bytes, error: str) -> None:
    with pytest.raises(BadRequest if error != "limit is 3" else PayloadTooLarge, match=error):
        VALIDATOR.decode(body)


def test_more_arrays_and_objects_than_the_flights_allow_are_refused_unparsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a hostile-client probe: a body msgspec refused was parsed whole to name its
    first wrong flight, and 1 MiB of empty lists held the event loop about 29 ms (orjson's parse
    and the collection after it) before its 413. Now counted first: one object a flight, the body
    and its list (VALIDATOR takes 3 flights)."""
    with pytest.raises(BadRequest) as named:
        VALIDATOR.decode(b'{"flights": [[], [], 1]}')  # 4 arrays and objects: parsed, named
    assert named.value.detail["index"] == 0

    def unparsed(body: bytes) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr(flights_module, "parse_json", unparsed)
    for body in (b'{"flights": [[], [], [], []]}', b'{"flights": [{}, {}, {"a": {}}]}'):
        with pytest.raises(PayloadTooLarge) as refused:
            VALIDATOR.decode(body)
        assert refused.value.message == (
            "6 JSON arrays and objects in one request; the limit is 3 flights "
            "(an object each, besides the body and its list)"
        ), body
        assert refused.value.detail == {"limit": 3}


def test_brackets_in_strings_are_not_counted_as_arrays_and_objects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a hostile-client probe: one flight whose OPERA held 20,000 `[` was a 413 of
    '20,003 JSON arrays and objects in one request' rather than the 400 naming its OPERA; a
    bracket in a string counted as one opened. Escaped quotes and backslashes do not end or
    start a string; brackets outside strings still make the 413, unparsed (VALIDATOR takes 3
    flights)."""
    for opera in ("[" * 20, "{[" * 10, '\\"[[[[[[[[[[', "\\\\[[[[[[[[[["):
        body = b'{"flights": [{"OPERA": "%s", "TIPOVUELO": "N", "MES": 3}]}' % opera.encode()
        with pytest.raises(BadRequest) as named:
            VALIDATOR.decode(body)
        assert named.value.detail["field"] == "OPERA", body

    def unparsed(body: bytes) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr(flights_module, "parse_json", unparsed)
    for body in (
        b'{"flights": [[], [], [], ["a"]]}',
        b'{"flights": [{"OPERA": "[[[\\\\"}, {}, {}, {}]}',  # a string ending in a backslash
    ):
        with pytest.raises(PayloadTooLarge) as refused:
            VALIDATOR.decode(body)
        assert refused.value.message.startswith("6 JSON arrays and objects"), body


def test_unknown_top_level_fields_are_quoted_short_whatever_the_body() -> None:
    """Found by a hostile-client probe: every unknown name was listed whole, so a 1-MiB body of
    95,000 of them got a 950-KB error (and one 1-MB name, all of it)."""
    with pytest.raises(BadRequest, match=re.escape("field(s): ['x']")):
        VALIDATOR.decode(b'{"flights": [], "x": 1}')
    many = b"{" + b",".join(b'"k%05d": 0' % i for i in range(95_000)) + b', "flights": []}'
    long = b'{"' + b"k" * 1_000_000 + b'": 0, "flights": []}'
    for body in (many, long):
        with pytest.raises(BadRequest) as raised:
            VALIDATOR.decode(body)
        assert len(orjson.dumps(raised.value.to_json())) < 300


def test_unknown_top_level_fields_beside_valid_flights_are_refused_sorted() -> None:
    """Valid flights pass the compiled decoder in one go: an unknown top-level field beside them
    must be refused there too, not dropped, its names listed in order (up to SHOWN_ITEMS of
    them, each quoted) and `flights` named as the one allowed."""
    names = [f"x{i}" for i in reversed(range(SHOWN_ITEMS))]
    with pytest.raises(BadRequest) as raised:
        VALIDATOR.decode(orjson.dumps({"flights": [SCHEDULED]} | dict.fromkeys(names, 0)))
    assert raised.value.message == f"unknown top-level field(s): {sorted(names)}"
    assert raised.value.detail == {"allowed": ["flights"]}


# --- the inference protocol's columns -------------------------------------------------------------


def _by_rows(validator: FlightValidator, columns: dict[str, list[Any]]) -> Columns:
    """The flights of `columns` the row way: one dict per flight through `batch`."""
    rows = [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]
    return validator.batch(rows).single()


def _fields(columns: Columns) -> list[Any]:
    return [
        value.tolist() if isinstance(value, np.ndarray) else None if value is None else list(value)
        for value in (getattr(columns, field.name) for field in dataclasses.fields(columns))
    ]


def test_the_column_checks_give_the_rows_columns_over_the_whole_minimal_domain() -> None:
    operators = ModelCard.from_json(orjson.loads((MODELS_DIR / "delay-minimal.json").read_bytes()))
    validator = FlightValidator(operators.operators, max_flights=1000)
    domain = minimal_domain(operators.operators)
    columns: dict[str, list[Any]] = {
        "OPERA": list(domain.operator),
        "TIPOVUELO": list(domain.flight_type),
        "MES": list(domain.month),
    }
    assert len(domain) == 552
    checked = validator.columns(columns)
    assert checked is not None
    assert _fields(checked) == _fields(_by_rows(validator, columns))


def test_the_column_checks_give_the_rows_columns_for_scheduled_flights() -> None:
    rows = synthetic_rows(1000, seed=3)
    validator = FlightValidator({row["OPERA"] for row in rows}, max_flights=1000)
    columns: dict[str, list[Any]] = {
        "OPERA": [row["OPERA"] for row in rows],
        "TIPOVUELO": [row["TIPOVUELO"] for row in rows],
        "MES": [int(row["Fecha-I"][5:7]) for row in rows],
        "Fecha-I": [row["Fecha-I"].replace(" ", "T", index % 2) for index, row in enumerate(rows)],
        "Des-I": [row["Des-I"] for row in rows],
        "Emp-I": [row["Emp-I"] for row in rows],
        "Vlo-I": [int(row["Vlo-I"]) if i % 3 else row["Vlo-I"] for i, row in enumerate(rows)],
    }
    checked = validator.columns(columns)
    assert checked is not None
    assert _fields(checked) == _fields(_by_rows(validator, columns))


@pytest.mark.parametrize("field", ALLOWED_FIELDS)
def test_the_column_checks_accept_only_what_the_rows_accept(field: str) -> None:
    """Each odd value as the first, middle and last of three flights: the column checks either
    give the rows' columns or leave the request to the rows (None), which then name it."""
    minimal: dict[str, object] = {"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 2}
    for base, value, index in itertools.product((minimal, SCHEDULED), WEIRD, range(3)):
        flights = [base, base, base]
        flights[index] = base | {field: value}
        if flights[index].keys() != base.keys():
            continue  # a field only some flights have is not a column
        columns = {name: [flight[name] for flight in flights] for name in base}
        checked = VALIDATOR.columns(columns)
        answer = _answer(_by_rows, VALIDATOR, columns)
        if answer is not None:
            assert checked is None, columns
            assert answer["detail"]["index"] == index
        elif checked is not None:
            assert _fields(checked) == _fields(_by_rows(VALIDATOR, columns)), columns


def test_the_column_checks_leave_sizes_and_unknown_inputs_to_the_rows() -> None:
    minimal: dict[str, list[str] | list[int]] = {
        "OPERA": ["Sky Airline"],
        "TIPOVUELO": ["N"],
        "MES": [3],
    }
    assert VALIDATOR.columns(minimal) is not None
    assert VALIDATOR.columns({name: [] for name in minimal}) is None
    assert VALIDATOR.columns({name: values * 4 for name, values in minimal.items()}) is None
    assert VALIDATOR.columns(minimal | {"Fecha-O": ["2017-03-01 10:00:00"]}) is None
    assert VALIDATOR.columns({"OPERA": ["Sky Airline"], "MES": [3]}) is None

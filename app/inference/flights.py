"""The request contract: what a flight is, declared once, and how a raw body becomes a batch.

Two contracts share one shape. The challenge's minimal flight has `OPERA`, `TIPOVUELO` and
`MES`; a full scheduled flight adds the data set's own `Fecha-I`, `Des-I`, `Emp-I` and `Vlo-I`
and is scored by the stronger model. Fields outside these seven are refused, so that a typo or
an as-operated field (`Fecha-O`, known only after the flight) never passes silently.

The `Field`s below are the one declaration: each field's msgspec type (with its constraints,
description and example), the problem an error names and what it allows. From them come the
compiled decoder that validates a whole body in one pass (msgspec), the OpenAPI schema
(`app.rest.openapi`), and the error of a refused body, found by checking the same types field by
field. The rules that join fields (a schedule is all four or none, a real date in a month MES
allows: `operated_in`) are checked column-wise after the compiled pass, and again flight by
flight only to name the first flight that breaks one. The inference protocol's flights come as
columns already: `FlightValidator.columns` checks them a column at a time, and only a request it
cannot vouch for takes the row way, so both ways accept the same flights and refuse them with
one error.
"""

from __future__ import annotations

import calendar
import functools
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from operator import itemgetter
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec
import numpy as np

from app.errors import (
    SHOWN_ITEMS,
    BadRequest,
    InvalidFlight,
    PayloadTooLarge,
    ServiceError,
    quoted,
)
from app.rest.http import parse_json

FLIGHT_TYPES = ("I", "N")
DATETIME_FORMAT = "YYYY-MM-DD HH:MM:SS"
"""The data set's form of `Fecha-I`, which the model card records (export.card)."""
DEPARTURE_FORMS = f"{DATETIME_FORMAT} or YYYY-MM-DDTHH:MM:SS"
"""Every form `Fecha-I` is accepted in (its pattern in `departure_field`): an error's `allowed`."""
_FIELD_SEPARATOR, _ROW_SEPARATOR = "\x00", "\x01"
DEPARTURE_DTYPE = np.dtype("datetime64[m]")
"""`Columns.departure`'s dtype, as an object: numpy parses a dtype string on every call (0.1 us)"""


@dataclass(frozen=True, slots=True)
class Field:
    """One request field: its JSON name, the attribute it decodes to, its type (msgspec, with
    its cheap constraints and its documentation), the pattern its strings must match, and how
    an error about it reads.

    The pattern is documented in the schema but not given to msgspec, which would call `re` once
    per value (about 1 us each: most of a 1,000-flight body's decoding time): the validator
    checks every scheduled string of a batch in one regex pass instead (`_ScheduleText`)."""

    name: str
    attribute: str
    type: Any
    problem: str
    allowed: Any
    pattern: str | None = None

    def accepts(self, value: Any) -> bool:
        """The one-value check, for naming the field of a refused flight."""
        try:
            msgspec.convert(value, self.type)
        except msgspec.ValidationError:
            return False
        return self.pattern is None or type(value) is not str or _fullmatch(self.pattern, value)


def _fullmatch(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern, value) is not None


def _field(
    name: str,
    attribute: str,
    type_: Any,
    problem: str,
    allowed: Any,
    pattern: str | None = None,
    **meta: Any,
) -> Field:
    if pattern is not None:
        type_ = _with_pattern(type_, msgspec.Meta(extra_json_schema={"pattern": f"^{pattern}$"}))
    return Field(name, attribute, Annotated[type_, msgspec.Meta(**meta)], problem, allowed, pattern)


def _with_pattern(type_: Any, documented: msgspec.Meta) -> Any:
    """`type_` with its strings `documented`: in a union (Vlo-I's integer or string), on its
    string member, since a `pattern` beside `anyOf` broke generated clients (orval's zod called
    `.regex` on the union) though it meant the same."""
    if get_origin(type_) not in (Union, UnionType):
        return Annotated[type_, documented]
    members = [
        Annotated[str, documented] if member is str else member for member in get_args(type_)
    ]
    return functools.reduce(operator.or_, members)


def departure_years(years: tuple[int, int]) -> str:
    """The years of departure a validator bounding them allows, as its `Fecha-I` description
    (and the model card's, export.card) words them."""
    return f"its year from {years[0]} to {years[1]}"


def departure_field(years: tuple[int, int] | None) -> Field:
    """`Fecha-I`, documented with the years of departure a validator allows, if it bounds them."""
    bound = "" if years is None else ", " + departure_years(years)
    return _field(
        "Fecha-I",
        "departure",
        Annotated[str, msgspec.Meta(min_length=19, max_length=19)],
        "not a scheduled date and time",
        DEPARTURE_FORMS,
        "(?!0000)[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}",  # year 0: numpy parses it
        description=f"scheduled departure, local time, {DEPARTURE_FORMS}; MES is its month, "
        f"or the next for a departure on a month's last day{bound}",
        examples=["2017-01-01 23:30:00"],
    )


SCHEDULE_FIELDS_DECLARED = (
    departure_field(None),
    _field(
        "Des-I",
        "destination",
        str,
        "not an ICAO airport code",
        "4 letters A-Z",
        "[A-Z]{4}",
        description="scheduled destination, ICAO airport code",
        examples=["KMIA"],
    ),
    _field(
        "Emp-I",
        "airline",
        str,
        "not an ICAO airline code",
        "3 letters A-Z",
        "[A-Z]{3}",
        description="scheduled airline, ICAO code",
        examples=["LAN"],
    ),
    _field(
        "Vlo-I",
        "number",
        Annotated[int, msgspec.Meta(ge=0, le=9999)] | str,
        "not a flight number",
        "1-4 digits, optionally one letter A-Z",
        "[0-9]{1,4}[A-Z]?",
        description="scheduled flight number (a number is read as its digits; leading zeros "
        "are ignored: 0226 is 226)",
        examples=["226"],
    ),
)
SCHEDULE_FIELDS = tuple(field.name for field in SCHEDULE_FIELDS_DECLARED)


def minimal_fields(operators: Sequence[str]) -> tuple[Field, ...]:
    """The challenge's three fields; OPERA allows the operators the models were trained on."""
    return (
        _field(
            "OPERA",
            "operator",
            Literal[tuple(operators)] if operators else str,
            "unknown airline",
            sorted(operators),
            description="operating airline",
            examples=["Grupo LATAM"],
        ),
        _field(
            "TIPOVUELO",
            "flight_type",
            Literal[FLIGHT_TYPES],
            "not a flight type",
            list(FLIGHT_TYPES),
            description="I: international, N: national",
            examples=["I"],
        ),
        _field(
            "MES",
            "month",
            Annotated[int, msgspec.Meta(ge=1, le=12)],
            "not a month",
            "an integer from 1 to 12",
            description="month of the scheduled departure, written as an integer (`3`: a "
            "`3.0` is refused, though JSON Schema's `integer` admits it); with Fecha-I, the next "
            "month is taken too for a departure on a month's last day (the SCL data's MES is the "
            "month of operation, and 9 of its flights left after midnight)",
            examples=[3],
        ),
    )


MINIMAL_FIELDS = tuple(field.name for field in minimal_fields(()))
ALLOWED_FIELDS = MINIMAL_FIELDS + SCHEDULE_FIELDS
_ALLOWED = frozenset(ALLOWED_FIELDS)
_MINIMAL = frozenset(MINIMAL_FIELDS)
_SCHEDULE = frozenset(SCHEDULE_FIELDS)
_FLIGHT_TYPES = frozenset(FLIGHT_TYPES)
_MONTHS = frozenset(range(1, 13))
_MONTH_TYPE = frozenset({int})
"""exactly int: True == 1, but msgspec refuses a bool for MES"""

MINIMAL_EXAMPLE = {"OPERA": "Aerolineas Argentinas", "TIPOVUELO": "N", "MES": 3}
FULL_EXAMPLE = {
    "OPERA": "Grupo LATAM",
    "TIPOVUELO": "I",
    "MES": 1,
    "Fecha-I": "2017-01-01 23:30:00",
    "Des-I": "KMIA",
    "Emp-I": "LAN",
    "Vlo-I": "226",
}
INVALID_EXAMPLE = MINIMAL_EXAMPLE | {"MES": 13}
"""The documented 400: app.rest.openapi shows the error the validator gives for it."""


@dataclass(frozen=True, slots=True)
class Schedule:
    """The scheduled (`-I`) fields: all known before the flight."""

    departure: datetime
    destination: str
    airline: str
    number: str


@dataclass(frozen=True, slots=True)
class Flight:
    operator: str
    flight_type: str
    month: int
    schedule: Schedule | None = None

    def request_fields(self) -> dict[str, Any]:
        """The flight as a `/predict` body lists it (model cards' samples, tests' streams)."""
        fields: dict[str, Any] = {
            "OPERA": self.operator,
            "TIPOVUELO": self.flight_type,
            "MES": self.month,
        }
        if self.schedule is not None:
            fields |= {
                "Fecha-I": self.schedule.departure.strftime("%Y-%m-%d %H:%M:%S"),
                "Des-I": self.schedule.destination,
                "Emp-I": self.schedule.airline,
                "Vlo-I": self.schedule.number,
            }
        return fields


@dataclass(slots=True)
class Columns:
    """Validated flights of one contract, one column per field; the schedule columns are None
    for minimal flights. Built per request: not frozen, since a frozen dataclass's __init__
    costs about 0.2 µs a field (object.__setattr__)."""

    operator: Sequence[str]
    flight_type: Sequence[str]
    month: Sequence[int]
    departure: np.ndarray | None = None
    """datetime64[m] (DEPARTURE_DTYPE), local scheduled time"""
    destination: Sequence[str] | None = None
    airline: Sequence[str] | None = None
    number: Sequence[str] | None = None

    def __len__(self) -> int:
        return len(self.month)

    def flights(self) -> list[Flight]:
        if self.departure is None:
            return [
                Flight(*row)
                for row in zip(self.operator, self.flight_type, self.month, strict=True)
            ]
        assert self.destination is not None
        assert self.airline is not None
        assert self.number is not None
        departures = self.departure.astype("datetime64[s]").tolist()
        return [
            Flight(operator, kind, month, Schedule(*schedule))
            for operator, kind, month, *schedule in zip(
                self.operator,
                self.flight_type,
                self.month,
                departures,
                self.destination,
                self.airline,
                self.number,
                strict=True,
            )
        ]

    @classmethod
    def joined(cls, parts: Sequence[Columns]) -> Columns:
        """Several requests' flights of one contract as one set of columns, in order: how
        app.inference.microbatch scores concurrent requests in one onnxruntime call."""
        if len(parts) == 1:
            return parts[0]

        def column(name: str) -> list[Any]:
            return list(chain.from_iterable(getattr(part, name) for part in parts))

        minimal = (column("operator"), column("flight_type"), column("month"))
        if parts[0].departure is None:
            return cls(*minimal)
        departures = [part.departure for part in parts if part.departure is not None]
        return cls(
            *minimal,
            np.concatenate(departures),
            column("destination"),
            column("airline"),
            column("number"),
        )


@dataclass(slots=True)
class Batch:
    """A validated `flights` list, split by contract: `minimal` and `full` hold the flights
    without and with a schedule, `minimal_rows` and `full_rows` their positions in the request
    (None when the batch is all of one contract). Not frozen, as `Columns`."""

    size: int
    minimal: Columns | None
    full: Columns | None
    minimal_rows: list[int] | None = None
    full_rows: list[int] | None = None

    def single(self) -> Columns:
        """The columns of a batch known to be of one contract (the inference protocol's: one
        model, one set of inputs)."""
        if self.minimal is not None and self.full is not None:
            raise BadRequest("the flights of one inference request are all of one contract")
        columns = self.full or self.minimal
        assert columns is not None
        return columns

    def flights(self) -> list[Flight]:
        """The flights in request order, as objects (training and tests; serving uses columns)."""
        ordered: list[Flight | None] = [None] * self.size
        for columns, rows in ((self.minimal, self.minimal_rows), (self.full, self.full_rows)):
            if columns is not None:
                for row, flight in zip(rows or range(self.size), columns.flights(), strict=True):
                    ordered[row] = flight
        return [flight for flight in ordered if flight is not None]


class FlightValidator:
    """Decodes and checks raw flights against the operators the models were trained on and, when
    given, the years of departure the full model's holiday calendar covers (`years`, first and
    last inclusive): outside them its holiday features would be those of a year without any."""

    def __init__(
        self, operators: Iterable[str], max_flights: int, years: tuple[int, int] | None = None
    ) -> None:
        self.operators = frozenset(operators)
        self.max_flights = max_flights
        self.years = years
        # as the departures' strings compare: from the first year's, before the next year's
        self._years = None if years is None else (f"{years[0]:04}", f"{years[1] + 1:04}")
        self.fields = (
            *minimal_fields(sorted(self.operators)),
            departure_field(years),
            *SCHEDULE_FIELDS_DECLARED[1:],
        )
        self.flight_type = msgspec.defstruct(
            "Flight",
            [
                (field.attribute, field.type)
                if field.name in MINIMAL_FIELDS
                else (field.attribute, field.type | msgspec.UnsetType, msgspec.UNSET)
                for field in self.fields
            ],
            rename={field.attribute: field.name for field in self.fields},
            forbid_unknown_fields=True,
            omit_defaults=True,
            kw_only=True,
            gc=False,  # flat values only: no cycles for the collector to track
        )
        self.flight_type.__doc__ = (
            "The minimal contract is OPERA, TIPOVUELO, MES. Adding all four scheduled fields "
            "selects the full-schedule model. Any other field is refused (400)."
        )
        self.flights_type = Annotated[
            list[self.flight_type],  # type: ignore[name-defined]
            msgspec.Meta(min_length=1, max_length=max_flights),
        ]
        self.request_type = msgspec.defstruct(
            "PredictRequest",
            [("flights", self.flights_type)],
            forbid_unknown_fields=True,
            gc=False,
        )
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(self.request_type)

    def decode(self, body: bytes) -> Batch:
        """A `/predict` body (`{"flights": [flight, ...]}`) in one pass, or the error that
        names the first wrong flight, field and value."""
        try:
            flights = self._decoder.decode(body).flights
        except msgspec.MsgspecError:
            self._check_containers(body)
            return self.request(parse_json(body))
        return self._batch(flights, None, body)

    def request(self, payload: Any) -> Batch:
        """A `/predict` body already parsed as JSON."""
        if not isinstance(payload, dict):
            raise BadRequest("body must be a JSON object with a 'flights' list")
        extra = payload.keys() - {"flights"}
        if extra:
            # quoted: each name cut, and past a few only their count (a 1-MiB body of 95,000
            # names was answered with all of them, 950 KB)
            # sorted only when quoted name by name: 95,000 names took 20 ms to sort for a count
            names = sorted(extra) if len(extra) <= SHOWN_ITEMS else list(extra)
            raise BadRequest(f"unknown top-level field(s): {quoted(names)}", allowed=["flights"])
        raw = payload.get("flights")
        if not isinstance(raw, list):
            raise BadRequest("'flights' must be a list of flight objects")
        return self.batch(raw)

    def batch(self, raw: list[Any]) -> Batch:
        """A list of parsed flights (from `/predict` or the inference protocol's rows)."""
        if not raw:
            raise BadRequest("'flights' is empty: send at least one flight")
        self.check_count(len(raw))
        try:
            flights = msgspec.convert(raw, self.flights_type)
        except msgspec.ValidationError as error:
            raise self._first_error(raw) or BadRequest(f"invalid flights: {error}") from None
        return self._batch(flights, raw)

    def _check_containers(self, body: bytes) -> None:
        """413 past the arrays and objects `max_flights` flights hold: one object each, the body
        and its list. A body msgspec refused is parsed again to name its first wrong flight,
        field and value, and orjson's parse spends its time on arrays and objects, with the
        collection after it: 1 MiB of empty lists held the event loop about 29 ms; counted by
        their opening brackets, 0.6 ms. Brackets in strings are not counted (`_opened`): one
        flight whose OPERA held 20,000 `[` was a 413 of '20,003 JSON arrays and objects'
        instead of the 400 naming its OPERA."""
        most = self.max_flights + 2
        if len(body) <= most:
            return
        containers = body.count(b"[") + body.count(b"{")
        if containers > most and b'"' in body:  # only then can a bracket be in a string
            containers = _opened(body)
        if containers > most:
            raise PayloadTooLarge(
                f"{containers:,} JSON arrays and objects in one request; the limit is "
                f"{self.max_flights} flights (an object each, besides the body and its list)",
                limit=self.max_flights,
            )

    def check_count(self, flights: int) -> None:
        """413 past `max_flights` flights."""
        if flights > self.max_flights:
            raise PayloadTooLarge(
                f"{flights} flights in one request; the limit is {self.max_flights}",
                limit=self.max_flights,
            )

    def flights(self, raw: list[Any]) -> list[Flight]:
        return self.batch(raw).flights()

    def flight(self, raw: Any, index: int) -> Flight:
        """One flight, its errors naming `index`."""
        error = self._error(raw, index)
        if error is not None:
            raise error
        return self.batch([raw]).flights()[0]

    def _batch(self, flights: list[Any], raw: list[Any] | None, body: bytes = b"") -> Batch:
        """Columns of the decoded flights, after the rules that join fields: a schedule is all
        four fields or none, a real date and time, in a month MES allows (operated_in)."""
        size = len(flights)
        if size == 1:  # most requests: none of the comprehensions below
            flight = flights[0]
            schedule = (flight.departure, flight.destination, flight.airline, flight.number)
            if schedule == _UNSCHEDULED:
                return Batch(1, _minimal(flights), None)
            return Batch(1, None, self._full(flights, [schedule], raw, body))
        schedules = [(f.departure, f.destination, f.airline, f.number) for f in flights]
        unscheduled = schedules.count(_UNSCHEDULED)
        if unscheduled == size:
            return Batch(size, _minimal(flights), None)
        if unscheduled == 0:
            return Batch(size, None, self._full(flights, schedules, raw, body))
        minimal_rows = [row for row, schedule in enumerate(schedules) if schedule == _UNSCHEDULED]
        full_rows = [row for row, schedule in enumerate(schedules) if schedule != _UNSCHEDULED]
        return Batch(
            size,
            _minimal([flights[row] for row in minimal_rows]),
            self._full(
                [flights[row] for row in full_rows],
                [schedules[row] for row in full_rows],
                raw,
                body,
            ),
            minimal_rows,
            full_rows,
        )

    def _full(
        self,
        flights: list[Any],
        schedules: list[tuple[Any, ...]],
        raw: list[Any] | None,
        body: bytes,
    ) -> Columns:
        """Scheduled flights' columns (a schedule field may be UNSET: refused)."""
        departures, destinations, airlines, numbers = zip(*schedules, strict=True)
        if (
            msgspec.UNSET in departures
            or msgspec.UNSET in destinations
            or msgspec.UNSET in airlines
            or msgspec.UNSET in numbers
        ):
            raise self._refusal(raw, body)
        columns = _scheduled(
            self._years, *_minimal_columns(flights), departures, destinations, airlines, numbers
        )
        if columns is None:
            raise self._refusal(raw, body)
        return columns

    def columns(self, columns: Mapping[str, list[Any]]) -> Columns | None:
        """The flights of an inference request (one column per field, all as long, the fields
        of one contract), when every check passes column by column: set inclusion and the
        schedule's one regex pass, in C, instead of a dict and a msgspec conversion per flight.
        None when a check fails or cannot vouch for a value: `batch` of the rows then decides,
        and its error names the first wrong flight, field and value, as for `/predict`."""
        if columns.keys() not in (_MINIMAL, _ALLOWED):
            return None
        try:  # TypeError: an unhashable value (set inclusion), not a string (the regex pass)
            return self._columns(columns)
        except TypeError:
            return None

    def _columns(self, columns: Mapping[str, list[Any]]) -> Columns | None:
        operators, flight_types, months = (columns[name] for name in MINIMAL_FIELDS)
        if not (
            0 < len(months) <= self.max_flights
            and self.operators.issuperset(operators)
            and _FLIGHT_TYPES.issuperset(flight_types)
            and _MONTH_TYPE.issuperset(map(type, months))
            and _MONTHS.issuperset(months)
        ):
            return None
        if len(columns) == len(MINIMAL_FIELDS):
            return Columns(operators, flight_types, months)
        return _scheduled(
            self._years,
            operators,
            flight_types,
            months,
            *(columns[name] for name in SCHEDULE_FIELDS),
        )

    def _refusal(self, raw: list[Any] | None, body: bytes) -> ServiceError:
        """The error naming the first wrong flight of a body the column checks refused."""
        if raw is None:
            raw = parse_json(body)["flights"]
        return self._first_error(raw) or BadRequest("invalid flights")

    def _first_error(self, raw: list[Any]) -> InvalidFlight | None:
        for index, flight in enumerate(raw):
            error = self._error(flight, index)
            if error is not None:
                return error
        return None

    def _error(self, raw: Any, index: int) -> InvalidFlight | None:
        """What is wrong with one flight, checked in a fixed order (unknown fields, OPERA,
        TIPOVUELO, MES, the schedule: all of it or none, then field by field), each field
        against its declared type."""
        if not isinstance(raw, dict):
            return InvalidFlight(
                index, "*", "a flight must be a JSON object", type(raw).__name__, _AN_OBJECT
            )
        unknown = sorted(raw.keys() - _ALLOWED)
        if unknown:
            return InvalidFlight(index, unknown[0], "unknown field", None, list(ALLOWED_FIELDS))
        minimal, schedule = self.fields[: len(MINIMAL_FIELDS)], self.fields[len(MINIMAL_FIELDS) :]
        for field in minimal:
            if field.name not in raw:
                return InvalidFlight(
                    index, field.name, "required field is missing", None, field.allowed
                )
            error = _field_error(field, raw[field.name], index)
            if error is not None:
                return error
        present = raw.keys() & _SCHEDULE
        if not present:
            return None
        if len(present) < len(_SCHEDULE):
            missing = next(field for field in schedule if field.name not in raw)
            return InvalidFlight(
                index,
                missing.name,
                "a scheduled flight needs all of " + ", ".join(SCHEDULE_FIELDS),
                None,
                missing.allowed,
            )
        for field in schedule:
            value = raw[field.name]
            error = _field_error(field, value, index)
            if error is not None:
                return error
            if field.name == "Fecha-I" and not operated_in(value, raw["MES"]):
                problem = f"month {int(value[5:7])} contradicts MES={raw['MES']}"
                return InvalidFlight(index, field.name, problem, value, _months_of(raw["MES"]))
            if field.name == "Fecha-I" and self.years is not None:
                (first, last), year = self.years, int(value[:4])
                if not first <= year <= last:
                    problem = f"year {year} is outside the model's holiday calendar"
                    return InvalidFlight(index, field.name, problem, value, f"{first} to {last}")
        return None


_AN_OBJECT = (
    f"an object of {', '.join(MINIMAL_FIELDS)}, and for the full schedule "
    f"{', '.join(SCHEDULE_FIELDS)}"
)
"""What a flight must be: an error's `allowed`."""
_UNSCHEDULED = (msgspec.UNSET,) * 4


def _opened(body: bytes) -> int:
    """The arrays and objects a JSON body opens: its `[` and `{` outside strings, a string being
    what lies between an even and an odd double quote once the escapes that hide a quote or a
    backslash (`\\"`, `\\\\`) are dropped. Vectorised: about 7 ms for a hostile 1-MiB body, where
    a loop over its bytes would take hundreds (and orjson's parse of 1 MiB of lists 29)."""
    text = np.frombuffer(body.replace(b"\\\\", b"").replace(b'\\"', b""), dtype=np.uint8)
    # the parity of the quotes up to each byte: 256 is even, so uint8's wrap-around keeps it
    in_string = np.cumsum(text == ord('"'), dtype=np.uint8) & 1
    opening = (text == ord("[")) | (text == ord("{"))
    return int(np.count_nonzero(opening & (in_string == 0)))


def _minimal_columns(flights: list[Any]) -> tuple[list[Any], list[Any], list[Any]]:
    if len(flights) == 1:  # most requests: no comprehension
        flight = flights[0]
        return [flight.operator], [flight.flight_type], [flight.month]
    # three comprehensions: cheaper than zip(*rows, strict=True) for a few flights
    return (
        [f.operator for f in flights],
        [f.flight_type for f in flights],
        [f.month for f in flights],
    )


def _minimal(flights: list[Any]) -> Columns:
    operators, flight_types, months = _minimal_columns(flights)
    return Columns(operators, flight_types, months)


def _scheduled(
    years: tuple[str, str] | None,
    operators: Sequence[str],
    flight_types: Sequence[str],
    months: list[int],
    departures: Sequence[str],
    destinations: Sequence[str],
    airlines: Sequence[str],
    numbers: Sequence[Any],
) -> Columns | None:
    """Scheduled flights' columns, or None when a rule that joins fields is broken: each
    schedule string of its pattern (a flight number given as an integer is read as its digits),
    a date and time that exist, in a month MES allows (operated_in), in the `years` if given
    (the first year's four digits, the next year's after the last)."""
    numbers = [str(number) if type(number) is int else number for number in numbers]
    if not _SCHEDULE_TEXT.matches(departures, destinations, airlines, numbers):
        return None
    if min(numbers)[0] == "0":  # each starts with a digit: the least with 0 if any does
        numbers = [_unpadded(number) for number in numbers]
    try:
        departure = _departures(departures)
    except ValueError:
        return None
    if [int(value[5:7]) for value in departures] != months and not all(  # placed by the pattern
        map(operated_in, departures, months)
    ):
        return None
    if years is not None and not (years[0] <= min(departures) and max(departures) < years[1]):
        return None
    return Columns(operators, flight_types, months, departure, destinations, airlines, numbers)


def operated_in(departure: str, month: int) -> bool:
    """Whether a flight scheduled at `departure` (a date and time that exist, of its field's
    pattern) can have MES `month`: its own month, or the next for a departure on its month's
    last day. The SCL data's MES is the month of operation: 9 of its 68,206 flights, scheduled
    late on a month's last day, left after midnight and carry the next month, and batches of
    the data's own flights holding one were refused whole. The models learn the scheduled
    month (train.data), and the full model, which alone sees Fecha-I, does not read MES: taking
    the next month changes no score."""
    scheduled = int(departure[5:7])
    if month == scheduled:
        return True
    last_day = calendar.monthrange(int(departure[:4]), scheduled)[1]
    return month == scheduled % 12 + 1 and int(departure[8:10]) == last_day


def _months_of(month: int) -> str:
    """What `operated_in` allows a departure of a flight with MES `month`: an error's `allowed`."""
    return f"a departure in month {month}, or on the last day of month {(month - 2) % 12 + 1}"


def _unpadded(number: str) -> str:
    """A flight number (of its field's pattern) without leading zeros, as the data writes it:
    schedules padded to four digits (IATA SSIM's `0226`) name flight 226, which an unseen
    `0226` would score by its route only."""
    digits = number.lstrip("0")
    return digits if digits[:1].isdigit() else "0" + digits


class _ScheduleText:
    """Every scheduled string of a batch checked against its field's pattern in one regex pass:
    the rows joined into one text, fields and rows apart by separators no pattern matches."""

    def __init__(self, fields: Sequence[Field]) -> None:
        row = _FIELD_SEPARATOR.join(f"(?:{field.pattern})" for field in fields)
        self.width = len(fields)
        self.pattern = re.compile(f"{row}(?:{_ROW_SEPARATOR}{row})*")
        self.row = re.compile(row)

    def matches(self, *columns: Sequence[str]) -> bool:
        rows = len(columns[0])
        if rows == 1:
            # One flight, most requests: its fields joined, no rows to zip and no separators to
            # count, since no field's pattern matches a separator (tests/test_flights.py): a
            # value holding one makes a field too many (a third of a lone flight's decoding).
            return self.row.fullmatch(_FIELD_SEPARATOR.join(map(_first, columns))) is not None
        text = _ROW_SEPARATOR.join(map(_FIELD_SEPARATOR.join, zip(*columns, strict=True)))
        # The counts refuse a value that holds a separator and would pass for two.
        return (
            text.count(_FIELD_SEPARATOR) == rows * (self.width - 1)
            and text.count(_ROW_SEPARATOR) == rows - 1
            and self.pattern.fullmatch(text) is not None
        )


_SCHEDULE_TEXT = _ScheduleText(SCHEDULE_FIELDS_DECLARED)
_first = itemgetter(0)


def _field_error(field: Field, value: Any, index: int) -> InvalidFlight | None:
    if not field.accepts(value) or (field.name == "Fecha-I" and not _is_departure(value)):
        return InvalidFlight(index, field.name, field.problem, value, field.allowed)
    return None


def _departures(values: Sequence[str]) -> np.ndarray:
    """Scheduled departures (already of the declared pattern) as datetime64[m]; ValueError for
    a date or time that does not exist."""
    return np.array(values, dtype=DEPARTURE_DTYPE)


def _is_departure(value: Any) -> bool:
    try:
        _departures([value])
    except ValueError:
        return False
    return True

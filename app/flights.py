"""The request contract: what a flight is, and how raw JSON becomes one.

Two contracts share one shape. The challenge's minimal flight has `OPERA`, `TIPOVUELO` and
`MES`; a full scheduled flight adds the data set's own `Fecha-I`, `Des-I`, `Emp-I` and `Vlo-I`
and is scored by the stronger model. Fields outside these seven are refused, so that a typo or
an as-operated field (`Fecha-O`, known only after the flight) never passes silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

from app.errors import BadRequest, InvalidFlight, PayloadTooLarge

MINIMAL_FIELDS = ("OPERA", "TIPOVUELO", "MES")
SCHEDULE_FIELDS = ("Fecha-I", "Des-I", "Emp-I", "Vlo-I")
ALLOWED_FIELDS = MINIMAL_FIELDS + SCHEDULE_FIELDS
FLIGHT_TYPES = ("I", "N")

_ALLOWED = frozenset(ALLOWED_FIELDS)
_SCHEDULE = frozenset(SCHEDULE_FIELDS)
_DESTINATION = re.compile(r"[A-Z]{4}")
_AIRLINE = re.compile(r"[A-Z]{3}")
_FLIGHT_NUMBER = re.compile(r"[0-9]{1,4}[A-Z]?")
_DATETIME_FORMAT = "YYYY-MM-DD HH:MM:SS"


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


class FlightValidator:
    """Checks raw flights against the operators the model was trained on."""

    def __init__(self, operators: Iterable[str], max_flights: int) -> None:
        self.operators = frozenset(operators)
        self._sorted_operators = sorted(self.operators)
        self.max_flights = max_flights

    def request(self, payload: Any) -> list[Flight]:
        """Validates a `/predict` body: `{"flights": [flight, ...]}`."""
        if not isinstance(payload, dict):
            raise BadRequest("body must be a JSON object with a 'flights' list")
        extra = payload.keys() - {"flights"}
        if extra:
            raise BadRequest(f"unknown top-level field(s): {sorted(extra)}", allowed=["flights"])
        raw = payload.get("flights")
        if not isinstance(raw, list):
            raise BadRequest("'flights' must be a list of flight objects")
        return self.flights(raw)

    def flights(self, raw: list[Any]) -> list[Flight]:
        if not raw:
            raise BadRequest("'flights' is empty: send at least one flight")
        if len(raw) > self.max_flights:
            raise PayloadTooLarge(
                f"{len(raw)} flights in one request; the limit is {self.max_flights}",
                limit=self.max_flights,
            )
        flight = self.flight
        return [flight(item, index) for index, item in enumerate(raw)]

    def flight(self, raw: Any, index: int) -> Flight:
        if not isinstance(raw, dict):
            raise InvalidFlight(index, "*", "a flight must be a JSON object", type(raw).__name__)
        if not raw.keys() <= _ALLOWED:
            unknown = sorted(raw.keys() - _ALLOWED)
            raise InvalidFlight(index, unknown[0], "unknown field", None, list(ALLOWED_FIELDS))
        operator: Any = raw.get("OPERA")
        # The type check first: a list or an object is unhashable, and `in` would raise (a 500).
        if type(operator) is not str or operator not in self.operators:
            self._missing_or_wrong(
                raw, index, "OPERA", operator, "unknown airline", self._sorted_operators
            )
        flight_type: Any = raw.get("TIPOVUELO")
        if flight_type != "I" and flight_type != "N":
            self._missing_or_wrong(
                raw, index, "TIPOVUELO", flight_type, "not a flight type", list(FLIGHT_TYPES)
            )
        month: Any = raw.get("MES")
        if type(month) is not int or not 1 <= month <= 12:
            self._missing_or_wrong(
                raw, index, "MES", month, "not a month", "an integer from 1 to 12"
            )
        schedule = _schedule(raw, index, month) if len(raw) > 3 else None
        return Flight(operator, flight_type, month, schedule)

    @staticmethod
    def _missing_or_wrong(
        raw: dict[str, Any], index: int, field: str, value: Any, problem: str, allowed: Any
    ) -> NoReturn:
        if field not in raw:
            raise InvalidFlight(index, field, "required field is missing", None, allowed)
        raise InvalidFlight(index, field, problem, value, allowed)


def _schedule(raw: dict[str, Any], index: int, month: int) -> Schedule | None:
    present = raw.keys() & _SCHEDULE
    if not present:
        return None
    if len(present) < len(_SCHEDULE):
        missing = [field for field in SCHEDULE_FIELDS if field not in raw]
        raise InvalidFlight(
            index, missing[0], "a scheduled flight needs all of " + ", ".join(SCHEDULE_FIELDS)
        )
    departure = _departure(raw["Fecha-I"], index)
    if departure.month != month:
        raise InvalidFlight(
            index, "Fecha-I", f"month {departure.month} contradicts MES={month}", raw["Fecha-I"]
        )
    destination = raw["Des-I"]
    if type(destination) is not str or not _DESTINATION.fullmatch(destination):
        raise InvalidFlight(
            index, "Des-I", "not an ICAO airport code", destination, "4 letters A-Z"
        )
    airline = raw["Emp-I"]
    if type(airline) is not str or not _AIRLINE.fullmatch(airline):
        raise InvalidFlight(index, "Emp-I", "not an ICAO airline code", airline, "3 letters A-Z")
    number = raw["Vlo-I"]
    if type(number) is int and 0 <= number <= 9999:
        number = str(number)
    elif type(number) is not str or not _FLIGHT_NUMBER.fullmatch(number):
        raise InvalidFlight(
            index, "Vlo-I", "not a flight number", number, "1-4 digits, optionally one letter A-Z"
        )
    return Schedule(departure, destination, airline, number)


def _departure(value: Any, index: int) -> datetime:
    # fromisoformat is ~20x faster than strptime, but also takes forms the data set never uses
    # (a bare date, time zones); the length and separator checks keep exactly its format.
    if type(value) is str and len(value) == 19 and value[10] in " T":
        try:
            departure = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if departure.tzinfo is None:
                return departure
    raise InvalidFlight(index, "Fecha-I", "not a scheduled date and time", value, _DATETIME_FORMAT)

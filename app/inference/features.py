"""Flights become the float32 matrix the ONNX models take.

Training and serving both call this module, so the encoding cannot drift between them. The
work is column-wise: `Columns` holds a batch as numpy arrays (one per request field), and
`FeatureEncoder.encode_columns` turns them into the matrix; `encode(flights)` is the thin
wrapper for `app.inference.flights.Flight` objects.

Features come in named groups (`GROUPS`) so that training can drop a group that does not help
on future months. Two kinds of encoding:

* `OPERA` and `TIPOVUELO` become integer codes ranked by their training delay rate (a tree
  splits on the code as on the category; a linear model one-hot encodes it). HistGradient-
  Boosting's native categorical splits are avoided: skl2onnx 1.20 converts them wrongly.
* Destination, airline and flight number become the logit of a smoothed delay rate. The flight
  number's rate is shrunk toward its route's (airline + destination), the route's toward the
  airline's, the airline's toward the overall rate; a value never seen in training takes its
  parent's rate, so a new flight number is scored like its route, not like a pooled rare bucket.

Calendar features recur from one year to the next (weekday, hour, the challenge's high season,
Chilean public holidays); the holiday calendar is written into the model card at export, so the
service needs no holiday library.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

from app.inference.flights import DEPARTURE_DTYPE, Columns, Flight

OTHER = "~other"
"""The code of an OPERA or TIPOVUELO value never seen in training."""

GROUPS: dict[str, tuple[str, ...]] = {
    "OPERA": ("OPERA",),
    "TIPOVUELO": ("TIPOVUELO",),
    "MES": ("MES",),
    "hour": ("hour",),
    "weekday": ("weekday",),
    "day": ("day",),
    "day_of_year": ("day_of_year",),
    "high season": ("high_season",),
    "holidays": ("holiday", "days_to_holiday", "days_after_holiday"),
    "Des-I": ("destination_rate",),
    "Emp-I": ("airline_rate",),
    "flight number": ("flight_rate",),
}
"""Feature group -> the matrix columns it adds, in this order."""
MINIMAL_GROUPS = ("OPERA", "TIPOVUELO", "MES")
SCHEDULE_GROUPS = tuple(group for group in GROUPS if group not in MINIMAL_GROUPS)
RANKED = ("OPERA", "TIPOVUELO")
RATE_FEATURES = ("destination_rate", "airline_rate", "flight_rate")
"""Columns computed from training labels: fitted out of fold on training rows."""
HIGH_SEASON = ((1215, 1231), (101, 303), (715, 731), (911, 930))
"""The challenge's high season: (from, to) as month*100 + day, both days included."""
HOLIDAY_HORIZON = 7
"""Days to or after a holiday are counted up to this many; further is this many."""
SMOOTHING = 30.0
"""Pseudo-rows of the parent's rate mixed into each smoothed rate (flight, route, airline)."""
CALENDAR_GROUPS = ("weekday", "day", "day_of_year", "high season", "holidays")
"""The groups that depend on the departure's date alone (consecutive in GROUPS)."""
ROWS_BELOW = 32
"""Batches of fewer flights are encoded value by value in Python (`FeatureEncoder._rows`; one
flight by `_row`), larger ones column by column in numpy: each numpy operation has a fixed cost
of about 1 us, which is most of the cost of a few flights (one flight of the served full model,
in-process: 15-20 us column-wise, 5.6 us by rows, 2.2 us by `_row`, its float32 array included;
rows and columns are about equal at 32 flights)."""
CALENDAR_DAYS = 4096
"""Dates whose calendar features an encoder remembers (`FeatureEncoder._calendar`): the dates
of a schedule are few, and one not remembered costs what the column-wise encoding does."""


def feature_names(groups: Sequence[str]) -> tuple[str, ...]:
    return tuple(name for group in GROUPS if group in groups for name in GROUPS[group])


def from_flights(flights: Sequence[Flight]) -> Columns:
    """Flight objects as columns; the schedule columns only if every flight has a schedule."""
    operator = [flight.operator for flight in flights]
    flight_type = [flight.flight_type for flight in flights]
    month = [flight.month for flight in flights]
    schedules = [flight.schedule for flight in flights]
    if not schedules or any(schedule is None for schedule in schedules):
        return Columns(operator, flight_type, month)
    return Columns(
        operator,
        flight_type,
        month,
        np.array([s.departure for s in schedules if s], dtype="datetime64[m]"),
        [s.destination for s in schedules if s],
        [s.airline for s in schedules if s],
        [s.number for s in schedules if s],
    )


def take(columns: Columns, rows: np.ndarray) -> Columns:
    """The rows `rows` of every column: lists of Python values, as a request's columns are (and
    as Columns declares them; the encoder made them lists anyway), the departures an array."""

    def pick(column: Sequence[Any]) -> list[Any]:
        picked: list[Any] = np.asarray(column)[rows].tolist()
        return picked

    def pick_schedule(column: Sequence[Any] | None) -> list[Any] | None:
        return None if column is None else pick(column)

    return Columns(
        pick(columns.operator),
        pick(columns.flight_type),
        pick(columns.month),
        None if columns.departure is None else columns.departure[rows],
        pick_schedule(columns.destination),
        pick_schedule(columns.airline),
        pick_schedule(columns.number),
    )


def hierarchy_keys(columns: Columns) -> tuple[list[str], list[str], list[str]]:
    """(flight, route, airline) keys, most specific first. Python string concatenation: faster
    than np.char.add at every batch size, and ~20x for one flight."""
    airlines, destinations, numbers = _schedule_columns(columns)
    airline = [str(value) for value in airlines]
    route = [_route_key(a, d) for a, d in zip(airline, destinations, strict=True)]
    flight = [_flight_key(a, n) for a, n in zip(airline, numbers, strict=True)]
    return flight, route, airline


def _route_key(airline: str, destination: Any) -> str:
    return airline + ">" + str(destination)


def _flight_key(airline: str, number: Any) -> str:
    return airline + " " + str(number)


def _schedule_columns(columns: Columns) -> tuple[Sequence[Any], Sequence[Any], Sequence[Any]]:
    """(airline, destination, number)"""
    if columns.airline is None or columns.destination is None or columns.number is None:
        raise ValueError("the full-schedule model needs flights with their schedule")
    return columns.airline, columns.destination, columns.number


@dataclass(frozen=True)
class Vocabulary:
    """Category values in rank order (code = position); OTHER is always one of them."""

    values: tuple[str, ...]

    def __post_init__(self) -> None:
        if OTHER not in self.values or len(set(self.values)) != len(self.values):
            raise ValueError("a vocabulary lists each value once, OTHER included")

    @classmethod
    def fit(cls, values: Sequence[str] | np.ndarray, labels: np.ndarray) -> Vocabulary:
        keys, inverse = np.unique(np.asarray(values, dtype=str), return_inverse=True)
        rates = dict(
            zip(
                keys.tolist(),
                (np.bincount(inverse, labels) / np.bincount(inverse)).tolist(),
                strict=True,
            )
        )
        rates[OTHER] = float(labels.mean()) if len(labels) else 0.0
        return cls(tuple(sorted(rates, key=lambda value: (rates[value], value))))

    @cached_property
    def codes(self) -> dict[str, int]:
        return {value: code for code, value in enumerate(self.values)}

    def encode(self, values: Sequence[str] | np.ndarray) -> np.ndarray:
        return np.array(self.encoded(values), dtype=np.float64)

    def encoded(self, values: Sequence[str] | np.ndarray) -> list[int]:
        codes = self.codes
        return _looked_up(values, codes, codes[OTHER])


@dataclass(frozen=True)
class RateTable:
    """Smoothed delay rates (as logits) by key; `default` for a key it does not hold."""

    logits: dict[str, float]
    default: float

    @classmethod
    def fit(
        cls, keys: Sequence[str] | np.ndarray, labels: np.ndarray, prior: np.ndarray, default: float
    ) -> RateTable:
        """Each key's rate is shrunk toward the mean `prior` (a probability) of its rows."""
        unique, inverse = np.unique(keys, return_inverse=True)
        counts = np.bincount(inverse)
        parent = np.bincount(inverse, prior) / counts
        rates = (np.bincount(inverse, labels) + SMOOTHING * parent) / (counts + SMOOTHING)
        return cls(dict(zip(unique.tolist(), _logit(rates).tolist(), strict=True)), default)

    def lookup(
        self, keys: Sequence[str] | np.ndarray, fallback: np.ndarray | None = None
    ) -> np.ndarray:
        """Logit per key; a key not held takes `fallback` (per row), else the default."""
        found = _mapped(keys, self.logits, np.nan)
        return np.where(np.isnan(found), self.default if fallback is None else fallback, found)

    def to_json(self) -> dict[str, Any]:
        return {"default": self.default, "logits": dict(sorted(self.logits.items()))}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RateTable:
        return cls(dict(data["logits"]), float(data["default"]))


@dataclass(frozen=True)
class Hierarchy:
    """Flight number -> route (airline + destination) -> airline -> overall delay rate."""

    airline: RateTable
    route: RateTable
    flight: RateTable

    @classmethod
    def fit(cls, columns: Columns, labels: np.ndarray) -> Hierarchy:
        flight, route, airline = hierarchy_keys(columns)
        overall = float(labels.mean())
        airlines = RateTable.fit(
            airline, labels, np.full(len(labels), overall), float(_logit(np.array(overall)))
        )
        airline_rate = _expit(airlines.lookup(airline))
        routes = RateTable.fit(route, labels, airline_rate, airlines.default)
        route_rate = _expit(routes.lookup(route))
        return cls(airlines, routes, RateTable.fit(flight, labels, route_rate, airlines.default))

    def encode(self, columns: Columns) -> tuple[np.ndarray, np.ndarray]:
        airline_logit, flight_logit = self.logits(columns)
        return np.array(airline_logit, dtype=np.float64), np.array(flight_logit, dtype=np.float64)

    def logits(self, columns: Columns) -> tuple[list[float], list[float]]:
        """(airline logit, flight logit) per row, each falling back to its parent: a row's
        keys and three lookups in one step (one `RateTable.lookup` per level cost three numpy
        round trips, most of a one-flight request's encoding; three key lists and two lookup
        lists, twice this loop's time for one flight)."""
        airline_get, route_get, flight_get = (
            self.airline.logits.get,
            self.route.logits.get,
            self.flight.logits.get,
        )
        default = self.airline.default
        airline_logits: list[float] = []
        flight_logits: list[float] = []
        for airline, destination, number in zip(*_schedule_columns(columns), strict=True):
            airline = str(airline)
            logit = airline_get(airline, default)
            airline_logits.append(logit)
            # _route_key's and _flight_key's formats, inlined: two calls a row cost ~10 % at
            # 1,000 flights (tests/test_features.py checks these against hierarchy_keys)
            route = route_get(airline + ">" + str(destination), logit)
            flight_logits.append(flight_get(airline + " " + str(number), route))
        return airline_logits, flight_logits

    def row_logits(self, airline: Any, destination: Any, number: Any) -> tuple[float, float]:
        """`logits` of one flight (FeatureEncoder._row): its loop's lookups, without the lists
        and the loop (1.0 -> 0.3 us)."""
        airline = str(airline)
        logit = self.airline.logits.get(airline, self.airline.default)
        route = self.route.logits.get(_route_key(airline, destination), logit)
        return logit, self.flight.logits.get(_flight_key(airline, number), route)

    def to_json(self) -> dict[str, Any]:
        return {
            "airline": self.airline.to_json(),
            "route": self.route.to_json(),
            "flight": self.flight.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Hierarchy:
        return cls(*(RateTable.from_json(data[level]) for level in ("airline", "route", "flight")))


@dataclass(frozen=True)
class Calendar:
    """Chilean public holidays, as sorted datetime64[D] (written into the card at export)."""

    holidays: np.ndarray

    @property
    def exact_years(self) -> tuple[int, int]:
        """The years of departure (first, last) whose every day `encode` gets right: the
        calendar holds whole years, and the days after its last year's last holiday would count
        to the next year's New Year's Day, which it lacks (2036-12-26 to 31 had `days to the next
        holiday` 7 instead of 6 to 1), so its last year is not one."""
        return int(str(self.holidays[0])[:4]), int(str(self.holidays[-1])[:4]) - 1

    def encode(self, departure: np.ndarray) -> np.ndarray:
        """[is a holiday, days to the next, days since the last] per departure."""
        days = departure.astype("datetime64[D]")
        after = np.searchsorted(self.holidays, days, side="left")
        next_day = self.holidays[np.minimum(after, len(self.holidays) - 1)]
        before = np.maximum(np.searchsorted(self.holidays, days, side="right") - 1, 0)
        last_day = self.holidays[before]
        to_next = (next_day - days).astype(np.int64)
        since = (days - last_day).astype(np.int64)
        to_next = np.where(to_next < 0, HOLIDAY_HORIZON, to_next)
        since = np.where(since < 0, HOLIDAY_HORIZON, since)
        return np.stack(
            [
                to_next == 0,
                np.minimum(to_next, HOLIDAY_HORIZON),
                np.minimum(since, HOLIDAY_HORIZON),
            ],
            axis=1,
        )


class FeatureEncoder:
    """Encodes flights for one model: the groups it was trained on, and their fitted tables."""

    def __init__(
        self,
        groups: Sequence[str],
        vocabularies: Mapping[str, Vocabulary],
        destinations: RateTable | None = None,
        hierarchy: Hierarchy | None = None,
        calendar: Calendar | None = None,
    ) -> None:
        unknown = [group for group in groups if group not in GROUPS]
        if unknown:
            raise ValueError(f"unknown feature group(s) {unknown}")
        self.groups = tuple(group for group in GROUPS if group in groups)
        self.schedule = any(group in SCHEDULE_GROUPS for group in self.groups)
        self.feature_names = feature_names(self.groups)
        ranked = [name for name in RANKED if name in self.groups]
        if sorted(vocabularies) != sorted(ranked):
            raise ValueError(f"vocabularies for {ranked} expected, got {sorted(vocabularies)}")
        self.vocabularies = dict(vocabularies)
        self.destinations = destinations
        self.hierarchy = hierarchy
        self.calendar = calendar
        needs = {
            "Des-I": destinations,
            "Emp-I": hierarchy,
            "flight number": hierarchy,
            "holidays": calendar,
        }
        missing = [group for group, part in needs.items() if group in self.groups and part is None]
        if missing:
            raise ValueError(f"no fitted table for feature group(s) {missing}")
        self._calendar_columns: dict[str, tuple[int, int]] = {}
        for group in (group for group in self.groups if group in CALENDAR_GROUPS):
            start = sum(len(GROUPS[g]) for g in self._calendar_columns)
            self._calendar_columns[group] = (start, start + len(GROUPS[group]))
        self._calendar = lru_cache(maxsize=CALENDAR_DAYS)(self._calendar_day)
        # `_row`'s layout, decided once rather than group by group on every flight
        self._ranked = tuple(
            (_FIELD[name], self.vocabularies[name].codes) for name in RANKED if name in self.groups
        )
        self._month, self._hour, self._airline_rate, self._flight_rate = (
            group in self.groups for group in ("MES", "hour", "Emp-I", "flight number")
        )

    @classmethod
    def fit(
        cls,
        columns: Columns,
        labels: np.ndarray,
        groups: Sequence[str],
        holidays: np.ndarray | None = None,
    ) -> FeatureEncoder:
        labels = np.asarray(labels, dtype=np.float64)
        vocabularies = {
            name: Vocabulary.fit(getattr(columns, _FIELD[name]), labels)
            for name in RANKED
            if name in groups
        }
        destinations = hierarchy = calendar = None
        if "Des-I" in groups:
            assert columns.destination is not None
            overall = float(labels.mean())
            destinations = RateTable.fit(
                np.asarray(columns.destination, dtype=str),
                labels,
                np.full(len(labels), overall),
                float(_logit(np.array(overall))),
            )
        if "Emp-I" in groups or "flight number" in groups:
            hierarchy = Hierarchy.fit(columns, labels)
        if "holidays" in groups:
            if holidays is None:
                raise ValueError("the holidays group needs the holiday calendar")
            calendar = Calendar(np.sort(holidays.astype("datetime64[D]")))
        return cls(groups, vocabularies, destinations, hierarchy, calendar)

    def encode_training(
        self, columns: Columns, labels: np.ndarray, folds: np.ndarray
    ) -> np.ndarray:
        """The training matrix, its delay-rate columns computed out of fold.

        A flight number's rate fitted on the rows it encodes would contain their own labels;
        each fold's rows get the rates fitted on the other folds instead (`folds`: fold id per
        row), so the model learns how far a rate from other days can be trusted.
        """
        matrix = self.encode_columns(columns)
        rated = np.array(
            [i for i, name in enumerate(self.feature_names) if name in RATE_FEATURES], dtype=np.intp
        )
        if not rated.size:
            return matrix
        holidays = None if self.calendar is None else self.calendar.holidays
        for fold in np.unique(folds):
            inside = folds == fold
            outside = np.flatnonzero(~inside)
            encoder = FeatureEncoder.fit(
                take(columns, outside), labels[outside], self.groups, holidays
            )
            rows = np.flatnonzero(inside)
            matrix[np.ix_(rows, rated)] = encoder.encode_columns(take(columns, rows))[:, rated]
        return matrix

    def encode(self, flights: Sequence[Flight]) -> np.ndarray:
        return self.encode_columns(from_flights(flights))

    def encode_columns(self, columns: Columns, into: np.ndarray | None = None) -> np.ndarray:
        """The float32 matrix, one row a flight; written into `into` when given (a float32 array
        of that shape: app.inference.model's bound input buffer), else into a new array."""
        rows = len(columns)
        matrix = np.empty((rows, len(self.feature_names)), np.float32) if into is None else into
        # Python values to float32 by numpy's assignment, as np.array(values, np.float32) does
        if rows == 1:
            matrix[0] = self._row(columns)
            return matrix
        if 0 < rows < ROWS_BELOW:
            matrix[...] = self._rows(columns)
            return matrix
        position = 0
        shared = _Shared(columns, self.hierarchy)
        for group in self.groups:
            block = self._group(group, columns, shared)
            width = len(GROUPS[group])
            if width == 1:  # a column: no reshape (about 0.3 us a group, most of one flight's)
                matrix[:, position] = block
            else:
                matrix[:, position : position + width] = block.reshape(rows, width)
            position += width
        return matrix

    def _group(self, group: str, columns: Columns, shared: _Shared) -> np.ndarray:
        if group in self.vocabularies:
            return self.vocabularies[group].encode(getattr(columns, _FIELD[group]))
        if group == "MES":
            return np.asarray(columns.month)
        departure = _departure(columns)
        if group == "hour":
            return np.asarray((departure - shared.days).astype(np.int64) / 60)
        if group in CALENDAR_GROUPS:
            return self._calendar_group(group, departure, shared.days)
        if group == "Des-I":
            assert self.destinations is not None
            assert columns.destination is not None
            return self.destinations.lookup(columns.destination)
        airline, flight = shared.hierarchy
        return airline if group == "Emp-I" else flight

    def _calendar_group(self, group: str, departure: np.ndarray, days: np.ndarray) -> np.ndarray:
        """A group of CALENDAR_GROUPS, column-wise; `days`: the departures' dates."""
        if group == "weekday":
            # 1970-01-01 was a Thursday: Monday = 0, as datetime.weekday()
            return np.asarray((days.astype(np.int64) + 3) % 7)
        if group == "day":
            return np.asarray((days - departure.astype("datetime64[M]")).astype(np.int64) + 1)
        if group == "day_of_year":
            return np.asarray((days - departure.astype("datetime64[Y]")).astype(np.int64) + 1)
        if group == "high season":
            return high_season(departure)
        assert self.calendar is not None
        return self.calendar.encode(departure)

    def _calendar_day(self, day: int) -> tuple[int, ...]:
        """The calendar groups' values of the date `day` (days since 1970-01-01), by the
        column-wise code: the by-rows encoding remembers them per date (`_calendar`)."""
        departure = np.array([day], dtype="datetime64[D]")
        return tuple(
            value
            for group in self._calendar_columns
            for value in self._calendar_group(group, departure, departure).reshape(-1).tolist()
        )

    def _row(self, columns: Columns) -> list[Any]:
        """One flight, the usual request: `_rows`' values (the same lookups and arithmetic)
        without its lists of one value, in one pass, since the groups' values follow GROUPS'
        order: codes, month, hour, the calendar groups (consecutive: one remembered tuple), the
        rates. The served full model's flight: 1.3 us, 1.9 us written into a float32 buffer,
        2.2 us into a new array (3.8 us group by group, development runs); tests/test_features.py
        checks every flight of the real data against the column-wise encoding."""
        row: list[Any] = []
        for field, codes in self._ranked:  # a loop: a comprehension is a call (Python 3.11)
            row.append(codes.get(str(_items(getattr(columns, field))[0]), codes[OTHER]))
        if self._month:
            row.append(_items(columns.month)[0])
        if not self.schedule:
            return row
        minute: int = _minutes(columns).item(0)
        if self._hour:
            row.append(minute % 1440 / 60)
        if self._calendar_columns:
            row.extend(self._calendar(minute // 1440))
        if self.destinations is not None:
            row.append(self._destination_logits(columns)[0])
        if self.hierarchy is not None:
            airlines, destinations, numbers = _schedule_columns(columns)
            airline_logit, flight_logit = self.hierarchy.row_logits(
                airlines[0], destinations[0], numbers[0]
            )
            if self._airline_rate:
                row.append(airline_logit)
            if self._flight_rate:
                row.append(flight_logit)
        return row

    def _destination_logits(self, columns: Columns) -> list[float]:
        """Des-I's logit per flight, by rows (`_row`, `_rows`)."""
        assert self.destinations is not None
        assert columns.destination is not None
        destinations = self.destinations
        return _looked_up(columns.destination, destinations.logits, destinations.default)

    def _rows(self, columns: Columns) -> list[tuple[Any, ...]]:
        """What the column-wise encoding gives, computed value by value (ROWS_BELOW): the same
        dict lookups, the same integer arithmetic on the departure's minutes since 1970, the
        calendar groups from the column-wise code once per date; converted to float32 at the
        end (`encode_columns`), as the column-wise assignments do."""
        features: list[Sequence[Any]] = []
        hierarchy: tuple[list[float], list[float]] | None = None
        minutes: list[int] = []
        if self.schedule:
            minutes = _minutes(columns).tolist()
        calendar: list[tuple[int, ...]] = []  # one tuple per calendar column
        if self._calendar_columns:
            days = (self._calendar(minute // 1440) for minute in minutes)
            calendar = list(zip(*days, strict=True))
        for group in self.groups:
            if group in self.vocabularies:
                features.append(self.vocabularies[group].encoded(getattr(columns, _FIELD[group])))
            elif group == "MES":
                features.append(_items(columns.month))
            elif group == "hour":
                features.append([minute % 1440 / 60 for minute in minutes])
            elif group in CALENDAR_GROUPS:
                start, stop = self._calendar_columns[group]
                features.extend(calendar[start:stop])
            elif group == "Des-I":
                features.append(self._destination_logits(columns))
            else:  # "Emp-I", "flight number": one pass of the hierarchy for both
                if hierarchy is None:
                    assert self.hierarchy is not None
                    hierarchy = self.hierarchy.logits(columns)
                features.append(hierarchy[0] if group == "Emp-I" else hierarchy[1])
        return list(zip(*features, strict=True))

    def known_destinations(self) -> list[str]:
        """Destinations with a delay rate of their own (or, without that group, in a route)."""
        if self.destinations is not None:
            return sorted(self.destinations.logits)
        if self.hierarchy is not None:
            return sorted({route.split(">")[1] for route in self.hierarchy.route.logits})
        return []

    def known_airlines(self) -> list[str]:
        return [] if self.hierarchy is None else sorted(self.hierarchy.airline.logits)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "groups": list(self.groups),
            "features": list(self.feature_names),
            "vocabularies": {name: list(v.values) for name, v in self.vocabularies.items()},
        }
        if self.destinations is not None:
            data["destinations"] = self.destinations.to_json()
        if self.hierarchy is not None:
            data["hierarchy"] = self.hierarchy.to_json()
        if self.calendar is not None:
            data["holidays"] = [str(day) for day in self.calendar.holidays]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureEncoder:
        encoder = cls(
            data["groups"],
            {name: Vocabulary(tuple(values)) for name, values in data["vocabularies"].items()},
            RateTable.from_json(data["destinations"]) if "destinations" in data else None,
            Hierarchy.from_json(data["hierarchy"]) if "hierarchy" in data else None,
            Calendar(np.array(data["holidays"], dtype="datetime64[D]"))
            if "holidays" in data
            else None,
        )
        if list(encoder.feature_names) != list(data["features"]):
            raise ValueError(f"features {data['features']} do not match this code's")
        return encoder


_FIELD = {"OPERA": "operator", "TIPOVUELO": "flight_type"}


class _Shared:
    """What several groups of one `encode_columns` call need, computed once for all of them."""

    def __init__(self, columns: Columns, hierarchy: Hierarchy | None) -> None:
        self._columns = columns
        self._hierarchy = hierarchy

    @cached_property
    def days(self) -> np.ndarray:
        assert self._columns.departure is not None
        return self._columns.departure.astype("datetime64[D]")

    @cached_property
    def hierarchy(self) -> tuple[np.ndarray, np.ndarray]:
        assert self._hierarchy is not None
        return self._hierarchy.encode(self._columns)


def _departure(columns: Columns) -> np.ndarray:
    if columns.departure is None:
        raise ValueError("the full-schedule model needs flights with their schedule")
    return columns.departure


_INT64 = np.dtype(np.int64)


def _minutes(columns: Columns) -> np.ndarray:
    """The departures as minutes since 1970 (int64), a view when they are datetime64[m] already
    (dtype objects, not strings: numpy parses a string on every call, 0.1 us)."""
    return _departure(columns).astype(DEPARTURE_DTYPE, copy=False).view(_INT64)


def high_season(departure: np.ndarray) -> np.ndarray:
    """1 inside the challenge's high-season periods, by scheduled month and day."""
    days = departure.astype("datetime64[D]")
    month = days.astype("datetime64[M]")
    month_day = (month.astype(np.int64) % 12 + 1) * 100 + (days - month).astype(np.int64) + 1
    inside = np.zeros(len(days), dtype=bool)
    for start, end in HIGH_SEASON:
        inside |= (month_day >= start) & (month_day <= end)
    return inside.astype(np.int64)


def _mapped(
    values: Sequence[str] | np.ndarray, table: Mapping[str, Any], missing: float
) -> np.ndarray:
    return np.array(_looked_up(values, table, missing), dtype=np.float64)


def _looked_up(
    values: Sequence[Any] | np.ndarray, table: Mapping[str, Any], missing: Any
) -> list[Any]:
    """table[value] per value (missing where absent): one dict lookup a value, cheaper than
    np.unique's sort of the strings at every size (and ~50x for one flight)."""
    get = table.get
    return [get(str(value), missing) for value in _items(values)]


def _items(values: Sequence[Any] | np.ndarray) -> Sequence[Any]:
    """A column as Python values."""
    return values.tolist() if isinstance(values, np.ndarray) else values


def _logit(rates: np.ndarray) -> np.ndarray:
    clipped = np.clip(rates, 1e-4, 1 - 1e-4)
    return np.asarray(np.log(clipped / (1 - clipped)))


def _expit(logits: np.ndarray) -> np.ndarray:
    return np.asarray(1 / (1 + np.exp(-logits)))

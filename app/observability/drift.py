"""Input drift: the training distribution of every input, kept in the model card, against the
same buckets counted over the flights a worker scores, compared by the Population Stability
Index (PSI).

One module for both sides, export (`profile`) and serving (`Window`, `psi`), so that a flight
falls in the same bucket in both. Buckets: the frequent values of each category plus OTHER,
the month, the scheduled hour and weekday, and deciles of the training predicted probability.

Serving keeps the hot path to incrementing counts in a list (`Window.observe`); PSI is computed
from the counts summed over every worker, when /metrics is scraped (app.observability.metrics).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.inference.flights import Columns, Flight

OTHER = "~other"
"""The bucket of a category value too rare in training to have its own, or never seen."""
MAX_CATEGORIES = 40
MIN_SHARE = 0.002
"""A category value needs this share of the training flights to get its own bucket."""
PROBA_BINS = 10
EPSILON = 1e-4
"""Floor on a bucket's share in PSI: an empty bucket would make it infinite."""
SHARES_TOLERANCE = 1e-3
"""How far a histogram's shares (rounded to 6 digits at export) may add up from 1."""
PSI_WARN, PSI_ALERT = 0.1, 0.2
"""The usual reading of PSI: under 0.1 stable, 0.1-0.2 moderate shift, over 0.2 a real one."""

MINIMAL_INPUTS = ("OPERA", "TIPOVUELO", "MES")
SEASONAL_INPUTS = ("MES",)
"""Inputs whose gauge is high for any live traffic: it is always the flights of about one month,
against the training year's twelve (each month of the data alone: reports/drift-replay.md). The
drift alert leaves them out (deploy/k8s/monitoring/prometheusrule.yaml); the gauge stays."""
SCHEDULE_INPUTS = ("Des-I", "Emp-I", "Vlo-I", "hour", "weekday")
PROBA = "proba"
_ORDINALS = {"MES": range(1, 13), "hour": range(24), "weekday": range(7)}
_VECTOR_FROM = 32
"""Flights from which Counter and numpy count a batch faster than a loop (a few µs to set up)."""
_THURSDAY = 3
"""weekday() of 1970-01-01, numpy's day 0 (Monday = 0)"""

_VALUE: dict[str, Callable[[Flight], Any]] = {
    "OPERA": lambda flight: flight.operator,
    "TIPOVUELO": lambda flight: flight.flight_type,
    "MES": lambda flight: flight.month,
    "Des-I": lambda flight: flight.schedule.destination,  # type: ignore[union-attr]
    "Emp-I": lambda flight: flight.schedule.airline,  # type: ignore[union-attr]
    "Vlo-I": lambda flight: flight.schedule.number,  # type: ignore[union-attr]
    "hour": lambda flight: flight.schedule.departure.hour,  # type: ignore[union-attr]
    "weekday": lambda flight: flight.schedule.departure.weekday(),  # type: ignore[union-attr]
}


@dataclass(frozen=True)
class Histogram:
    """One input's training distribution: bucket labels and the share of flights in each.
    A category's last bucket is OTHER; the probability's buckets are cut at `edges`."""

    buckets: tuple[str, ...]
    shares: tuple[float, ...]
    edges: tuple[float, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"buckets": list(self.buckets), "shares": list(self.shares)}
        if self.edges:
            data["edges"] = list(self.edges)
        return data

    @classmethod
    def from_json(cls, data: Any, name: str) -> Histogram:
        """Input `name`'s histogram from a card, refused (ValueError saying why) unless a Window
        can count every flight into it: a category's buckets end in OTHER, an ordinal input's are
        its domain's values, the probability's are cut at ascending edges."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{name} is {_kind(data)}, not an object of buckets and shares")
        buckets, shares, edges = data.get("buckets"), data.get("shares"), data.get("edges", [])
        if not isinstance(buckets, list) or not buckets or not all(type(b) is str for b in buckets):
            raise ValueError(f"{name}'s buckets are not a non-empty list of strings")
        if len(set(buckets)) != len(buckets):
            raise ValueError(f"{name}'s buckets are not distinct")
        if not isinstance(shares, list) or len(shares) != len(buckets):
            raise ValueError(f"{name} has not one share per bucket ({len(buckets)})")
        if not all(_number(share) and 0 <= share <= 1 for share in shares):
            raise ValueError(f"{name}'s shares are not all numbers from 0 to 1")
        if abs(sum(shares) - 1) > SHARES_TOLERANCE:
            raise ValueError(f"{name}'s shares add up to {sum(shares):g}, not 1")
        if not isinstance(edges, list) or not all(_number(edge) for edge in edges):
            raise ValueError(f"{name}'s edges are not a list of numbers")
        domain = _ORDINALS.get(name)
        if name == PROBA:
            if not edges or len(edges) != len(buckets) - 1 or edges != sorted(set(edges)):
                raise ValueError(
                    f"{name} has not {len(buckets) - 1} ascending edges (one fewer than buckets)"
                )
        elif edges:
            raise ValueError(f"{name} is no binned input: it has no edges")
        elif domain is not None:
            if buckets != [str(value) for value in domain]:
                raise ValueError(
                    f"{name}'s {len(buckets)} buckets are not its {len(domain)} values "
                    f"'{domain.start}' to '{domain.stop - 1}'"
                )
        elif buckets[-1] != OTHER:
            raise ValueError(f"{name}'s last bucket is not {OTHER!r}")
        return cls(tuple(buckets), tuple(float(s) for s in shares), tuple(float(e) for e in edges))


@dataclass(frozen=True)
class Profile:
    """What the card's `profile` holds: every input's histogram and the probability's."""

    flights: int
    alert_rate: float
    """share of the training flights the model labels delayed"""
    histograms: dict[str, Histogram]

    def to_json(self) -> dict[str, Any]:
        return {
            "flights": self.flights,
            "alert_rate": self.alert_rate,
            "features": {name: h.to_json() for name, h in self.histograms.items()},
        }

    @classmethod
    def from_json(cls, data: Any, schedule: bool) -> Profile:
        """The card's profile of a model whose contract has the schedule or not, refused
        (ValueError saying why) unless it holds exactly that contract's inputs (`inputs`), each
        as `Histogram.from_json` requires: a profile that does not fit the flights the model
        takes would fail in the worker counting them (app.inference.model.fit_problems refuses
        the card with it)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"it is {_kind(data)}, not an object")
        flights: Any = data.get("flights")
        alert_rate: Any = data.get("alert_rate")
        features: Any = data.get("features")
        if type(flights) is not int or flights < 1:
            raise ValueError(f"its flights {flights!r} is not a positive integer")
        if not _number(alert_rate) or not 0 <= alert_rate <= 1:
            raise ValueError(f"its alert_rate {alert_rate!r} is not a number from 0 to 1")
        if not isinstance(features, Mapping):
            raise ValueError(f"its features are {_kind(features)}, not an object of histograms")
        expected = inputs(schedule)
        missing = [name for name in expected if name not in features]
        extra = sorted(name for name in features if name not in expected)
        if missing or extra:
            raise ValueError(
                f"its features lack {missing} and add {extra}: a profile of this contract has "
                f"{list(expected)}"
            )
        histograms = {name: Histogram.from_json(features[name], name) for name in expected}
        return cls(flights, float(alert_rate), histograms)


def inputs(schedule: bool) -> tuple[str, ...]:
    """The histograms a profile of a model with or without the schedule holds, in order."""
    return MINIMAL_INPUTS + (SCHEDULE_INPUTS if schedule else ()) + (PROBA,)


def _number(value: Any) -> bool:
    """A finite JSON number (a bool is none)."""
    return type(value) in (int, float) and math.isfinite(value)


def _kind(value: Any) -> str:
    return "missing" if value is None else f"a {type(value).__name__}"


def _rounded(shares: Sequence[float]) -> tuple[float, ...]:
    return tuple(round(float(share), 6) for share in shares)


def _category(values: Sequence[str]) -> Histogram:
    counts = Counter(values)
    total = len(values)
    frequent = [
        value
        for value, count in counts.most_common(MAX_CATEGORIES)
        if count >= MIN_SHARE * total and value != OTHER
    ]
    rest = total - sum(counts[value] for value in frequent)
    shares = [counts[value] / total for value in frequent] + [rest / total]
    return Histogram((*frequent, OTHER), _rounded(shares))


def _ordinal(values: Sequence[int], domain: range) -> Histogram:
    counts = Counter(values)
    return Histogram(
        tuple(str(value) for value in domain),
        _rounded([counts[value] / len(values) for value in domain]),
    )


def _binned(probabilities: np.ndarray) -> Histogram:
    inner = np.quantile(probabilities, np.linspace(0, 1, PROBA_BINS + 1)[1:-1])
    edges = tuple(sorted({round(float(edge), 6) for edge in inner}))
    counts = np.bincount(
        np.searchsorted(edges, probabilities, side="right"), minlength=len(edges) + 1
    )
    labels = ["<" + f"{edges[0]:g}"] + [f">={edge:g}" for edge in edges]
    return Histogram(tuple(labels), _rounded((counts / len(probabilities)).tolist()), edges)


def profile(flights: Sequence[Flight], probabilities: np.ndarray, threshold: float) -> Profile:
    """The training distribution the card carries (export.card calls this)."""
    if not flights or len(flights) != len(probabilities):
        raise ValueError("one probability per training flight")
    histograms = {}
    for name in inputs(flights[0].schedule is not None)[:-1]:  # PROBA last, below
        values = [_VALUE[name](flight) for flight in flights]
        domain = _ORDINALS.get(name)
        histograms[name] = _category(values) if domain is None else _ordinal(values, domain)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    histograms[PROBA] = _binned(probabilities)
    alert_rate = round(float(np.mean(probabilities >= threshold)), 6)
    return Profile(len(flights), alert_rate, histograms)


def psi(expected: Sequence[float], counts: Sequence[float]) -> float:
    """Population Stability Index of observed bucket counts against expected shares."""
    total = float(sum(counts))
    if total <= 0:
        raise ValueError("no observations")
    value = 0.0
    for share, count in zip(expected, counts, strict=True):
        e = max(share, EPSILON)
        a = max(count / total, EPSILON)
        value += (a - e) * math.log(a / e)
    return value


class Window:
    """Bucket counts of about the last `size` flights one worker scored with one model.

    The counts of all inputs live in one flat list (a bucket = an offset in it); every
    `size / SLOTS` flights the current counts close into a slot, and the oldest slots drop out
    as long as the others still hold `size` flights, so the window covers between `size` and
    `size + size / SLOTS` flights, or a batch larger than that alone (it is counted whole, in one
    slot). Ten slots were kept whatever they held: a slot closed by a batch holds all its
    flights, so 10,000-flight batches made a 10,000-flight window ten times as long.

    A lone minimal flight, the usual request, is only tallied by its inputs and probability
    (one dict increment, a third of counting its buckets), and a lone scheduled flight's inputs
    and probability are kept in a list, counted together as a batch (Counter and numpy: about
    half of counting them flight by flight); both go into the counts before a slot closes and
    before anyone reads them (`totals`), so every count is the same.
    """

    SLOTS = 10

    def __init__(self, profile: Profile, size: int) -> None:
        self.profile = profile
        self.features = tuple(profile.histograms)
        self.offsets: dict[str, int] = {}
        offset = 0
        for name, histogram in profile.histograms.items():
            self.offsets[name] = offset
            offset += len(histogram.buckets)
        self._width = offset
        self._slot_size = max(1, size // self.SLOTS)
        self._size = size
        self._closed: deque[tuple[np.ndarray, int, int]] = deque()
        self._closed_flights = 0
        self._counts = [0] * offset
        self._lone: dict[tuple[str, str, int, float], int] = {}
        """lone minimal flights not yet in `_counts`: (operator, type, month, probability) →
        flights"""
        self._lone_scheduled: list[tuple[Any, ...]] = []
        """lone scheduled flights not yet in `_counts`: (operator, type, month, departure,
        destination, airline, number, probability)"""
        self._flights = 0
        self._delayed = 0
        self._codes = {name: self._lookup(name) for name in self.features if name != PROBA}
        self._other = {
            name: self.offsets[name] + len(self.profile.histograms[name].buckets) - 1
            for name in self.features
        }
        self._edge_list = list(profile.histograms[PROBA].edges)
        self._edges = np.array(self._edge_list, dtype=np.float64)
        self._proba = self.offsets[PROBA]
        self._schedule = "hour" in self.offsets
        self.observed = 0
        """flights ever observed: tells the flush whether anything changed"""

    def _lookup(self, name: str) -> dict[Any, int]:
        buckets = self.profile.histograms[name].buckets
        offset = self.offsets[name]
        if name in _ORDINALS:
            return {value: offset + i for i, value in enumerate(_ORDINALS[name])}
        return {value: offset + i for i, value in enumerate(buckets)}

    def observe(
        self, columns: Columns, probabilities: Sequence[float] | np.ndarray, delayed: int
    ) -> None:
        """The hot path: one dict increment for a lone minimal flight, one list increment per
        flight and input for a few, or for a batch one pass in C per input (Counter, numpy)
        and one increment per distinct value or bucket."""
        flights = len(columns)
        if flights == 1 and columns.departure is None:
            key = (
                columns.operator[0],
                columns.flight_type[0],
                columns.month[0],
                float(probabilities[0]),
            )
            self._lone[key] = self._lone.get(key, 0) + 1
        elif flights == 1 and self._schedule:
            # values only (strings, numbers, a numpy datetime): no request object kept alive
            self._lone_scheduled.append(
                (
                    columns.operator[0],
                    columns.flight_type[0],
                    columns.month[0],
                    columns.departure[0],  # type: ignore[index]
                    columns.destination[0],  # type: ignore[index]
                    columns.airline[0],  # type: ignore[index]
                    columns.number[0],  # type: ignore[index]
                    float(probabilities[0]),
                )
            )
        else:
            self._count(columns, probabilities)
        self._flights += flights
        self._delayed += delayed
        self.observed += flights
        if self._flights >= self._slot_size:
            self._count_lone()
            self._closed.append(
                (np.array(self._counts, dtype=np.int64), self._flights, self._delayed)
            )
            self._closed_flights += self._flights
            self._counts = [0] * self._width
            self._flights = self._delayed = 0
            closed = self._closed
            while self._closed_flights - closed[0][1] >= self._size:
                self._closed_flights -= closed.popleft()[1]

    def _count(self, columns: Columns, probabilities: Sequence[float] | np.ndarray) -> None:
        counts = self._counts
        codes, other = self._codes, self._other
        categories: list[tuple[str, Sequence[Any]]] = [
            ("OPERA", columns.operator),
            ("TIPOVUELO", columns.flight_type),
            ("MES", columns.month),
        ]
        schedule = self._schedule and columns.departure is not None
        if schedule:
            categories += [
                ("Des-I", columns.destination or ()),
                ("Emp-I", columns.airline or ()),
                ("Vlo-I", columns.number or ()),
            ]
        batch = len(columns) >= _VECTOR_FROM
        for name, column in categories:
            lookup, missing = codes[name], other[name]
            if batch:
                for value, count in Counter(column).items():
                    counts[lookup.get(value, missing)] += count
            else:
                for value in column:
                    counts[lookup.get(value, missing)] += 1
        if batch:
            self._add(self._proba, np.searchsorted(self._edges, probabilities, side="right"))
        else:
            edges, proba = self._edge_list, self._proba
            if isinstance(probabilities, np.ndarray):
                probabilities = probabilities.tolist()
            for probability in probabilities:
                counts[proba + bisect_right(edges, probability)] += 1
        if schedule:
            self._observe_departures(columns)

    def _count_lone(self) -> None:
        """The lone flights tallied since the last call, into the counts."""
        if self._lone_scheduled:
            rows, self._lone_scheduled = self._lone_scheduled, []
            (operators, kinds, months, departures, destinations, airlines, numbers, chances) = zip(
                *rows, strict=True
            )
            departure = np.array(departures)  # datetime64[m], as they came
            self._count(
                Columns(operators, kinds, months, departure, destinations, airlines, numbers),
                chances,
            )
        if not self._lone:
            return
        counts, codes, other = self._counts, self._codes, self._other
        edges, proba = self._edge_list, self._proba
        for (operator, kind, month, probability), flights in self._lone.items():
            counts[codes["OPERA"].get(operator, other["OPERA"])] += flights
            counts[codes["TIPOVUELO"].get(kind, other["TIPOVUELO"])] += flights
            counts[codes["MES"].get(month, other["MES"])] += flights
            counts[proba + bisect_right(edges, probability)] += flights
        self._lone = {}

    def _observe_departures(self, columns: Columns) -> None:
        counts = self._counts
        assert columns.departure is not None
        hour, weekday = self.offsets["hour"], self.offsets["weekday"]
        if len(columns) < _VECTOR_FROM:
            for departure in columns.departure.tolist():  # datetime objects
                counts[hour + departure.hour] += 1
                counts[weekday + departure.weekday()] += 1
            return
        minutes = columns.departure.astype("datetime64[m]").astype(np.int64)
        self._add(hour, minutes // 60 % 24)
        self._add(weekday, (minutes // 1440 + _THURSDAY) % 7)  # 1970-01-01, day 0, a Thursday

    def _add(self, offset: int, buckets: np.ndarray) -> None:
        """Counts a batch's bucket numbers (one per flight) into the buckets from `offset`."""
        counts = self._counts
        for bucket, count in enumerate(np.bincount(buckets).tolist()):
            counts[offset + bucket] += count

    def totals(self) -> tuple[np.ndarray, int, int]:
        """The window's counts (flat, as `offsets` lays them out), flights and delayed."""
        self._count_lone()
        counts = np.array(self._counts, dtype=np.int64)
        flights, delayed = self._flights, self._delayed
        for closed, closed_flights, closed_delayed in self._closed:
            counts += closed
            flights += closed_flights
            delayed += closed_delayed
        return counts, flights, delayed

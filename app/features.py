"""Flights become the float32 matrix the ONNX models take.

Training and serving both call this module, so the encoding cannot drift between them.
A category becomes an integer code ranked by its delay rate in the training data: a tree then
splits on the code as it would on the category (Fisher's ordering for a binary target), without
HistGradientBoosting's native categorical splits, which skl2onnx 1.20 converts wrongly.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.flights import Flight

OTHER = "~other"
"""The bucket for values too rare in training, or never seen: ranked like any category."""

MINIMAL_FEATURES = ("OPERA", "TIPOVUELO", "MES")
SCHEDULE_FEATURES = ("Des-I", "Emp-I", "Emp-I+Vlo-I", "hour", "weekday", "day", "day_of_year")
FULL_FEATURES = MINIMAL_FEATURES + SCHEDULE_FEATURES

MIN_COUNT = {"OPERA": 1, "TIPOVUELO": 1, "Des-I": 20, "Emp-I": 20, "Emp-I+Vlo-I": 40}
"""Training rows a category needs to get its own code; fewer, and it joins OTHER."""


@dataclass(frozen=True)
class Vocabulary:
    """Category values in rank order (code = position); OTHER is always one of them."""

    values: tuple[str, ...]

    def __post_init__(self) -> None:
        if OTHER not in self.values or len(set(self.values)) != len(self.values):
            raise ValueError("a vocabulary lists each value once, OTHER included")

    @property
    def codes(self) -> dict[str, int]:
        return {value: code for code, value in enumerate(self.values)}

    @classmethod
    def fit(cls, values: Sequence[str], labels: Sequence[int], min_count: int) -> Vocabulary:
        counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for value, label in zip(values, labels, strict=True):
            counts[value][0] += 1
            counts[value][1] += label
        rare = [0, 0]
        rates: dict[str, float] = {}
        for value, (count, delayed) in counts.items():
            if count >= min_count:
                rates[value] = delayed / count
            else:
                rare[0] += count
                rare[1] += delayed
        overall = sum(labels) / len(labels) if labels else 0.0
        rates[OTHER] = rare[1] / rare[0] if rare[0] else overall
        return cls(tuple(sorted(rates, key=lambda value: (rates[value], value))))


class FeatureEncoder:
    """Encodes validated flights for one model: minimal or full schedule."""

    def __init__(self, vocabularies: Mapping[str, Vocabulary], schedule: bool) -> None:
        self.schedule = schedule
        self.feature_names = FULL_FEATURES if schedule else MINIMAL_FEATURES
        categories = [name for name in self.feature_names if name in MIN_COUNT]
        if sorted(vocabularies) != sorted(categories):
            raise ValueError(f"vocabularies for {categories} expected, got {sorted(vocabularies)}")
        self.vocabularies = dict(vocabularies)
        self._row = self._full_row if schedule else self._minimal_row
        self._operator = _lookup(vocabularies["OPERA"])
        self._flight_type = _lookup(vocabularies["TIPOVUELO"])
        if schedule:
            self._destination = _lookup(vocabularies["Des-I"])
            self._airline = _lookup(vocabularies["Emp-I"])
            self._flight_number = _lookup(vocabularies["Emp-I+Vlo-I"])

    def encode(self, flights: Sequence[Flight]) -> np.ndarray:
        row = self._row
        return np.array([row(flight) for flight in flights], dtype=np.float32)

    def _minimal_row(self, flight: Flight) -> list[float]:
        return [
            self._operator(flight.operator),
            self._flight_type(flight.flight_type),
            flight.month,
        ]

    def _full_row(self, flight: Flight) -> list[float]:
        schedule = flight.schedule
        if schedule is None:
            raise ValueError("the full-schedule model needs a flight with its schedule")
        departure = schedule.departure
        return [
            self._operator(flight.operator),
            self._flight_type(flight.flight_type),
            flight.month,
            self._destination(schedule.destination),
            self._airline(schedule.airline),
            self._flight_number(schedule.airline + schedule.number),
            departure.hour + departure.minute / 60,
            departure.weekday(),
            departure.day,
            departure.timetuple().tm_yday,
        ]

    @classmethod
    def fit(
        cls, flights: Sequence[Flight], labels: Sequence[int], schedule: bool
    ) -> FeatureEncoder:
        names = FULL_FEATURES if schedule else MINIMAL_FEATURES
        columns = {
            name: [categories(flight)[name] for flight in flights]
            for name in names
            if name in MIN_COUNT
        }
        vocabularies = {
            name: Vocabulary.fit(values, labels, MIN_COUNT[name])
            for name, values in columns.items()
        }
        return cls(vocabularies, schedule)

    def to_json(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "features": list(self.feature_names),
            "vocabularies": {name: list(v.values) for name, v in self.vocabularies.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureEncoder:
        encoder = cls(
            {name: Vocabulary(tuple(values)) for name, values in data["vocabularies"].items()},
            bool(data["schedule"]),
        )
        if list(encoder.feature_names) != list(data["features"]):
            raise ValueError(f"features {data['features']} do not match this code's")
        return encoder


def categories(flight: Flight) -> dict[str, str]:
    """The categorical inputs of a flight, by feature name."""
    values = {"OPERA": flight.operator, "TIPOVUELO": flight.flight_type}
    if flight.schedule is not None:
        values["Des-I"] = flight.schedule.destination
        values["Emp-I"] = flight.schedule.airline
        values["Emp-I+Vlo-I"] = flight.schedule.airline + flight.schedule.number
    return values


def _lookup(vocabulary: Vocabulary) -> Callable[[str], int]:
    codes = vocabulary.codes
    other = codes[OTHER]

    def code(value: str) -> int:
        return codes.get(value, other)

    return code

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml

from app.inference.flights import Flight, Schedule
from app.inference.model import MODEL_NAMES, OnnxModel
from app.observability import drift
from tests.conftest import columns_of

PROMETHEUS_RULE = Path(__file__).parents[1] / "deploy/k8s/monitoring/prometheusrule.yaml"
OPERATORS = ["Grupo LATAM", "Sky Airline", "Copa Air", "Avianca", "Rare Air"]


def flights(count: int, seed: int = 0, schedule: bool = False, month: int = 0) -> list[Flight]:
    """Airline shares 40/30/20/9.9/0.1 %, months uniform (or all `month`)."""
    rng = random.Random(seed)
    made = []
    for _ in range(count):
        operator = rng.choices(OPERATORS, weights=[400, 300, 200, 99, 1])[0]
        chosen = month or rng.randint(1, 12)
        plan = None
        if schedule:
            departure = datetime(2017, chosen, rng.randint(1, 28), rng.randrange(24), 0)
            plan = Schedule(departure, rng.choice(["SCFA", "SCIE"]), "LAN", str(rng.randint(1, 3)))
        made.append(Flight(operator, rng.choice("IN"), chosen, plan))
    return made


def probabilities(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).beta(2, 5, count).astype(np.float32)


def test_profile_holds_every_inputs_shares_with_an_other_bucket() -> None:
    training = flights(5000, schedule=True)
    profile = drift.profile(training, probabilities(5000), threshold=0.3)
    assert list(profile.histograms) == [*drift.MINIMAL_INPUTS, *drift.SCHEDULE_INPUTS, "proba"]
    for histogram in profile.histograms.values():
        assert math.isclose(sum(histogram.shares), 1, abs_tol=1e-5)
    operators = profile.histograms["OPERA"]
    assert operators.buckets[-1] == drift.OTHER
    assert "Rare Air" not in operators.buckets  # under MIN_SHARE: counted in OTHER
    counts = Counter(flight.operator for flight in training)
    assert operators.shares[-1] == pytest.approx(counts["Rare Air"] / 5000, abs=1e-6)
    assert operators.shares[operators.buckets.index("Sky Airline")] == pytest.approx(
        counts["Sky Airline"] / 5000, abs=1e-6
    )
    assert profile.histograms["MES"].buckets == tuple(str(m) for m in range(1, 13))
    assert len(profile.histograms["hour"].shares) == 24
    assert len(profile.histograms["weekday"].shares) == 7
    proba = profile.histograms["proba"]
    assert len(proba.edges) == drift.PROBA_BINS - 1
    assert all(abs(share - 0.1) < 0.01 for share in proba.shares)  # deciles
    assert profile.alert_rate == pytest.approx(float(np.mean(probabilities(5000) >= 0.3)), abs=1e-6)
    as_json = orjson.loads(orjson.dumps(profile.to_json()))
    assert drift.Profile.from_json(as_json, schedule=True) == profile


def histogram(name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A profile's histogram of `name`, to break."""
    return lambda profile: profile["features"][name]


@pytest.mark.parametrize(
    ("breakage", "problem"),
    [
        (lambda p: p.update(features=[]), "its features are a list, not an object of histograms"),
        (lambda p: p["features"].pop("hour"), "its features lack ['hour'] and add []"),
        (lambda p: p["features"].update(extra=p["features"]["OPERA"]), "add ['extra']"),
        (lambda p: p.update(flights=True), "its flights True is not a positive integer"),
        (lambda p: p.update(flights="68206"), "its flights '68206' is not a positive integer"),
        (lambda p: p.update(alert_rate=None), "its alert_rate None is not a number from 0 to 1"),
        (
            lambda p: histogram("MES")(p).update(buckets=["1", "2"], shares=[0.5, 0.5]),
            "MES's 2 buckets are not its 12 values '1' to '12'",
        ),
        (
            lambda p: histogram("hour")(p)["buckets"].reverse(),
            "hour's 24 buckets are not its 24 values '0' to '23'",
        ),
        (lambda p: histogram("OPERA")(p)["buckets"].pop(), "OPERA has not one share per bucket"),
        (lambda p: histogram("OPERA")(p)["buckets"].reverse(), "OPERA's last bucket is not"),
        (lambda p: histogram("OPERA")(p).update(edges=[0.5]), "OPERA is no binned input"),
        (lambda p: histogram("OPERA")(p)["shares"].__setitem__(0, "0.1"), "OPERA's shares are"),
        (lambda p: histogram("OPERA")(p)["shares"].__setitem__(0, 2), "OPERA's shares are"),
        (lambda p: histogram("OPERA")(p)["shares"].__setitem__(0, 0), "OPERA's shares add up"),
        (lambda p: histogram("Des-I")(p).update(buckets=7), "Des-I's buckets are not a non-empty"),
        (lambda p: histogram("proba")(p)["edges"].reverse(), "proba has not 9 ascending edges"),
        (lambda p: histogram("proba")(p).pop("edges"), "proba has not 9 ascending edges"),
        (lambda p: p["features"].update(TIPOVUELO=[]), "TIPOVUELO is a list, not an object"),
    ],
)
def test_a_profile_that_does_not_fit_its_contract_is_refused(
    breakage: Callable[[dict[str, Any]], Any], problem: str
) -> None:
    """Such a profile used to load, then crashed every worker's start (a list for `features`:
    AttributeError, which nothing caught) or the flush at the first flight it could not count
    (a MES of 2 buckets: IndexError); now it is a ValueError saying what is wrong, which the
    loader makes a refused card (tests/test_model.py)."""
    profile = drift.profile(flights(3000, schedule=True), probabilities(3000), threshold=0.3)
    data = orjson.loads(orjson.dumps(profile.to_json()))
    assert drift.Profile.from_json(data, schedule=True) == profile
    breakage(data)
    with pytest.raises(ValueError, match=re.escape(problem)):
        drift.Profile.from_json(data, schedule=True)


def test_a_profile_holds_exactly_its_contracts_inputs() -> None:
    minimal = drift.profile(flights(300), probabilities(300), threshold=0.5).to_json()
    full = drift.profile(flights(300, schedule=True), probabilities(300), threshold=0.5).to_json()
    assert drift.Profile.from_json(minimal, schedule=False).histograms.keys() == {
        *drift.MINIMAL_INPUTS,
        "proba",
    }
    with pytest.raises(ValueError, match=r"lack \['Des-I', 'Emp-I', 'Vlo-I', 'hour', 'weekday'\]"):
        drift.Profile.from_json(minimal, schedule=True)
    with pytest.raises(ValueError, match=r"lack \[\] and add \['Des-I', 'Emp-I', 'Vlo-I'"):
        drift.Profile.from_json(full, schedule=False)


def test_minimal_flights_profile_only_the_minimal_inputs() -> None:
    profile = drift.profile(flights(300), probabilities(300), threshold=0.5)
    assert list(profile.histograms) == [*drift.MINIMAL_INPUTS, "proba"]


def test_psi_is_zero_on_the_expected_shares_and_matches_its_formula() -> None:
    assert drift.psi([0.5, 0.5], [10, 10]) == 0
    expected = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert drift.psi([0.5, 0.5], [8, 2]) == pytest.approx(expected)
    # an empty bucket is floored, not infinite
    assert math.isfinite(drift.psi([0.5, 0.5], [10, 0]))
    assert drift.psi([0.5, 0.5], [1, 0]) == drift.psi([0.5, 0.5], [10, 0])  # one is enough
    with pytest.raises(ValueError, match="no observations"):
        drift.psi([0.5, 0.5], [0, 0])


def split(window: drift.Window, counts: np.ndarray) -> dict[str, np.ndarray]:
    """A window's flat counts (totals(), laid out by its offsets), feature by feature."""
    return {
        name: counts[offset : offset + len(window.profile.histograms[name].buckets)]
        for name, offset in window.offsets.items()
    }


def window_psi(window: drift.Window) -> dict[str, float]:
    counts, _, _ = window.totals()
    return {
        name: drift.psi(window.profile.histograms[name].shares, part.tolist())
        for name, part in split(window, counts).items()
    }


@pytest.mark.parametrize("schedule", [False, True], ids=["minimal", "full"])
def test_window_counts_every_flight_in_its_profiles_buckets(schedule: bool) -> None:
    training = flights(4000, schedule=schedule)
    profile = drift.profile(training, probabilities(4000), threshold=0.3)
    window = drift.Window(profile, size=100_000)
    served = flights(600, seed=1, schedule=schedule)
    window.observe(
        columns_of(served[:1]), probabilities(1, seed=1).tolist(), 1
    )  # a list, as a table gives
    window.observe(columns_of(served[1:]), probabilities(599, seed=2), 7)
    counts, total, delayed = window.totals()
    assert (total, delayed) == (600, 8)
    parts = split(window, counts)
    for name, part in parts.items():
        assert sum(part) == 600, name
    operators = profile.histograms["OPERA"].buckets
    assert parts["OPERA"][-1] == sum(f.operator not in operators for f in served)
    assert list(parts["MES"]) == [sum(f.month == m for f in served) for m in range(1, 13)]
    if schedule:
        hours = [sum(f.schedule.departure.hour == h for f in served) for h in range(24)]  # type: ignore[union-attr]
        assert list(parts["hour"]) == hours
        weekdays = [sum(f.schedule.departure.weekday() == d for f in served) for d in range(7)]  # type: ignore[union-attr]
        assert list(parts["weekday"]) == weekdays


def test_window_slides_over_the_last_flights() -> None:
    training = flights(2000)
    profile = drift.profile(training, probabilities(2000), threshold=0.3)
    window = drift.Window(profile, size=1000)
    for start in range(0, 3000, 50):
        window.observe(columns_of(flights(50, seed=start, month=1)), probabilities(50), 0)
    for start in range(0, 1000, 50):
        window.observe(columns_of(flights(50, seed=start, month=7)), probabilities(50), 0)
    counts, total, _ = window.totals()
    assert 1000 <= total <= 1100
    assert list(split(window, counts)["MES"]) == [0] * 6 + [1000] + [0] * 5


def test_lone_flights_slide_out_of_the_window_as_batches_do() -> None:
    """Lone minimal flights are tallied apart and counted when their slot closes: the window
    keeps the same last flights as when each was counted at once."""
    profile = drift.profile(flights(2000), probabilities(2000), threshold=0.3)
    window = drift.Window(profile, size=100)
    for index, flight in enumerate([*flights(250, month=1), *flights(105, seed=1, month=7)]):
        window.observe(columns_of([flight]), [0.5], index % 2)
    counts, total, delayed = window.totals()
    assert (total, delayed) == (105, 52)  # ten closed slots of 10 and 5 flights since
    assert list(split(window, counts)["MES"]) == [0] * 6 + [105] + [0] * 5
    assert sum(split(window, counts)["proba"]) == 105


def test_lone_scheduled_flights_count_as_when_counted_at_once() -> None:
    """Lone scheduled flights are kept apart and counted together when their slot closes or
    the counts are read. Against a window of twice the size given each flight twice in one
    batch (counted at once; its slots close after the same flights): twice the counts at every
    read, between slot closures and across them."""
    training = flights(3000, schedule=True)
    profile = drift.profile(training, probabilities(3000), threshold=0.3)
    served = flights(357, seed=8, schedule=True)
    chances = probabilities(357, seed=9)
    kept, doubled = drift.Window(profile, size=100), drift.Window(profile, size=200)
    for index, flight in enumerate(served):
        delayed = int(index % 3 == 0)
        kept.observe(columns_of([flight]), chances[index : index + 1], delayed)
        doubled.observe(columns_of([flight, flight]), chances[[index, index]], 2 * delayed)
        if index in (0, 5, 99, 150, 356):
            counts, flights_seen, delayed_seen = kept.totals()
            twice, twice_flights, twice_delayed = doubled.totals()
            assert (2 * counts).tolist() == twice.tolist(), index
            assert (2 * flights_seen, 2 * delayed_seen) == (twice_flights, twice_delayed)
    assert flights_seen == 107  # ten closed slots of 10 and 7 flights since
    assert sum(split(kept, counts)["hour"]) == 107


def test_a_stream_of_one_month_drifts_and_one_like_training_does_not() -> None:
    training = flights(20_000, seed=3)
    profile = drift.profile(training, probabilities(20_000), threshold=0.3)
    alike, july = drift.Window(profile, 5000), drift.Window(profile, 5000)
    for seed in range(50):
        alike.observe(columns_of(flights(100, seed=100 + seed)), probabilities(100, seed), 0)
        july.observe(
            columns_of(flights(100, seed=100 + seed, month=7)), probabilities(100, seed), 0
        )
    assert max(window_psi(alike).values()) < drift.PSI_WARN
    assert window_psi(july)["MES"] > drift.PSI_ALERT
    assert window_psi(july)["OPERA"] < drift.PSI_WARN


def test_exported_cards_carry_the_training_profile(synthetic_export: Path) -> None:
    for name in MODEL_NAMES:
        card = orjson.loads((synthetic_export / "models" / f"{name}.json").read_bytes())
        profile = drift.Profile.from_json(card["profile"], schedule=name == "delay-full")
        assert profile.flights == card["data"]["rows"]
        assert ("hour" in profile.histograms) is (name == "delay-full")
        model = OnnxModel.load(synthetic_export / "models", name)
        assert model.threshold == card["threshold"]


@pytest.mark.parametrize("schedule", [False, True], ids=["minimal", "full"])
def test_a_batch_counts_as_its_flights_one_at_a_time(schedule: bool) -> None:
    """A batch is counted by Counter and numpy, a flight alone by a loop: the same buckets,
    probabilities on an edge and either side of it included, given as a list or float32."""
    profile = drift.profile(flights(4000, schedule=schedule), probabilities(4000), threshold=0.3)
    edges = profile.histograms["proba"].edges
    served = flights(300, seed=5, schedule=schedule)
    edge_values = [p for e in edges for p in (e, np.nextafter(e, 0), np.nextafter(e, 1))]
    chances = [*edge_values, 0.0, 1.0, *probabilities(300 - len(edge_values) - 2, seed=6).tolist()]
    chances = [float(chance) for chance in chances]  # as a table gives them
    for given in (chances, np.array(chances, dtype=np.float32)):
        batch, alone = drift.Window(profile, 100_000), drift.Window(profile, 100_000)
        batch.observe(columns_of(served), given, 3)
        for index in range(len(served)):
            alone.observe(columns_of(served[index : index + 1]), given[index : index + 1], 0)
        batch_counts, _, _ = batch.totals()
        alone_counts, _, _ = alone.totals()
        assert batch_counts.tolist() == alone_counts.tolist()
        assert batch_counts[batch.offsets["proba"] :].sum() == len(served)  # the last input


def test_batches_larger_than_a_slot_keep_the_window_at_its_size() -> None:
    """A batch closes one slot with all its flights: ten slots kept whatever they held made a
    1,000-flight window of ten 1,000-flight batches 10,000 flights long (a server with
    DRIFT_WINDOW=10000 showed drift_window_flights 39,614 on 2 workers), and old traffic
    weighed on the PSI ten times as long. The window keeps the last `size` flights."""
    profile = drift.profile(flights(2000), probabilities(2000), threshold=0.3)
    window = drift.Window(profile, size=1000)
    for start in range(10):
        window.observe(columns_of(flights(1000, seed=start, month=1)), probabilities(1000), 300)
    window.observe(columns_of(flights(2500, seed=99, month=7)), probabilities(2500), 500)
    counts, total, delayed = window.totals()
    assert (total, delayed) == (2500, 500)  # the last batch alone: larger than the window
    assert list(split(window, counts)["MES"]) == [0] * 6 + [2500] + [0] * 5
    for start in range(30):
        window.observe(columns_of(flights(40, seed=start, month=3)), probabilities(40), 1)
    counts, total, delayed = window.totals()
    assert 1000 <= total <= 1100
    assert list(split(window, counts)["MES"]) == [0, 0, total, *[0] * 9]
    assert delayed == total // 40


def test_a_category_gets_its_own_bucket_from_a_fifth_of_a_percent_of_the_flights() -> None:
    """2 flights in 1,000 (0.2 %) make a bucket of their own; 1 in 1,000 falls in OTHER."""
    training = [Flight("Grupo LATAM", "N", 1, None)] * 997
    training += [Flight("Twice Air", "N", 1, None)] * 2 + [Flight("Once Air", "N", 1, None)]
    operators = drift.profile(training, probabilities(1000), threshold=0.3).histograms["OPERA"]
    assert operators.buckets == ("Grupo LATAM", "Twice Air", "~other")
    assert operators.shares == (0.997, 0.002, 0.001)


def test_at_most_forty_category_values_get_a_bucket_the_rest_is_other() -> None:
    """Fifty airlines, each well over the minimal share: the forty most frequent get a bucket."""
    training = [
        Flight(f"Airline {index:02}", "N", 1, None)
        for index in range(50)
        for _ in range(100 - index)
    ]
    operators = drift.profile(training, probabilities(len(training)), threshold=0.3)
    buckets = operators.histograms["OPERA"].buckets
    assert buckets == (*(f"Airline {index:02}" for index in range(40)), "~other")
    assert operators.histograms["OPERA"].shares[-1] == 0.14702  # 555 of 3,775


def test_a_profile_needs_one_probability_per_training_flight() -> None:
    with pytest.raises(ValueError, match="one probability per training flight"):
        drift.profile([], np.array([]), threshold=0.3)
    with pytest.raises(ValueError, match="one probability per training flight"):
        drift.profile(flights(10), probabilities(9), threshold=0.3)


def test_psi_floors_an_empty_bucket_at_a_ten_thousandth() -> None:
    """All flights in one of two even buckets: the empty one counts as a share of 0.0001."""
    expected = (1 - 0.5) * math.log(1 / 0.5) + (0.0001 - 0.5) * math.log(0.0001 / 0.5)
    assert drift.psi([0.5, 0.5], [10, 0]) == pytest.approx(expected)
    assert drift.psi([0.5, 0.5], [10, 0]) == pytest.approx(4.604318, abs=1e-6)
    assert drift.psi([1.0, 0.0], [1, 1]) == pytest.approx(expected)  # an empty expected share


def test_psi_of_uneven_expected_shares() -> None:
    expected = (0.5 - 0.25) * math.log(0.5 / 0.25) + (0.5 - 0.75) * math.log(0.5 / 0.75)
    assert drift.psi([0.25, 0.75], [3, 3]) == pytest.approx(expected)
    assert drift.psi([0.25, 0.75], [3, 3]) == pytest.approx(0.274653, abs=1e-6)


@pytest.mark.parametrize(
    ("shares", "accepted"),
    [([0.5, 0.5009], True), ([0.5, 0.4991], True), ([0.5, 0.5011], False), ([0.5, 0.4989], False)],
)
def test_shares_may_add_up_a_thousandth_from_one(shares: list[float], accepted: bool) -> None:
    """Shares are rounded to 6 digits at export: a histogram a thousandth off 1 still loads."""
    data = {"buckets": ["Grupo LATAM", "~other"], "shares": shares}
    if accepted:
        assert drift.Histogram.from_json(data, "OPERA").shares == tuple(shares)
    else:
        with pytest.raises(ValueError, match=r"OPERA's shares add up to (1\.0011|0\.9989), not 1"):
            drift.Histogram.from_json(data, "OPERA")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"buckets": ["a", "a", "~other"], "shares": [0.2, 0.3, 0.5]}, "buckets are not distinct"),
        (
            {"buckets": ["a", "~other"], "shares": [0.5, 0.5], "edges": "0.5"},
            "edges are not a list of numbers",
        ),
        (
            {"buckets": ["a", "~other"], "shares": [0.5, 0.5], "edges": [float("nan")]},
            "edges are not a list of numbers",
        ),
    ],
)
def test_a_histogram_that_could_not_count_flights_is_refused(
    data: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        drift.Histogram.from_json(data, "OPERA")


@pytest.mark.parametrize("data", [[], None, "profile"])
def test_a_profile_that_is_no_object_is_refused(data: Any) -> None:
    with pytest.raises(ValueError, match=r"it is (a list|missing|a str), not an object"):
        drift.Profile.from_json(data, schedule=False)


def test_the_training_alert_rate_is_kept_to_six_digits() -> None:
    """3 of 7 training flights at or over the threshold: 0.428571, as the card shows it."""
    chances = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    assert drift.profile(flights(7), chances, threshold=0.5).alert_rate == 0.428571


def test_the_window_keeps_a_slot_until_the_newer_ones_hold_its_size() -> None:
    """A 20-flight window closes a slot every 2 flights: 2 flights, then a batch of 19 (one
    slot). The 19 alone are fewer than 20, so the first 2 stay: 21 flights."""
    profile = drift.profile(flights(2000), probabilities(2000), threshold=0.3)
    window = drift.Window(profile, size=20)
    window.observe(columns_of(flights(2, month=1)), probabilities(2), 1)
    window.observe(columns_of(flights(19, seed=1, month=7)), probabilities(19), 0)
    counts, total, delayed = window.totals()
    assert (total, delayed) == (21, 1)
    assert list(split(window, counts)["MES"]) == [2, 0, 0, 0, 0, 0, 19, 0, 0, 0, 0, 0]
    window.observe(columns_of(flights(2, seed=2, month=7)), probabilities(2), 0)
    counts, total, delayed = window.totals()
    assert (total, delayed) == (21, 0)  # 19 + 2 hold 21 >= 20 flights: the first slot is out
    assert list(split(window, counts)["MES"]) == [0, 0, 0, 0, 0, 0, 21, 0, 0, 0, 0, 0]


def test_a_few_float32_probabilities_on_an_edge_count_as_each_alone() -> None:
    """A few flights (a loop, not numpy) scored in float32, as onnxruntime gives them, one just
    under an edge once in float64: the same bucket as the flight alone (float64) and as a
    large batch (numpy), not the float32 comparison's, which rounds the edge onto it."""
    profile = drift.profile(flights(4000), probabilities(4000), threshold=0.3)
    edges = profile.histograms["proba"].edges
    under = [np.float32(edge) for edge in edges if float(np.float32(edge)) < edge]
    assert under, edges  # edges are rounded to 6 digits: most are no float32
    under = (under * 10)[:10]  # 10 flights: counted in a loop
    served = flights(len(under), seed=5)
    few, alone = drift.Window(profile, 100_000), drift.Window(profile, 100_000)
    few.observe(columns_of(served), np.array(under, dtype=np.float32), 0)
    for index, flight in enumerate(served):
        alone.observe(columns_of([flight]), np.array(under[index : index + 1]), 0)
    few_counts, _, _ = few.totals()
    alone_counts, _, _ = alone.totals()
    assert split(few, few_counts)["proba"].tolist() == split(alone, alone_counts)["proba"].tolist()


@pytest.mark.parametrize(("flights", "accepted"), [(1, True), (0, False)])
def test_a_profile_is_of_one_training_flight_or_more(flights: int, accepted: bool) -> None:
    data = drift.profile(globals()["flights"](300), probabilities(300), threshold=0.5).to_json()
    data["flights"] = flights
    if accepted:
        assert drift.Profile.from_json(data, schedule=False).flights == 1
    else:
        with pytest.raises(ValueError, match="its flights 0 is not a positive integer"):
            drift.Profile.from_json(data, schedule=False)


def test_probabilities_all_under_their_rounded_edge_leave_the_top_bucket_empty() -> None:
    """Every training probability 0.1234567: one edge, rounded up to 0.123457, and none at or
    over it: the top bucket is there, empty (a card with fewer shares than buckets is refused)."""
    profile = drift.profile(flights(50), np.full(50, 0.1234567), threshold=0.5)
    proba = profile.histograms["proba"]
    assert (proba.buckets, proba.shares, proba.edges) == (
        ("<0.123457", ">=0.123457"),
        (1.0, 0.0),
        (0.123457,),
    )
    assert drift.Profile.from_json(profile.to_json(), schedule=False) == profile


def test_a_window_of_fewer_flights_than_slots_keeps_its_last_flights() -> None:
    profile = drift.profile(flights(2000), probabilities(2000), threshold=0.3)
    window = drift.Window(profile, size=5)
    for index, flight in enumerate(flights(7, month=1) + flights(5, seed=1, month=7)):
        window.observe(columns_of([flight]), [0.5], index % 2)
    counts, total, delayed = window.totals()
    assert (total, delayed) == (5, 3)  # flights 7 to 11, every other one delayed
    assert list(split(window, counts)["MES"]) == [0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0]


@pytest.mark.parametrize("count", [1, 5, 40], ids=["alone", "few", "batch"])
def test_a_value_training_never_saw_counts_in_other(count: int) -> None:
    profile = drift.profile(flights(2000), probabilities(2000), threshold=0.3)
    window = drift.Window(profile, size=100_000)
    unseen = [Flight("Unknown Air", "N", 3, None)] * count
    window.observe(columns_of(unseen), [0.5] * count, 0)
    parts = split(window, window.totals()[0])
    assert parts["OPERA"][-1] == sum(parts["OPERA"]) == count
    types = profile.histograms["TIPOVUELO"].buckets
    assert parts["TIPOVUELO"][types.index("N")] == sum(parts["TIPOVUELO"]) == count
    assert list(parts["MES"]) == [0, 0, count, *[0] * 9]
    assert sum(parts["proba"]) == count


@pytest.mark.parametrize(("rate", "accepted"), [(0, True), (1, True), (1.0, True), (1.5, False)])
def test_a_training_alert_rate_is_a_share_from_none_to_every_flight(
    rate: float, accepted: bool
) -> None:
    data = drift.profile(flights(300), probabilities(300), threshold=0.5).to_json()
    data["alert_rate"] = rate
    if accepted:
        assert drift.Profile.from_json(data, schedule=False).alert_rate == rate
    else:
        with pytest.raises(ValueError, match=r"its alert_rate 1\.5 is not a number from 0 to 1"):
            drift.Profile.from_json(data, schedule=False)


def test_the_drift_replay_marks_an_input_over_the_alerts_threshold() -> None:
    """benchmarks/drift_replay.py reports the inputs the drift alert would fire on with
    PSI_ALERT: the threshold of the alert's rule."""
    rules = yaml.safe_load(PROMETHEUS_RULE.read_text())["spec"]["groups"]
    (expression,) = [
        rule["expr"]
        for group in rules
        for rule in group["rules"]
        if rule.get("alert") == "LatamDelayInputDrift"
    ]
    assert expression.endswith(") > 0.2")
    assert drift.PSI_ALERT == 0.2

"""Drift gauges in-process: cards given a profile of synthetic flights (the real-data stream
against a real server is in tests/test_observability_server.py)."""

from __future__ import annotations

import inspect
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from app.errors import ModelLoadError
from app.inference.flights import Flight, FlightValidator
from app.inference.model import MODEL_NAMES, OnnxModel
from app.main import create_app
from app.observability import drift_metrics
from app.observability.drift import Histogram, Profile, Window
from app.observability.drift_metrics import MIN_FLIGHTS
from app.observability.metrics import count_predictions
from app.settings import Settings
from benchmarks.conftest import make_flights
from tests.conftest import MODELS_DIR, add_profiles


def synthetic(schedule: bool) -> list[Flight]:
    operators = OnnxModel.load(MODELS_DIR, MODEL_NAMES[0]).card.operators
    return FlightValidator(operators, 10**6).flights(make_flights(3000, schedule, seed=1))


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed models with the profile of the synthetic flights these tests send."""
    models = Path(shutil.copytree(MODELS_DIR, tmp_path_factory.mktemp("cards") / "models"))
    for name in MODEL_NAMES:
        card = models / f"{name}.json"
        data = json.loads(card.read_text())
        data.pop("profile", None)
        card.write_text(json.dumps(data))
    add_profiles(models, synthetic)
    return models


def metrics(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def drift_samples(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> dict[Any, float]:
    return {key: value for key, value in samples.items() if key[0].startswith("drift_")}


@pytest.fixture
def served(profiled: Path, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    settings = Settings(models_dir=profiled, max_flights=10_000, **getattr(request, "param", {}))
    with TestClient(create_app(settings)) as client:
        yield client


def send(client: TestClient, flights: list[dict[str, Any]], batch: int = 500) -> list[int]:
    labels: list[int] = []
    for start in range(0, len(flights), batch):
        response = client.post("/predict", json={"flights": flights[start : start + batch]})
        assert response.status_code == 200, response.text
        labels += response.json()["predict"]
    return labels


def version(name: str) -> str:
    return OnnxModel.load(MODELS_DIR, name).version


def test_one_month_moves_the_month_psi_and_the_alert_rate_is_the_labels_share(
    served: TestClient,
) -> None:
    minimal = version("delay-minimal")
    july = [dict(flight, MES=7) for flight in make_flights(MIN_FLIGHTS + 200, False, seed=2)]
    labels = send(served, july[:100])
    before = drift_samples(metrics(served))
    assert (
        before[
            ("drift_window_flights", frozenset({("model", "delay-minimal"), ("version", minimal)}))
        ]
        == 100
    )
    assert not any(name == "drift_psi" for name, _ in before)  # under MIN_FLIGHTS: noise, not shown
    labels += send(served, july[100:])

    after = drift_samples(metrics(served))
    key = frozenset({("model", "delay-minimal"), ("version", minimal)})
    assert after[("drift_window_flights", key)] == len(july)
    assert after[("drift_alert_rate", key)] == pytest.approx(sum(labels) / len(labels))
    assert 0 < after[("drift_training_alert_rate", key)] < 1
    psi = {
        dict(labels_)["feature"]: value
        for (name, labels_), value in after.items()
        if name == "drift_psi" and dict(labels_)["model"] == "delay-minimal"
    }
    assert set(psi) == {"OPERA", "TIPOVUELO", "MES", "proba"}
    assert psi["MES"] > 0.2
    assert psi["OPERA"] < 0.1  # airlines drawn as in the profile's flights
    assert not any(name == "drift_window_bucket_flights" for name, _ in after)  # summed away


@pytest.mark.parametrize("served", [{"drift": False}], indirect=True)
def test_drift_off_leaves_the_counting_observer_alone(served: TestClient) -> None:
    assert inspect.unwrap(served.app.state.models.observe) is count_predictions  # type: ignore[attr-defined]
    assert not any(name.startswith("drift_psi") for name, _ in drift_samples(metrics(served)))


def test_cards_without_a_profile_serve_without_drift_gauges(tmp_path: Path) -> None:
    models = Path(shutil.copytree(MODELS_DIR, tmp_path / "models"))
    for name in MODEL_NAMES:
        card = models / f"{name}.json"
        card.write_text(card.read_text().replace('"profile"', '"_no_profile"'))
    with TestClient(create_app(Settings(models_dir=models))) as client:
        assert inspect.unwrap(client.app.state.models.observe) is count_predictions  # type: ignore[attr-defined]
        send(client, make_flights(50, False))
        samples = metrics(client)
    assert not any(name in ("drift_psi", "drift_alert_rate") for name, _ in samples)


def test_predictions_are_counted_by_model_version(served: TestClient) -> None:
    minimal, full = version("delay-minimal"), version("delay-full")
    before = metrics(served)
    labels = send(served, make_flights(7, False, seed=3) + make_flights(3, True, seed=4))
    after = metrics(served)

    def delta(model: str, model_version: str, label: str) -> float:
        key = (
            "predictions_total",
            frozenset({("model", model), ("version", model_version), ("label", label)}),
        )
        return after.get(key, 0) - before.get(key, 0)

    assert delta("delay-minimal", minimal, "0") + delta("delay-minimal", minimal, "1") == 7
    assert delta("delay-full", full, "0") + delta("delay-full", full, "1") == 3
    assert sum(
        delta(m, v, "1") for m, v in (("delay-minimal", minimal), ("delay-full", full))
    ) == sum(labels)


def test_a_profile_that_does_not_fit_its_contract_is_refused_before_serving(
    profiled: Path, tmp_path: Path
) -> None:
    """It used to be served without drift gauges, or (a list for `features`: AttributeError)
    crash every worker's start; the loader refuses it as every unfit card (app.inference.model)."""
    models = Path(shutil.copytree(profiled, tmp_path / "models"))
    card = models / "delay-full.json"
    data = json.loads(card.read_text())
    del data["profile"]["features"]["proba"]
    card.write_text(json.dumps(data))
    with (
        pytest.raises(ModelLoadError, match="its drift profile does not fit delay-full's"),
        TestClient(create_app(Settings(models_dir=models))),
    ):
        pass


def test_a_window_that_fails_is_dropped_once_and_never_stops_the_flush(
    profiled: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The operator probe: a minimal card whose MES histogram had 2 buckets was served; the first
    lone flight of month 12 raised IndexError in the flush (Window._count_lone), and every
    /metrics that flushed answered 500. The loader now refuses such a profile; were a window to
    fail anyway, the flush drops that model's window, says so once, and goes on."""
    parse = Profile.from_json  # drift_metrics' own Profile

    def two_months(raw: Any, *schedule: bool) -> Profile:  # what the loader used to let through
        profile = parse(raw, *schedule)
        if "hour" in profile.histograms:
            return profile
        histograms = {name: h for name, h in profile.histograms.items() if name != "MES"}
        histograms["MES"] = Histogram(("1", "2"), (0.5, 0.5))  # last: month 12 falls off the end
        return Profile(profile.flights, profile.alert_rate, histograms)

    monkeypatch.setattr(Profile, "from_json", two_months)
    minimal, full = version("delay-minimal"), version("delay-full")
    with TestClient(create_app(Settings(models_dir=profiled))) as client:
        send(client, [dict(make_flights(1, False)[0], MES=12)])
        first = drift_samples(metrics(client))
        send(client, make_flights(5, False) + make_flights(5, True))
        second = drift_samples(metrics(client))
    failed = [r for r in caplog.records if "drift window failed" in r.getMessage()]
    assert [r.getMessage() for r in failed] == [
        f"delay-minimal {minimal}: drift window failed, no drift gauges"
    ]
    assert failed[0].exc_info is not None
    assert failed[0].exc_info[0] is IndexError
    flights = frozenset({("model", "delay-minimal"), ("version", minimal)})
    assert (
        first[("drift_window_flights", flights)] == second[("drift_window_flights", flights)] == 0
    )
    assert (
        second[("drift_window_flights", frozenset({("model", "delay-full"), ("version", full)}))]
        == 5
    )


def test_the_drift_gauges_show_from_a_thousand_flights(served: TestClient) -> None:
    """999 flights in the window: no PSI (noise); the thousandth shows it, and the alert rate."""
    minimal = version("delay-minimal")
    key = frozenset({("model", "delay-minimal"), ("version", minimal)})
    flights = make_flights(1000, False, seed=5)
    send(served, flights[:999])
    before = drift_samples(metrics(served))
    assert before[("drift_window_flights", key)] == 999
    assert not any(name in ("drift_psi", "drift_alert_rate") for name, _ in before)
    send(served, flights[999:])
    after = drift_samples(metrics(served))
    assert after[("drift_window_flights", key)] == 1000
    assert ("drift_alert_rate", key) in after
    assert {dict(labels)["feature"] for name, labels in after if name == "drift_psi"} >= {
        "OPERA",
        "TIPOVUELO",
        "MES",
        "proba",
    }


def test_cards_without_a_profile_log_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A card without a profile is no unreadable profile: no drift gauges, and nothing to say."""
    models = Path(shutil.copytree(MODELS_DIR, tmp_path / "models"))
    for name in MODEL_NAMES:
        card = models / f"{name}.json"
        card.write_text(card.read_text().replace('"profile"', '"_no_profile"'))
    monitor = drift_metrics.DriftMonitor([OnnxModel.load(models, n) for n in MODEL_NAMES], 100)
    assert not monitor.watching
    assert not [r for r in caplog.records if "drift profile" in r.getMessage()]


def test_a_model_with_an_unreadable_profile_is_not_watched_and_said_so(
    profiled: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The loader refuses such a card; a model made otherwise gets no window, in one warning."""
    minimal, full = (OnnxModel.load(profiled, name) for name in MODEL_NAMES)
    full.card.raw["profile"] = {"flights": 0}
    monitor = drift_metrics.DriftMonitor([minimal, full], 100)
    assert monitor.watching
    assert [r.getMessage() for r in caplog.records if "drift profile" in r.getMessage()] == [
        f"delay-full {full.version}: unreadable drift profile, no drift gauges: "
        "its flights 0 is not a positive integer"
    ]
    families = monitor.derive([])
    training = [s.labels["model"] for f in families for s in f.samples]
    assert training == ["delay-minimal"]  # drift_training_alert_rate of the watched model only


def own_gauges(model: str, model_version: str) -> list[float]:
    """This worker's own values of the window gauges of one model (the bucket counts, which
    /metrics sums away, included)."""
    return [
        sample.value
        for gauge in (drift_metrics._COUNTS, drift_metrics._FLIGHTS, drift_metrics._DELAYED)
        for family in gauge.collect()
        for sample in family.samples
        if (sample.labels["model"], sample.labels["version"]) == (model, model_version)
    ]


def test_a_window_that_fails_counting_a_request_is_dropped_and_the_request_answered(
    profiled: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A window that raises while counting a request's flights: the request is answered, the
    model's window dropped at once and said so, and every gauge of its window goes to 0 (summed
    over the workers, a stale count would weigh on the other workers' windows)."""
    minimal, full = version("delay-minimal"), version("delay-full")
    key = frozenset({("model", "delay-minimal"), ("version", minimal)})
    with TestClient(create_app(Settings(models_dir=profiled, max_flights=10_000))) as client:
        send(client, make_flights(1200, False, seed=6))
        assert ("drift_alert_rate", key) in drift_samples(metrics(client))
        assert max(own_gauges("delay-minimal", minimal)) > 0

        def broken(*args: Any) -> None:
            raise IndexError("list index out of range")

        monkeypatch.setattr(Window, "observe", broken)
        assert len(send(client, make_flights(3, False, seed=7))) == 3
        failed = [r for r in caplog.records if "drift window failed" in r.getMessage()]
        assert [r.getMessage() for r in failed] == [
            f"delay-minimal {minimal}: drift window failed, no drift gauges"
        ]
        after = drift_samples(metrics(client))
        left = own_gauges("delay-minimal", minimal)
    assert after[("drift_window_flights", key)] == 0
    assert [name for name, labels in after if labels == key] == ["drift_window_flights"]
    assert len(left) > 3
    assert set(left) == {0.0}
    full_key = frozenset({("model", "delay-full"), ("version", full)})
    assert ("drift_training_alert_rate", full_key) in after


def test_a_feature_without_counts_shows_no_psi_and_the_scrape_goes_on(profiled: Path) -> None:
    """A scrape that finds the window's flights but no bucket count of a feature (its samples
    not written yet) leaves that PSI out rather than failing /metrics."""
    models = [OnnxModel.load(profiled, name) for name in MODEL_NAMES]
    monitor = drift_metrics.DriftMonitor(models, 100)
    flights = GaugeMetricFamily("drift_window_flights", "", labels=["model", "version"])
    flights.add_metric([models[0].name, models[0].version], 1500)
    families = monitor.derive([flights])
    psi = [s for f in families if f.name == "drift_psi" for s in f.samples]
    rate = [s.value for f in families if f.name == "drift_alert_rate" for s in f.samples]
    assert (psi, rate) == ([], [0.0])

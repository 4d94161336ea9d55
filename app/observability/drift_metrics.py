"""Drift as Prometheus metrics: each worker's windows (app.observability.drift) flushed as bucket
counts, summed over the workers, and turned into PSI at scrape time.

A worker keeps one `Window` per served model whose card has a profile (a card without one gets
no window and no gauges). Once a second (app.observability.metrics.flush) it writes its windows'
bucket counts to `livesum` gauges, which prometheus_client sums over the live workers; the worker
that answers a scrape computes, from those sums, per model:

* `drift_psi{model,version,feature}`: PSI of each input and of the predicted probability
  (`proba`) against the training profile, once the window holds MIN_FLIGHTS flights;
* `drift_alert_rate{model,version}`: share of the window's flights labelled delayed, beside
  `drift_training_alert_rate`, the same share on the training flights;
* `drift_window_flights{model,version}`: how many flights these are computed over.

The per-bucket counts are not exposed: a couple of hundred series per model that PSI sums up.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from prometheus_client import Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from app.inference.flights import Columns
from app.inference.model import Observer, OnnxModel, Prediction
from app.observability import metric_files
from app.observability.drift import Profile, Window, psi

metric_files.install()  # before the first metric (app.observability.metric_files)
logger = logging.getLogger("app")
MIN_FLIGHTS = 1000
"""Fewer flights in the merged window, and PSI is noise (about buckets/flights): not shown."""

_COUNTS = Gauge(
    "drift_window_bucket_flights",
    "Flights of the drift window in each bucket of each input (summed over workers)",
    ["model", "version", "feature", "bucket"],
    multiprocess_mode="livesum",
)
_FLIGHTS = Gauge(
    "drift_window_flights",
    "Flights in the drift window, summed over the workers",
    ["model", "version"],
    multiprocess_mode="livesum",
)
_DELAYED = Gauge(
    "drift_window_delayed_flights",
    "Flights of the drift window labelled delayed, summed over the workers",
    ["model", "version"],
    multiprocess_mode="livesum",
)
_HIDDEN = {"drift_window_bucket_flights", "drift_window_delayed_flights"}


class DriftMonitor:
    """One worker's drift windows, one per model with a profile."""

    def __init__(self, models: Iterable[OnnxModel], size: int) -> None:
        self._windows: dict[OnnxModel, Window] = {}
        for model in models:
            raw = model.card.raw.get("profile")
            if raw is None:
                continue
            try:
                profile = Profile.from_json(raw, model.card.encoder.schedule)
            except ValueError as error:  # the loader refuses such a card: a model made otherwise
                logger.warning(
                    "%s %s: unreadable drift profile, no drift gauges: %s",
                    model.name,
                    model.version,
                    error,
                )
                continue
            self._windows[model] = Window(profile, size)
        self._flushed: dict[OnnxModel, int] = {}
        self._gauges = {
            model: [
                _COUNTS.labels(model.name, model.version, feature, str(bucket))
                for feature in window.features
                for bucket in range(len(window.profile.histograms[feature].buckets))
            ]
            for model, window in self._windows.items()
        }
        self._profiles = {(m.name, m.version): w.profile for m, w in self._windows.items()}

    @property
    def watching(self) -> bool:
        return bool(self._windows)

    def after(self, first: Observer) -> Observer:
        """An observer that calls `first`, then counts the flights in their model's window."""
        windows = self._windows

        def observe(model: OnnxModel, columns: Columns, prediction: Prediction) -> None:
            first(model, columns, prediction)
            window = windows.get(model)
            if window is not None:
                try:
                    window.observe(columns, prediction.probabilities, prediction.delayed)
                except Exception:  # drift is no reason to fail a request
                    self._unwatch(model)

        return observe

    def flush(self) -> None:
        """Writes the windows that changed since the last flush to the shared gauges. Never
        raises: it runs in the once-a-second flush and before every scrape (app.observability.
        metrics), which a window that fails would stop or turn into 500s; such a window is
        dropped, said once, and the other models stay watched."""
        for model, window in list(self._windows.items()):
            if self._flushed.get(model) == window.observed:
                continue
            self._flushed[model] = window.observed
            try:
                counts, flights, delayed = window.totals()
                for gauge, count in zip(self._gauges[model], counts.tolist(), strict=True):
                    gauge.set(count)
                _FLIGHTS.labels(model.name, model.version).set(flights)
                _DELAYED.labels(model.name, model.version).set(delayed)
            except Exception:
                self._unwatch(model)

    def _unwatch(self, model: OnnxModel) -> None:
        """Stops watching a model whose window failed (a bug: the loader checks that its profile
        fits the flights it takes), with the traceback, once; this worker's gauges of it go to 0,
        so the scrapes show no frozen window of it."""
        if self._windows.pop(model, None) is None:
            return
        logger.exception("%s %s: drift window failed, no drift gauges", model.name, model.version)
        self._profiles.pop((model.name, model.version), None)
        for gauge in self._gauges.pop(model, []):
            gauge.set(0)
        _FLIGHTS.labels(model.name, model.version).set(0)
        _DELAYED.labels(model.name, model.version).set(0)

    def derive(self, families: list[Metric]) -> list[Metric]:
        """The scrape's families, bucket counts replaced by PSI and alert rates."""
        counts: dict[tuple[str, str, str], dict[int, float]] = {}
        flights: dict[tuple[str, str], float] = {}
        delayed: dict[tuple[str, str], float] = {}
        kept = []
        for family in families:
            if family.name not in _HIDDEN:
                kept.append(family)
            for sample in family.samples:
                labels = sample.labels
                if sample.name == "drift_window_bucket_flights":
                    key = (labels["model"], labels["version"], labels["feature"])
                    counts.setdefault(key, {})[int(labels["bucket"])] = sample.value
                elif sample.name == "drift_window_flights":
                    flights[labels["model"], labels["version"]] = sample.value
                elif sample.name == "drift_window_delayed_flights":
                    delayed[labels["model"], labels["version"]] = sample.value
        psi_family = GaugeMetricFamily(
            "drift_psi",
            "Population Stability Index of each input and of the predicted probability (proba), "
            "drift window against training; over 0.2: the traffic has shifted",
            labels=["model", "version", "feature"],
        )
        rate = GaugeMetricFamily(
            "drift_alert_rate",
            "Share of the drift window's flights labelled delayed",
            labels=["model", "version"],
        )
        training_rate = GaugeMetricFamily(
            "drift_training_alert_rate",
            "Share of the training flights labelled delayed, for comparison",
            labels=["model", "version"],
        )
        for (name, version), profile in self._profiles.items():
            training_rate.add_metric([name, version], profile.alert_rate)
            total = flights.get((name, version), 0.0)
            if total < MIN_FLIGHTS:
                continue
            rate.add_metric([name, version], delayed.get((name, version), 0.0) / total)
            for feature, histogram in profile.histograms.items():
                observed = counts.get((name, version, feature), {})
                values = [observed.get(i, 0.0) for i in range(len(histogram.buckets))]
                if sum(values) > 0:
                    psi_family.add_metric([name, version, feature], psi(histogram.shares, values))
        return [*kept, psi_family, rate, training_rate]

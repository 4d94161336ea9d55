from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient


def _samples(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_requests_are_counted_by_route_template_and_status(client: TestClient) -> None:
    before = _samples(client)
    flight = {"OPERA": "Grupo LATAM", "TIPOVUELO": "N", "MES": 3}
    for _ in range(3):
        assert client.post("/predict", json={"flights": [flight, flight]}).status_code == 200
    assert client.post("/predict", json={"flights": []}).status_code == 400
    assert client.get("/v2/models/delay-full/ready").status_code == 200
    assert client.get("/no/such/path").status_code == 404
    after = _samples(client)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    count = "http_request_duration_seconds_count"
    assert delta(count, route="/predict", method="POST", status="200") == 3
    assert delta(count, route="/predict", method="POST", status="400") == 1
    assert delta(count, route="/v2/models/{name}/ready", method="GET", status="200") == 1
    assert delta(count, route="<unmatched>", method="GET", status="404") == 1
    scored = delta("predictions_total", model="delay-minimal", label="0") + delta(
        "predictions_total", model="delay-minimal", label="1"
    )
    assert scored == 6


def test_flushed_tallies_equal_direct_observations() -> None:
    from prometheus_client import CollectorRegistry, Histogram

    from app.metrics import BUCKETS, LATENCY, flush, observe_latency

    values = [0.0, 0.0004, 0.0005, 0.00051, 0.3, 2.5, 7.0, *BUCKETS]
    reference = Histogram(
        "reference_seconds", "same buckets", buckets=BUCKETS, registry=CollectorRegistry()
    )
    for value in values:
        reference.observe(value)
        observe_latency("/flush-test", "GET", 200, value)

    def samples(histogram: object) -> dict[str, float]:
        return {
            f"{sample.name.rsplit('_', 1)[-1]}{sample.labels.get('le', '')}": sample.value
            for metric in histogram.collect()  # type: ignore[attr-defined]
            for sample in metric.samples
            if sample.labels.get("route", "/flush-test") == "/flush-test"
        }

    flush()
    flushed = samples(LATENCY.labels("/flush-test", "GET", "200"))
    assert flushed["count"] == len(values)
    assert flushed["bucket+Inf"] == len(values)
    assert flushed == samples(reference)

"""app.observability.metrics_port in-process: a request is told apart by the port it came in on (the
real server listening on both: tests/test_server_observability.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import MODELS_DIR

FLIGHT = {"OPERA": "Grupo LATAM", "TIPOVUELO": "N", "MES": 3}


@pytest.fixture(scope="module")
def app() -> Iterator[object]:
    application = create_app(Settings(models_dir=MODELS_DIR, metrics_bind="127.0.0.1:9100"))
    with TestClient(application):
        yield application


def test_metrics_answer_only_on_their_port(app: object) -> None:
    public = TestClient(app, base_url="http://testserver:8000")  # type: ignore[arg-type]
    private = TestClient(app, base_url="http://testserver:9100")  # type: ignore[arg-type]
    assert public.post("/predict", json={"flights": [FLIGHT]}).status_code == 200
    assert public.get("/metrics").status_code == 404
    scraped = private.get("/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert "predictions_total{" in scraped.text
    assert private.post("/predict", json={"flights": [FLIGHT]}).status_code == 404
    assert private.post("/metrics").status_code == 405
    assert private.get("/health").status_code == 404


def test_the_public_ports_document_lists_metrics_only_where_it_serves_them(
    app: object, client: TestClient
) -> None:
    public = TestClient(app, base_url="http://testserver:8000")  # type: ignore[arg-type]
    assert "/metrics" not in public.get("/openapi.json").json()["paths"]
    assert "/metrics" in client.get("/openapi.json").json()["paths"]


def test_without_metrics_bind_metrics_stay_on_the_public_port(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize("value", ["9100", ":9100", "host:0", "host:70000", "host:port"])
def test_a_bad_metrics_bind_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="METRICS_BIND"):
        Settings.from_env({"METRICS_BIND": value})

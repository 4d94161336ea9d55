"""Security basics: a non-root container, no stack trace or internal path in any answer, no
admin surface, no server fingerprint header."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from app.main import create_app
from app.rest.routes import ROUTES
from app.settings import Settings
from tests.test_container import final_stage, instructions

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "models"
LEAKS = ("Traceback", 'File "', "/work/", "site-packages", str(ROOT), "RuntimeError", "boom")


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions((ROOT / "Dockerfile").read_text())


def test_the_container_runs_as_uid_10001_created_for_it(dockerfile: list[tuple[str, str]]) -> None:
    runtime = final_stage(dockerfile)
    users = [arguments for keyword, arguments in runtime if keyword == "USER"]
    assert users, "the runtime stage sets a USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), "numeric, so a runtime can verify it is not root without /etc/passwd"
    assert int(uid) != 0
    assert gid == "" or (gid.isdigit() and int(gid) != 0)
    created = " ".join(arguments for keyword, arguments in runtime if keyword == "RUN")
    assert re.search(rf"useradd\b.*--uid {uid}\b", created), "the user exists in the image"
    last_user = max(i for i, (keyword, _) in enumerate(runtime) if keyword == "USER")
    assert not [k for k, _ in runtime[last_user:] if k == "RUN"], "nothing runs after USER"
    assert "sudo" not in created


def test_the_container_command_has_no_debug_or_reload_flag(
    dockerfile: list[tuple[str, str]],
) -> None:
    command = " ".join(
        arguments for keyword, arguments in final_stage(dockerfile) if keyword == "CMD"
    )
    assert "--reload" not in command
    assert "--debug" not in command


@pytest.fixture(scope="module")
def failing_client() -> Iterator[TestClient]:
    """The app with its models loaded, whose model call raises an error naming internal paths."""
    app = create_app(Settings(models_dir=MODELS_DIR))
    with TestClient(app, raise_server_exceptions=False) as client:
        models: Any = app.state.models

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"boom in {ROOT}/app/inference/model.py (site-packages/onnxruntime)")

        models.predict = broken
        models.predict_with = broken
        yield client


MINIMAL = {"OPERA": "Grupo LATAM", "TIPOVUELO": "N", "MES": 7}
OIP = {
    "inputs": [
        {"name": "OPERA", "datatype": "BYTES", "shape": [1], "data": ["Grupo LATAM"]},
        {"name": "TIPOVUELO", "datatype": "BYTES", "shape": [1], "data": ["N"]},
        {"name": "MES", "datatype": "INT64", "shape": [1], "data": [7]},
    ]
}
JSON = {"content-type": "application/json"}
ERRORS: list[tuple[str, str, dict[str, Any], int]] = [
    ("POST", "/predict", {"json": {"flights": [MINIMAL]}}, 500),
    ("POST", "/v2/models/delay-minimal/infer", {"json": OIP}, 500),
    ("POST", "/predict", {"content": b"{", "headers": JSON}, 400),
    ("POST", "/predict", {"content": b"\xff\xfe", "headers": JSON}, 400),
    ("POST", "/predict", {"json": {"flights": [{**MINIMAL, "MES": 13}]}}, 400),
    ("POST", "/predict", {"json": {"flights": [{**MINIMAL, "OPERA": ["x"]}]}}, 400),
    ("POST", "/predict?proba=maybe", {"json": {"flights": [MINIMAL]}}, 400),
    ("POST", "/predict", {"content": b"x" * 1_100_000, "headers": JSON}, 413),
    ("POST", "/predict", {"content": b"{}", "headers": {"content-type": "text/xml"}}, 415),
    ("GET", "/predict", {}, 405),
    ("GET", "/../../etc/passwd", {}, 404),
    ("GET", "/v2/models/..%2F..%2Fetc%2Fpasswd", {}, 404),
    ("GET", "/v2/models/delay-minimal/versions/0", {}, 404),
    ("POST", "/v2/models/delay-full/infer", {"content": b"[]", "headers": JSON}, 400),
    (
        "POST",
        "/v2/models/delay-full/infer",
        {"content": b"{}", "headers": {**JSON, "inference-header-content-length": b"\xb2"}},
        400,
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    ERRORS,
    ids=[f"{status}-{method} {path[:40]}" for method, path, _, status in ERRORS],
)
def test_error_answers_leak_no_trace_or_path(
    failing_client: TestClient, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    response = failing_client.request(method, path, **kwargs)
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"] == "application/json"
    for leak in LEAKS:
        assert leak not in response.text, (leak, response.text[:300])
    for name, value in response.headers.items():
        assert "/work/" not in value, (name, value)
        assert "site-packages" not in value, (name, value)


def test_a_503_before_the_models_load_leaks_nothing() -> None:
    client = TestClient(create_app(Settings(models_dir=MODELS_DIR)))  # no lifespan: no models
    for path in ("/v2/models/delay-minimal", "/v2/health/ready"):
        response = client.get(path)
        assert response.status_code == 503
        assert not [leak for leak in LEAKS if leak in response.text]


def test_there_is_no_admin_surface() -> None:
    """Every route is a documented, read-only or scoring endpoint; nothing debugs or reloads."""
    app = create_app(Settings(models_dir=MODELS_DIR))
    assert app.debug is False
    paths = {route.path for route in ROUTES if isinstance(route, Route)}
    for path in paths:
        assert not re.search(r"admin|debug|reload|shutdown|config|env|docs", path), path
    conf = (ROOT / "gunicorn.conf.py").read_text()
    assert re.search(r"^control_socket_disable = \(?\s*True", conf, re.MULTILINE)
    assert not re.search(r"^reload = True", conf, re.MULTILINE)


def test_errors_quote_client_values_short_and_flat() -> None:
    from app.errors import SHOWN_CHARS, InvalidFlight, shown

    deep: Any = 1
    for _ in range(5_000):
        deep = [deep]
    assert shown(deep) == "<a list of 1 item>"
    assert shown({"a": deep, "b": 2}) == "<an object of 2 fields>"
    assert shown([2, 2, "x"]) == [2, 2, "x"]
    assert shown(list(range(50))) == "<a list of 50 items>"
    assert shown("z" * 10_000) == "z" * SHOWN_CHARS + "…"
    assert shown(None) is None
    assert shown(3.5) == 3.5
    error = InvalidFlight(0, "x" * 10_000, "unknown field", deep)
    assert len(str(error)) < 200
    assert error.to_json()["detail"]["value"] == "<a list of 1 item>"

from __future__ import annotations

from pathlib import Path

import pytest

from app import cpus
from app.server.protocol import Limits
from app.settings import DEFAULT_MODELS_DIR, Settings


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.models_dir == DEFAULT_MODELS_DIR
    assert settings.ort_threads == 1


def test_the_in_flight_bound_and_the_hold_have_one_documented_default() -> None:
    """app.server.protocol's Limits and the settings agree, and the README states those values."""
    default = Settings().max_in_flight
    assert Limits().max_in_flight == default
    assert Limits().hold_early_retries is Settings().hold_early_retries is True
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert f"| `MAX_IN_FLIGHT` | {default} |" in readme
    assert "| `HOLD_EARLY_RETRIES` | 1 |" in readme
    assert Settings.from_env({"HOLD_EARLY_RETRIES": "off"}).hold_early_retries is False


def test_the_crowded_bound_has_one_documented_default() -> None:
    settings, limits = Settings(), Limits()
    assert (limits.crowded_connections, limits.crowded_in_flight, limits.crowded_window) == (
        settings.crowded_connections,
        settings.crowded_in_flight,
        settings.crowded_window,
    )
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert f"| `CROWDED_CONNECTIONS` | {settings.crowded_connections} |" in readme
    assert f"| `CROWDED_IN_FLIGHT` | {settings.crowded_in_flight} |" in readme
    assert f"| `CROWDED_WINDOW` | {settings.crowded_window} |" in readme
    crowded = Settings.from_env(
        {"CROWDED_CONNECTIONS": "300", "CROWDED_IN_FLIGHT": "8", "CROWDED_WINDOW": "5"}
    )
    assert (crowded.crowded_connections, crowded.crowded_in_flight) == (300, 8)
    assert crowded.crowded_window == 5


def test_environment_overrides() -> None:
    settings = Settings.from_env(
        {
            "MODELS_DIR": "/srv/models",
            "MAX_BODY_BYTES": "2048",
            "MAX_FLIGHTS": "10",
            "ORT_THREADS": "2",
        }
    )
    assert settings == Settings(Path("/srv/models"), 2048, 10, 2)


@pytest.mark.parametrize(
    ("name", "value", "accepts"),
    [
        ("MAX_FLIGHTS", "ten", "a positive integer"),
        ("MAX_FLIGHTS", "0", "a positive integer"),
        ("WORKERS", "abc", "a positive integer"),
        ("WORKERS", "-2", "a positive integer"),
        ("WORKERS", "²", "a positive integer"),
        ("MAX_BODY_BYTES", "1e6", "a positive integer"),
        ("ORT_THREADS", "1.5", "a positive integer"),
        ("MAX_HEAD_BYTES", "x", "a positive integer"),
        ("HEAD_TIMEOUT", "x", "a positive integer"),
        ("BODY_TIMEOUT", "x", "a positive integer"),
        ("TABULATE_MINIMAL", "maybe", "a boolean"),
        ("MICROBATCH", "maybe", "a boolean"),
        ("HOLD_EARLY_RETRIES", "maybe", "a boolean"),
        ("CROWDED_CONNECTIONS", "many", "a positive integer"),
        ("CROWDED_IN_FLIGHT", "0", "a positive integer"),
        ("CROWDED_WINDOW", "0.5", "a positive integer"),
        ("CROWDED_WINDOW", "0", "a positive integer"),
        ("LOG_LEVEL", "loud", "one of debug, info"),
        ("BIND", "localhost", "HOST:PORT"),
        ("BIND", "0.0.0.0:99999", "HOST:PORT"),
        ("GRPC_BIND", "8001", "HOST:PORT"),
        ("GRPC_MAX_STREAMS", "0", "a positive integer"),
    ],
)
def test_a_bad_value_names_the_variable_and_what_it_accepts(
    name: str, value: str, accepts: str
) -> None:
    with pytest.raises(ValueError, match=f"^{name}='{value}': expected {accepts}") as error:
        Settings.from_env({name: value})
    assert "\n" not in str(error.value)


def test_workers_default_to_the_cpus_this_process_may_use() -> None:
    assert Settings.from_env({}).workers == cpus.available()
    assert Settings.from_env({"WORKERS": "3"}).workers == 3


@pytest.mark.parametrize("bind", ["0.0.0.0:8000", "127.0.0.1:0", "[::1]:8080", "unix:/run/s"])
def test_bind_forms(bind: str) -> None:
    assert Settings.from_env({"BIND": bind}).bind == bind


def test_grpc_is_on_port_8001_unless_turned_off() -> None:
    assert Settings.from_env({}).grpc_bind == "0.0.0.0:8001"
    assert Settings.from_env({"GRPC_BIND": "127.0.0.1:9001"}).grpc_bind == "127.0.0.1:9001"
    assert Settings.from_env({"GRPC_BIND": ""}).grpc_bind == ""


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Settings().max_flights = 5  # type: ignore[misc]

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import DEFAULT_MODELS_DIR, Settings


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.models_dir == DEFAULT_MODELS_DIR
    assert settings.ort_threads == 1


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
    ("value", "message"), [("ten", "is not an integer"), ("0", "must be positive")]
)
def test_bad_numbers_name_the_variable(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"MAX_FLIGHTS='{value}' {message}"):
        Settings.from_env({"MAX_FLIGHTS": value})


def test_bad_boolean_names_the_variable() -> None:
    with pytest.raises(ValueError, match="TABULATE_MINIMAL='maybe' is not a boolean"):
        Settings.from_env({"TABULATE_MINIMAL": "maybe"})


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Settings().max_flights = 5  # type: ignore[misc]

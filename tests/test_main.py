"""app.main: the app's state container."""

from __future__ import annotations

import pytest
from starlette.datastructures import State
from starlette.testclient import TestClient

from app.main import AttributeState, create_app
from app.settings import Settings
from tests.conftest import MODELS_DIR


def test_a_predict_request_reads_the_state_as_plain_attributes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No read of the app's state goes through Starlette's `__getattr__` (its slow path)."""
    app = create_app(Settings(models_dir=MODELS_DIR))

    def refused(self: State, key: str) -> None:
        raise AssertionError(f"app.state.{key} read through State.__getattr__")

    with TestClient(app) as client:
        monkeypatch.setattr(State, "__getattr__", refused)
        flight = {"OPERA": "Grupo LATAM", "TIPOVUELO": "N", "MES": 3}
        assert client.post("/predict", json={"flights": [flight]}).status_code == 200


@pytest.mark.parametrize("kind", [State, AttributeState])
def test_values_are_set_replaced_and_deleted_as_in_starlettes_state(kind: type[State]) -> None:
    state = kind()
    state.value = 1
    state.value = 2
    assert state.value == 2
    del state.value
    with pytest.raises(AttributeError):
        _ = state.value
    with pytest.raises(KeyError):  # Starlette's own answer to deleting what is not there
        del state.value

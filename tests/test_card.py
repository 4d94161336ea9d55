"""export.card: what a model card says of a model's inputs."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from app.inference.features import FeatureEncoder, Vocabulary
from app.inference.model import CONTRACT_INPUTS, MODEL_NAMES
from app.settings import DEFAULT_MODELS_DIR
from export.card import model_inputs


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_inputs_are_the_contract_even_when_the_encoder_ignores_the_schedule(name: str) -> None:
    """A challenger that knows only TIPOVUELO (the gate test on real data) still gets a card:
    the gate, not a KeyError, refuses it."""
    vocabulary = Vocabulary.fit(np.array(["I", "N", "I", "N"]), np.array([1, 0, 0, 1]))
    encoder = FeatureEncoder(("TIPOVUELO",), {"TIPOVUELO": vocabulary})
    inputs = model_inputs(name, ["Grupo LATAM", "Sky Airline"], encoder)
    assert [(item["name"], item["datatype"]) for item in inputs] == list(CONTRACT_INPUTS[name])
    assert all(item.get("known", []) == [] for item in inputs)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_the_committed_cards_inputs_are_what_their_encoders_give(name: str) -> None:
    card = orjson.loads((DEFAULT_MODELS_DIR / f"{name}.json").read_bytes())
    encoder = FeatureEncoder.from_json(card["encoder"])
    operators = next(item["allowed"] for item in card["inputs"] if item["name"] == "OPERA")
    assert model_inputs(name, operators, encoder) == card["inputs"]


def test_the_departure_names_the_years_the_service_accepts() -> None:
    """The card (in the OIP model metadata) names the years a departure may be in, which the
    validator bounds by the calendar's exact years: the calendar itself runs a year longer."""
    card = orjson.loads((DEFAULT_MODELS_DIR / "delay-full.json").read_bytes())
    encoder = FeatureEncoder.from_json(card["encoder"])
    assert encoder.calendar is not None
    first, last = encoder.calendar.exact_years
    departure = next(item for item in card["inputs"] if item["name"] == "Fecha-I")
    assert departure["description"].endswith(f"; its year from {first} to {last}")
    assert str(encoder.calendar.holidays[-1]).startswith(str(last + 1))

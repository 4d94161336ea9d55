"""The audit scripts' shared step: a committed card's served recipe, as the export fitted it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from train.candidates import CANDIDATES
from train.evaluate import Recipe


def load_card(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(Path(f"models/{name}.json").read_text())
    return loaded


def served_recipe(served: dict[str, Any]) -> Recipe:
    candidate = next(c for c in CANDIDATES if c.name == served["model"]["estimator"])
    return Recipe(
        candidate.name,
        candidate.build,
        served["model"]["params"],
        tuple(served["encoder"]["groups"]),
        served["model"]["half_life_months"],
    )

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette

from app.inference.model import FULL_MODEL, MINIMAL_MODEL
from app.main import create_app
from app.settings import Settings
from benchmarks.asgi import Message, request_caller, started
from benchmarks.noop_app import create_app as create_noop_app

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
SIZES = (1, 100, 1000)
JSON = {"content-type": "application/json"}


def _card(name: str) -> dict[str, Any]:
    card: dict[str, Any] = orjson.loads((MODELS_DIR / f"{name}.json").read_bytes())
    return card


def _known(card: dict[str, Any], name: str) -> list[str]:
    item = next(i for i in card["inputs"] if i["name"] == name)
    return list(item.get("allowed") or item["known"])


def make_flights(count: int, schedule: bool, seed: int = 0) -> list[dict[str, Any]]:
    """Valid flights spread over the model's vocabulary: no two bodies the same cache entry."""
    rng = random.Random(seed)
    card = _card(FULL_MODEL if schedule else MINIMAL_MODEL)
    operators = _known(card, "OPERA")
    flights: list[dict[str, Any]] = []
    for _ in range(count):
        month = rng.randint(1, 12)
        flight: dict[str, Any] = {
            "OPERA": rng.choice(operators),
            "TIPOVUELO": rng.choice("IN"),
            "MES": month,
        }
        if schedule:
            flight |= {
                "Fecha-I": f"2017-{month:02d}-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:{rng.choice((0, 15, 30, 45)):02d}:00",
                "Des-I": rng.choice(_known(card, "Des-I")),
                "Emp-I": rng.choice(_known(card, "Emp-I")),
                "Vlo-I": str(rng.randint(1, 9999)),
            }
        flights.append(flight)
    return flights


def predict_body(contract: str, size: int) -> bytes:
    """A /predict body of `size` synthetic flights of the contract."""
    return orjson.dumps({"flights": make_flights(size, contract == "full")})


def noop_caller() -> Callable[[], list[Message]]:
    """The framework ceiling: one minimal flight's /predict body into a Starlette app that only
    reads it (benchmarks/noop_app.py)."""
    return request_caller(
        create_noop_app(), "POST", "/predict", predict_body("minimal", 1), headers=JSON
    )


def ok_body(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON body of an in-process call's 200 (anything else fails the benchmark)."""
    assert messages[0]["status"] == 200, messages
    body: dict[str, Any] = orjson.loads(messages[1]["body"])
    return body


def on_the_calling_thread(settings: Settings) -> Settings:
    """`settings` with batches scored and OIP bodies decoded on the calling thread: no
    OFFLOAD_FLIGHTS or OFFLOAD_BYTES hand-off to the batch thread, which a synchronous
    in-process call cannot wait for (tests/test_asgi.py runs every kind of request timed here)."""
    return replace(settings, offload_flights=1_000_000, offload_bytes=10**9)


def in_process_settings() -> Settings:
    """The committed models, served on the calling thread."""
    return on_the_calling_thread(Settings(models_dir=MODELS_DIR))


def infer_body(size: int) -> bytes:
    """An OIP REST JSON request of `size` minimal flights for delay-minimal."""
    flights = make_flights(size, False)
    return orjson.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": "INT64" if name == "MES" else "BYTES",
                    "shape": [size],
                    "data": [flight[name] for flight in flights],
                }
                for name in ("OPERA", "TIPOVUELO", "MES")
            ]
        }
    )


@pytest.fixture(scope="session")
def app() -> Iterator[Starlette]:
    """The service app with its models loaded, its lifespan run in this thread as a worker runs
    it (`in_process_settings`): these timings are the request path's CPU, prediction observers
    included."""
    with started(create_app(in_process_settings())) as app:
        yield app

"""Before any timing: every server gives the service's labels for the same flights.

The flights are the minimal model's whole domain (every airline x both flight types x 12
months: 552 with 23 airlines) and a sample of full-schedule flights from the wrk bodies. The
expected labels are the service's own, computed in this process by the project's ModelSet as
served by default (the minimal model from its table, itself checked equal to onnxruntime by
tests/test_model.py). Each flight is one request, on the route the variant is timed on.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from app.inference.flights import FLIGHT_TYPES, FlightValidator
from app.inference.model import ModelSet
from benchmarks.peers.bodies import flights, infer_body, model_name


@dataclass(frozen=True, slots=True)
class Case:
    flight: dict[str, Any]
    label: int


@dataclass(frozen=True, slots=True)
class Outcome:
    flights: int
    mismatches: tuple[str, ...]
    """One line per flight whose label differs (or whose request failed), first few only."""
    differing: int

    @property
    def ok(self) -> bool:
        return self.differing == 0


def cases(models_dir: Path, full_bodies: Path, full_sample: int) -> list[Case]:
    """The domain and the first `full_sample` full-schedule flights, with the service's labels."""
    models = ModelSet.load(models_dir)
    domain = [
        {"OPERA": operator, "TIPOVUELO": kind, "MES": month}
        for operator in models.operators
        for kind in FLIGHT_TYPES
        for month in range(1, 13)
    ]
    sample = flights(full_bodies)[:full_sample]
    raw = [*domain, *sample]
    validator = FlightValidator(models.operators, len(raw))
    labels = np.concatenate(
        [
            np.asarray(models.predict(validator.batch(part)).labels)
            for part in (domain, sample)
            if part
        ]
    )
    return [Case(flight, int(label)) for flight, label in zip(raw, labels, strict=True)]


def check(url: str, route: str, cases: Sequence[Case], shown: int = 5) -> Outcome:
    """`route` is "predict" (the service's body on POST /predict) or "oip" (an infer request
    on POST /v2/models/<name>/infer)."""
    address = urlsplit(url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=30)
    mismatches: list[str] = []
    differing = 0
    try:
        for case in cases:
            got = _label(connection, route, case.flight)
            if got != case.label:
                differing += 1
                if len(mismatches) < shown:
                    mismatches.append(f"{json.dumps(case.flight)}: {got!r}, expected {case.label}")
    finally:
        connection.close()
    return Outcome(len(cases), tuple(mismatches), differing)


def _label(connection: http.client.HTTPConnection, route: str, flight: dict[str, Any]) -> Any:
    if route == "predict":
        path, body = "/predict", {"flights": [flight]}
    else:
        path, body = f"/v2/models/{model_name(flight)}/infer", infer_body(flight)
    try:
        connection.request(
            "POST", path, json.dumps(body), {"Content-Type": "application/json"}
        )  # fmt: skip
        answer = connection.getresponse()
        text = answer.read()
    except (OSError, http.client.HTTPException) as error:
        connection.close()  # reconnects on the next request
        return f"request failed: {error}"
    if answer.status != 200:
        return f"HTTP {answer.status}: {text[:200]!r}"
    document = json.loads(text)
    if route == "predict":
        (label,) = document["predict"]
        return label
    (output,) = [out for out in document["outputs"] if out["name"] == "label"]
    (label,) = np.asarray(output["data"]).reshape(-1).tolist()
    return label

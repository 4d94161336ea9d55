"""Open Inference Protocol bodies of the same flights as the wrk `/predict` bodies.

`oip-minimal.jsonl` and `oip-full.jsonl` hold, line for line, the flights of `minimal.jsonl`
and `full.jsonl` (benchmarks.bodies) as infer requests: one tensor per field, shape [1], in
JSON, which the service, MLServer and Triton all take as they are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.inference.flights import MINIMAL_FIELDS, SCHEDULE_FIELDS

FILES = {"oip-minimal.jsonl": "minimal.jsonl", "oip-full.jsonl": "full.jsonl"}
"""Each OIP body file and the /predict body file it is made from."""
INTEGER_FIELDS = frozenset({"MES"})


def model_name(flight: Mapping[str, Any]) -> str:
    """The OIP model a flight goes to: the full-schedule one when it carries its schedule."""
    return "delay-full" if SCHEDULE_FIELDS[0] in flight else "delay-minimal"


def infer_body(flight: Mapping[str, Any]) -> dict[str, Any]:
    """One flight as an infer request, its inputs in the contract's field order."""
    fields = [name for name in (*MINIMAL_FIELDS, *SCHEDULE_FIELDS) if name in flight]
    return {
        "inputs": [
            {
                "name": name,
                "datatype": "INT64" if name in INTEGER_FIELDS else "BYTES",
                "shape": [1],
                "data": [flight[name] if name in INTEGER_FIELDS else str(flight[name])],
            }
            for name in fields
        ]
    }


def flights(path: Path) -> list[dict[str, Any]]:
    """The single flight of each body of a wrk body file."""
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            (flight,) = json.loads(line)["flights"]
            found.append(flight)
    return found


def write(wrk_dir: Path) -> list[Path]:
    """Writes every OIP body file next to the body file it is made from."""
    written = []
    for name, source in FILES.items():
        lines = [
            json.dumps(infer_body(f), separators=(",", ":")) for f in flights(wrk_dir / source)
        ]
        (wrk_dir / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        written.append(wrk_dir / name)
    return written

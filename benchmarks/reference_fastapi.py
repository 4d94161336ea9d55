"""REFERENCE ONLY, never served by the product: what a data scientist ships first.

FastAPI + a pydantic model of the request + pandas (`pd.DataFrame`, `pd.get_dummies`, reindex to
the training columns) + a pickled scikit-learn pipeline: the challenge's class-balanced logistic
regression on one-hot OPERA/TIPOVUELO/MES. `make compare` serves it under the service's own
gunicorn config (`benchmarks.reference_fastapi:create_app()`) to show what the product's design
buys over the obvious first version on the same machine, same bodies, same load.

Train the pickle from the real data, then point REFERENCE_MODEL at it:

    python -m benchmarks.reference_fastapi --data ../shared/data/dataset_SCL.csv.gz \
        --out build/reference/model.pkl
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "build" / "reference" / "model.pkl"
FEATURES = ["OPERA", "TIPOVUELO", "MES"]


class Flight(BaseModel):
    OPERA: str
    TIPOVUELO: Literal["I", "N"]
    MES: Annotated[int, Field(ge=1, le=12)]


class Flights(BaseModel):
    flights: list[Flight]


def one_hot(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The notebook's encoding: get_dummies, then the training columns in training order."""
    dummies = pd.get_dummies(frame[FEATURES], columns=FEATURES)
    return dummies.reindex(columns=list(columns), fill_value=0)


def create_app() -> FastAPI:
    """Loads the pickle named by REFERENCE_MODEL (default build/reference/model.pkl)."""
    path = Path(os.environ.get("REFERENCE_MODEL") or DEFAULT_MODEL)
    with path.open("rb") as file:
        model: Any = pickle.load(file)  # our own file, written by train() below
    columns = [str(name) for name in model.feature_names_in_]
    operators = {name.removeprefix("OPERA_") for name in columns if name.startswith("OPERA_")}
    app = FastAPI(title="REFERENCE: FastAPI + pandas + pickle (not the product)")

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: Exception) -> JSONResponse:
        # The challenge's contract answers 400, not FastAPI's 422.
        return JSONResponse({"detail": str(error)}, status_code=400)

    # async def, as the challenge's template declares it: no thread-pool hop per request.
    @app.post("/predict")
    async def predict(body: Flights) -> dict[str, list[int]]:
        frame = pd.DataFrame([flight.model_dump() for flight in body.flights])
        unknown = set(frame["OPERA"]) - operators
        if unknown:
            raise HTTPException(status_code=400, detail=f"unknown OPERA {sorted(unknown)}")
        labels = model.predict(one_hot(frame, columns))
        return {"predict": [int(label) for label in labels]}

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    return app


def train(data: Path, out: Path) -> int:
    """Fits the challenge's baseline on every row and pickles it; returns the column count."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from train.data import load

    table = load(data).table
    frame = table[FEATURES].assign(MES=table["MES"].astype(int))
    features = pd.get_dummies(frame, columns=FEATURES)
    pipeline = Pipeline([("logreg", LogisticRegression(class_weight="balanced", max_iter=2000))])
    pipeline.fit(features, table["delay_15"])
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with partial.open("wb") as file:
        pickle.dump(pipeline, file)
    partial.replace(out)  # make never sees a half-written pickle as up to date
    return int(features.shape[1])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reference_fastapi")
    parser.add_argument("--data", type=Path, required=True, help="dataset_SCL.csv(.gz)")
    parser.add_argument("--out", type=Path, default=DEFAULT_MODEL)
    args = parser.parse_args(argv)
    try:
        columns = train(args.data, args.out)
    except Exception as error:  # DataError, OSError: one line, not a traceback
        print(f"reference: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} (class-balanced logistic regression on {columns} one-hot columns)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

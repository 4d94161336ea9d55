"""`python -m app.inference.check_models DIR`: is this model directory fit to go live?

Run before models are served: by `make check-models MODELS_DIR=...` ahead of a reload
(docs/serving.md), by the image build on the models it ships, and by the retrain workflow on the
models it proposes. It runs in the serving image, which has onnxruntime but no scikit-learn:

- the directory passes what start-up and a SIGHUP reload do, by the same code
  (app.server.reload.take_snapshot): a directory holding the cards, each card and its ONNX file
  (regular files: a FIFO is refused unopened), the sha256 the card holds, an onnxruntime session,
  the card fitting its model (app.inference.model.fit_problems: its name, its version the first
  12 hex of that sha256, a threshold strictly inside (0, 1) and inside the range of the card's
  sample probabilities, which run from the lowest training probability to the highest (outside
  it every flight would get the same label), its inputs those of its contract and of the
  graph), the warm-up;
- parity: the flights the export sampled into the card, each with scikit-learn's probability,
  get that probability (within PARITY_TOLERANCE) and the same label from onnxruntime, through
  the served path (the request validator, then ModelSet.predict, the minimal model's table
  included).

One line per model, then a verdict; exit status 1 when anything failed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.errors import ModelLoadError, ServiceError
from app.inference.flights import FlightValidator
from app.inference.model import MODEL_NAMES, ModelSet, OnnxModel
from app.server.reload import take_snapshot

PARITY_TOLERANCE = 1e-4
"""The export's own limit (export.onnx.PARITY_TOLERANCE, there on every training row)."""


def check(models_dir: Path, threads: int = 1) -> tuple[list[str], list[str]]:
    """(what passed, what failed), one line each: the directory is fit when nothing failed."""
    with tempfile.TemporaryDirectory(prefix="check-models-") as scratch:
        try:
            release = take_snapshot(models_dir, Path(scratch), threads)
            models = ModelSet.load(release.snapshot, threads)
        except ModelLoadError as error:
            return [], [str(error)]
    passed: list[str] = []
    failed: list[str] = []
    validator = models.validator(1_000)
    for expected, model in zip(MODEL_NAMES, (models.minimal, models.full), strict=True):
        problems = _sample_problems(models, model, validator)
        if problems:
            failed += [f"{expected}: {problem}" for problem in problems]
        else:
            samples = len(model.card.raw["samples"])
            passed.append(
                f"{expected} {model.version}: loads and warms up, threshold "
                f"{model.threshold:.6f}, {samples} sample flights match within {PARITY_TOLERANCE:g}"
            )
    return passed, failed


def _sample_problems(models: ModelSet, model: OnnxModel, validator: FlightValidator) -> list[str]:
    """What the export's parity samples say against the served path (the card's own fit to its
    model is the loader's: app.inference.model.fit_problems)."""
    samples: Any = model.card.raw.get("samples")
    if not isinstance(samples, list) or len(samples) < 2:
        return ["the card holds no parity samples (export it again: export.card.SAMPLES)"]
    try:
        batch = validator.batch([sample["flight"] for sample in samples])
        expected = np.array([float(sample["proba"]) for sample in samples])
    except (ServiceError, KeyError, TypeError, ValueError) as error:
        return [f"unreadable parity samples: {error}"]
    if (batch.minimal if model.card.encoder.schedule else batch.full) is not None:
        return ["a parity sample is not a flight of this model's contract"]
    threshold = model.threshold
    problems = []
    served = models.predict(batch)
    actual = np.asarray(served.probabilities, dtype=np.float64)
    worst = int(np.argmax(np.abs(actual - expected)))
    if abs(actual[worst] - expected[worst]) > PARITY_TOLERANCE:
        problems.append(
            f"sample {worst}: onnxruntime gives {actual[worst]:.6f}, the export's scikit-learn "
            f"{expected[worst]:.6f} (limit {PARITY_TOLERANCE:g})"
        )
    clear = np.abs(expected - threshold) > PARITY_TOLERANCE
    flipped = np.flatnonzero(clear & (np.asarray(served.labels) != (expected >= threshold)))
    if flipped.size:
        problems.append(f"samples {flipped.tolist()} get another label than at export")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.inference.check_models", description=__doc__
    )
    parser.add_argument("models_dir", type=Path, help="the directory to check (a release)")
    args = parser.parse_args(argv)
    passed, failed = check(args.models_dir)
    for line in passed:
        print(f"ok    {line}")
    for line in failed:
        print(f"FAIL  {line}")
    if failed:
        print(f"{args.models_dir}: NOT fit to serve ({len(failed)} problems)")
        return 1
    print(f"{args.models_dir}: fit to serve")
    return 0


if __name__ == "__main__":
    sys.exit(main())

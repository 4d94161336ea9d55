"""`python -m export --data FILE --models-dir DIR --reports-dir DIR`: train, select, export.

Nothing is written unless every model passes its parity check, so a failed run leaves the
previous models in place.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from app.features import FeatureEncoder
from app.model import FULL_MODEL, MINIMAL_MODEL
from export.card import METRICS_FILE, build_card, metrics_summary, with_profile, with_samples
from export.onnx import ParityError, check_parity, convert
from train.candidates import CANDIDATES
from train.data import DEFAULT_DATA, DataError, Dataset, load
from train.evaluate import ContractEvaluation, evaluate_contract
from train.report import write_report

CONTRACT_MODELS = {"minimal": MINIMAL_MODEL, "full": FULL_MODEL}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--reports-dir", type=Path, default=Path("reports"))
    parser.add_argument(
        "--search",
        choices=("grid", "first"),
        default="grid",
        help="grid: every configuration of each candidate (the real run); first: only the "
        "first, for quick smoke runs on small data",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        dataset = load(args.data)
        evaluations, staged = train_and_convert(
            dataset, args.data.name, quick=args.search == "first"
        )
    except (DataError, ParityError) as error:
        print(f"export: {error}", file=sys.stderr)
        return 1
    args.models_dir.mkdir(parents=True, exist_ok=True)
    for name, (onnx_bytes, card) in staged.items():
        _write_atomically(args.models_dir / f"{name}.onnx", onnx_bytes)
        _write_atomically(
            args.models_dir / f"{name}.json", orjson.dumps(card, option=orjson.OPT_INDENT_2)
        )
    cards = {contract: staged[name][1] for contract, name in CONTRACT_MODELS.items()}
    report = write_report(evaluations, cards, args.reports_dir)
    metrics = orjson.dumps(metrics_summary(list(cards.values())), option=orjson.OPT_INDENT_2)
    _write_atomically(args.reports_dir / METRICS_FILE, metrics)
    for card in cards.values():
        cv = card["metrics"]["cv_grouped_by_date"]
        print(
            f"{card['name']} {card['version']}: {card['model']['estimator']}, CV ROC-AUC "
            f"{cv['roc_auc']:.4f}, ECE {cv['ece']:.4f}, threshold {card['threshold']:.3f}"
        )
    print(f"wrote {args.models_dir}/ and {report} in {time.perf_counter() - started:.0f} s")
    return 0


def train_and_convert(
    dataset: Dataset,
    data_name: str,
    quick: bool = False,
) -> tuple[dict[str, ContractEvaluation], dict[str, tuple[bytes, dict[str, Any]]]]:
    labels = dataset.labels
    months = dataset.table["Fecha-I"].dt.month.to_numpy()
    operators = sorted(dataset.table["OPERA"].unique().tolist())
    data = {
        "file": data_name,
        "csv_sha256": dataset.csv_sha256,
        "rows": len(labels),
        "delay_rate": round(float(labels.mean()), 6),
    }
    candidates = [replace(c, grid=c.grid[:1]) for c in CANDIDATES] if quick else list(CANDIDATES)
    evaluations = {}
    staged = {}
    for contract, name in CONTRACT_MODELS.items():
        schedule = contract == "full"
        flights = dataset.flights(schedule)
        evaluation = evaluate_contract(contract, flights, labels, dataset.dates, months, candidates)
        chosen = evaluation.chosen
        encoder = FeatureEncoder.fit(flights, labels.tolist(), schedule)
        features = encoder.encode(flights)
        candidate = next(c for c in candidates if c.name == chosen.name)
        estimator = candidate.build(evaluation.features, chosen.params).fit(features, labels)
        onnx_bytes = convert(estimator, features.shape[1])
        parity = check_parity(onnx_bytes, estimator, features, chosen.cv.threshold)
        evaluations[contract] = evaluation
        card = build_card(name, evaluation, encoder, onnx_bytes, parity, operators, data)
        probabilities = estimator.predict_proba(features)[:, 1]
        staged[name] = (
            onnx_bytes,
            with_samples(with_profile(card, flights, probabilities), flights, probabilities),
        )
    return evaluations, staged


def _write_atomically(path: Path, content: bytes) -> None:
    """A serving worker that (re)loads mid-export sees the old file or the new, never half."""
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(content)
    os.replace(partial, path)


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())

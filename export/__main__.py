"""`python -m export --data FILE --models-dir DIR --reports-dir DIR [--gate]`: train, select,
export.

Nothing is written unless every model passes its parity check (and, with --gate, is not worse
than the model it would replace), so a failed run leaves the previous models in place.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from threadpoolctl import threadpool_limits

from app.inference.features import FeatureEncoder
from app.inference.flights import Columns
from export.card import METRICS_FILE, build_card, metrics_summary, with_profile, with_samples
from export.lean import LeanGraphError, served_onnx
from export.onnx import Calibrated, ParityError, check_parity, costs_per_row
from train.candidates import CANDIDATES, Candidate
from train.data import DEFAULT_DATA, DataError, Dataset, chilean_holidays, load
from train.evaluate import Recipe, ages_after, inner_folds
from train.metrics import Platt
from train.report import write_report
from train.select import (
    CONTRACT_MODELS,
    FORWARD,
    ContractEvaluation,
    contract_rows,
    evaluate_contract,
    recipe_from_card,
)


@dataclass(frozen=True)
class Staged:
    onnx: bytes
    card: dict[str, Any]


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
    parser.add_argument(
        "--gate",
        action="store_true",
        help="refuse to replace a model whose challenger scores worse on the forward months "
        "beyond the 95 %% interval",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        dataset = load(args.data)
        champions = {
            contract: recipe_from_card(args.models_dir / f"{name}.json")
            for contract, name in CONTRACT_MODELS.items()
        }
        evaluations, staged = train_and_convert(
            dataset, args.data.name, quick=args.search == "first", champions=champions
        )
    except (DataError, ParityError, LeanGraphError) as error:
        print(f"export: {error}", file=sys.stderr)
        return 1
    if args.gate:
        for notice in filter(None, map(gate_notice, evaluations.values())):
            print(f"export: gate: {notice}", file=sys.stderr)
        refusals = list(filter(None, map(gate_refusal, evaluations.values())))
        for refusal in refusals:
            print(f"export: gate: {refusal}", file=sys.stderr)
        if refusals:
            return 1
    args.models_dir.mkdir(parents=True, exist_ok=True)
    for name, item in staged.items():
        _write_atomically(args.models_dir / f"{name}.onnx", item.onnx)
        _write_atomically(
            args.models_dir / f"{name}.json", orjson.dumps(item.card, option=orjson.OPT_INDENT_2)
        )
    cards = {contract: staged[name].card for contract, name in CONTRACT_MODELS.items()}
    report = write_report(evaluations, cards, args.reports_dir)
    metrics = orjson.dumps(metrics_summary(list(cards.values())), option=orjson.OPT_INDENT_2)
    _write_atomically(args.reports_dir / METRICS_FILE, metrics)
    for card in cards.values():
        forward = card["metrics"]["forward"]
        print(
            f"{card['name']} {card['version']}: {card['model']['estimator']}, forward mean "
            f"ROC-AUC {forward['mean_roc_auc']:.4f} {forward['interval']}, threshold "
            f"{card['threshold']:.3f}"
        )
    # One thread does the work: its CPU time is about the wall time on a quiet core.
    print(
        f"wrote {args.models_dir}/ and {report} in {time.perf_counter() - started:.0f} s "
        f"({time.process_time():.0f} s of CPU)"
    )
    return 0


def gate_notice(evaluation: ContractEvaluation) -> str | None:
    """The gate lets a challenger through when it has no champion to compare it with (no model
    yet, or a card it cannot read or refit): said where the operator who asked for the gate
    looks, not only in the report."""
    if evaluation.champion is not None:
        return None
    return (
        f"{evaluation.contract}: no champion to compare the challenger with "
        f"({evaluation.champion_note}): it passes unchecked"
    )


def gate_refusal(evaluation: ContractEvaluation) -> str | None:
    """Why the challenger must not replace the champion, or None."""
    champion = evaluation.champion
    if champion is None:
        return None
    gap, low, high = evaluation.difference(evaluation.chosen, champion, FORWARD)
    if high < 0:
        return (
            f"{evaluation.contract}: challenger {evaluation.chosen.recipe.label} is worse than "
            f"champion {champion.recipe.label} on the forward months by {gap:+.4f} ROC-AUC "
            f"(95 % interval {low:+.4f}..{high:+.4f})"
        )
    return None


def train_and_convert(
    dataset: Dataset,
    data_name: str,
    quick: bool = False,
    champions: dict[str, tuple[Recipe | None, str]] | None = None,
) -> tuple[dict[str, ContractEvaluation], dict[str, Staged]]:
    labels = dataset.labels
    departure = dataset.table["Fecha-I"].to_numpy().astype("datetime64[m]")
    operators = sorted(dataset.table["OPERA"].unique().tolist())
    holidays = chilean_holidays()
    data = {
        "file": data_name,
        "csv_sha256": dataset.csv_sha256,
        "rows": len(labels),
        "first_departure": str(departure.min()),
        "last_departure": str(departure.max()),
        "delay_rate": round(float(labels.mean()), 6),
    }
    candidates: list[Candidate] = (
        [replace(c, grid=c.grid[:1], half_lives=c.half_lives[:1]) for c in CANDIDATES]
        if quick
        else list(CANDIDATES)
    )
    evaluations = {}
    staged = {}
    # One OpenMP thread per fit: on a shared machine two spinning threads ran 10x slower.
    with threadpool_limits(limits=1):
        for contract, name in CONTRACT_MODELS.items():
            evaluations[contract], staged[name] = _export_contract(
                contract, name, dataset, candidates, champions or {}, holidays, operators, data
            )
    return evaluations, staged


def _export_contract(
    contract: str,
    name: str,
    dataset: Dataset,
    candidates: list[Candidate],
    champions: dict[str, tuple[Recipe | None, str]],
    holidays: np.ndarray,
    operators: list[str],
    data: dict[str, Any],
) -> tuple[ContractEvaluation, Staged]:
    labels = dataset.labels
    flights, prepared = contract_rows(dataset, contract, holidays)
    columns = prepared.columns
    champion, note = champions.get(contract, (None, "no champion given"))

    def cost(recipes: Sequence[Recipe]) -> list[tuple[float, float]]:
        """The cost of the graph each would be served as (its Platt map's coefficients do not
        change it: a neutral one stands in)."""
        models = []
        for recipe in recipes:
            estimator, encoder = fit_all(recipe, columns, labels, holidays, prepared.months)
            matrix = encoder.encode_columns(columns)
            models.append((served_onnx(estimator, matrix.shape[1], Platt()), matrix))
        return costs_per_row(models)

    evaluation = evaluate_contract(contract, prepared, candidates, champion, cost)
    evaluation.champion_note = note
    chosen = evaluation.chosen
    print(f"{contract}: converting {chosen.recipe.label} fitted on all {len(labels):,} rows")
    fitted, encoder = fit_all(chosen.recipe, columns, labels, holidays, prepared.months)
    estimator = Calibrated(fitted, chosen.platt)
    served = encoder.encode_columns(columns)
    onnx_bytes = served_onnx(fitted, served.shape[1], chosen.platt, reference=served)
    parity = check_parity(onnx_bytes, estimator, served, chosen.threshold)
    card = build_card(name, evaluation, encoder, onnx_bytes, parity, operators, data)
    probabilities = estimator.predict_proba(served)[:, 1]
    card = with_samples(with_profile(card, flights, probabilities), flights, probabilities)
    return evaluation, Staged(onnx_bytes, card)


def fit_all(
    recipe: Recipe, columns: Columns, labels: np.ndarray, holidays: np.ndarray, months: np.ndarray
) -> tuple[Any, FeatureEncoder]:
    """The recipe fitted on every row (rate columns out of fold, as in each forward fold; a
    recency weighting counts each row's age to the month after the data)."""
    encoder = FeatureEncoder.fit(columns, labels, recipe.groups, holidays)
    features = encoder.encode_training(columns, labels, inner_folds(columns))
    return recipe.fit(features, labels, ages_after(months)), encoder


def _write_atomically(path: Path, content: bytes) -> None:
    """A serving worker that (re)loads mid-export sees the old file or the new, never half."""
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(content)
    os.replace(partial, path)


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())

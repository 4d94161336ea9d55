"""Who the served models serve well: their forward predictions by airline, flight type and
whether a flight is new.

    python -m train.slices --data ../shared/data/dataset_SCL.csv.gz --models-dir models --out reports

An airline's operations system sees its own flights only, so the ranking it meets is the
model's ROC-AUC among that airline's flights; the pooled figure of reports/model.md also ranks
airlines against one another, which no single airline's alerts benefit from. Each served recipe
(read from its card, as the export's gate reads the champion's) and the contract's baseline are
refitted on the forward folds `make export` judges them on, and each slice pools the forward
months: ROC-AUC with a day-bootstrap 95 % interval, the served model's gain over the baseline
(paired: the same resampled days), the delay rate beside the mean predicted probability, and the
alert rate, precision and recall at each month's threshold (fitted on the months before it).
Flights whose flight number (and route) no earlier month held show how the fallback of unseen
values scores forward. Reported, never chosen on: a choice made per slice after reading this
would be a forking path.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from app.inference.features import hierarchy_keys
from app.inference.flights import Columns
from train.data import DEFAULT_DATA, DataError, Dataset, chilean_holidays, load
from train.evaluate import (
    BOOTSTRAP,
    SEED,
    Fold,
    Forward,
    day_bootstrap_aucs,
    encode_fold,
    forward_folds,
    interval,
    run_forward,
)
from train.provenance import code_revision
from train.select import (
    CONTRACT_GROUPS,
    CONTRACT_MODELS,
    FORWARD,
    baseline_recipe,
    card_recipe,
    contract_rows,
    read_card,
)

MIN_FLIGHTS = 1000
"""An airline with fewer forward flights is pooled into `other airlines`: a few hundred flights
over a few dozen days give a ROC-AUC interval too wide to say anything."""
OTHER_AIRLINES = "other airlines"


@dataclass(frozen=True, slots=True)
class Pooled:
    """A forward's months pooled: one entry per flight scored forward."""

    rows: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray
    """calibrated by the Platt map of the months before each flight's month, as served"""
    alerts: np.ndarray
    days: np.ndarray


@dataclass(frozen=True, slots=True)
class SliceFigures:
    slice: str
    flights: int
    delay_rate: float
    mean_probability: float
    alert_rate: float
    precision: float | None
    recall: float | None
    roc_auc: float | None
    roc_auc_interval: tuple[float, float] | None
    baseline_roc_auc: float | None
    gain_interval: tuple[float, float] | None
    """served minus baseline, the same resampled days for both"""


def pooled(forward: Forward, roles: Sequence[str] = FORWARD) -> Pooled:
    chosen = [k for k, fold in enumerate(forward.folds) if fold.role in roles]
    alerts = [forward.probabilities[k] >= forward.threshold_before(k) for k in chosen]
    return Pooled(
        np.concatenate([forward.folds[k].test_rows for k in chosen]),
        np.concatenate([forward.labels[k] for k in chosen]),
        np.concatenate([forward.calibrated[k] for k in chosen]),
        np.concatenate(alerts),
        np.concatenate([forward.days[k] for k in chosen]),
    )


def slice_figures(name: str, served: Pooled, baseline: Pooled, mask: np.ndarray) -> SliceFigures:
    """One slice's figures; its ROC-AUCs are None where it holds flights of one outcome only."""
    labels, alerts = served.labels[mask], served.alerts[mask]
    days = served.days[mask]
    both_outcomes = 0 < labels.sum() < len(labels)
    auc = base = None
    auc_interval = gain = None
    if both_outcomes:
        auc = float(roc_auc_score(labels, served.probabilities[mask]))
        base = float(roc_auc_score(labels, baseline.probabilities[mask]))
        # fresh generators of one seed: both see the same resampled days, so the gain is paired
        ours = day_bootstrap_aucs(labels, served.probabilities[mask], days, _rng(), BOOTSTRAP)
        theirs = day_bootstrap_aucs(labels, baseline.probabilities[mask], days, _rng(), BOOTSTRAP)
        auc_interval, gain = interval(ours), interval(ours - theirs)
    return SliceFigures(
        name,
        int(mask.sum()),
        float(labels.mean()),
        float(served.probabilities[mask].mean()),
        float(alerts.mean()),
        float(labels[alerts].mean()) if alerts.any() else None,
        float(alerts[labels == 1].mean()) if labels.any() else None,
        auc,
        auc_interval,
        base,
        gain,
    )


def _rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


def slices(
    airlines: np.ndarray, flight_types: np.ndarray, rows: np.ndarray
) -> dict[str, np.ndarray]:
    """Masks over the pooled flights: every flight; each airline with at least MIN_FLIGHTS of
    them, largest first, and the others together; each flight type."""
    airline = airlines[rows]
    names, counts = np.unique(airline, return_counts=True)
    large = [str(n) for n, c in sorted(zip(names, counts, strict=True), key=lambda item: -item[1])
             if c >= MIN_FLIGHTS]  # fmt: skip
    masks = {"all flights": np.ones(len(rows), dtype=bool)}
    masks |= {name: airline == name for name in large}
    others = ~np.isin(airline, large)
    if others.any():
        masks[OTHER_AIRLINES] = others
    kind = flight_types[rows]
    masks |= {f"TIPOVUELO {value}": kind == value for value in sorted(set(kind.tolist()))}
    return masks


def novelty(columns: Columns, folds: Sequence[Fold]) -> dict[str, np.ndarray]:
    """Per row of the data: whether the training months of the fold that tests it lacked its
    flight number, so the model scored it through the fallback (flight number -> route ->
    airline) rather than by its own delay rate, and whether they lacked its route too, so it
    was scored by its airline (a new route under a flight number seen before is scored by that
    number). Nothing for flights without a schedule."""
    if columns.departure is None:
        return {}
    flight, route, _ = (np.asarray(keys) for keys in hierarchy_keys(columns))
    new_flight = np.zeros(len(flight), dtype=bool)
    new_route = np.zeros(len(route), dtype=bool)
    for fold in folds:
        tested, trained = fold.test_rows, fold.train_rows
        new_flight[tested] = ~np.isin(flight[tested], flight[trained])
        new_route[tested] = ~np.isin(route[tested], route[trained])
    return {
        "flight number seen in earlier months": ~new_flight,
        "flight number new (scored by its route or airline)": new_flight,
        "flight number and route new (scored by its airline)": new_flight & new_route,
    }


def contract_slices(dataset: Dataset, contract: str, card: Path) -> dict[str, Any]:
    """The served recipe of `card` and the contract's baseline, refitted forward, sliced."""
    card_json = read_card(card)
    recipe, note = card_recipe(card_json, card.name)
    if recipe is None:
        raise DataError(note)
    _, data = contract_rows(dataset, contract, chilean_holidays())
    groups = CONTRACT_GROUPS[contract]
    folds = forward_folds(data.months)
    encoded = [
        encode_fold(data.columns, data.labels, fold, groups, data.holidays) for fold in folds
    ]
    baseline = baseline_recipe(contract)
    with threadpool_limits(limits=1):  # as the export fits: one OpenMP thread
        served, base = (
            pooled(run_forward(r, data.labels, data.days, encoded, None))
            for r in (recipe, baseline)
        )
    if not np.array_equal(served.rows, base.rows):
        raise AssertionError("the served and baseline forwards scored different flights")
    masks = slices(
        dataset.table["OPERA"].to_numpy(), dataset.table["TIPOVUELO"].to_numpy(), served.rows
    )
    masks |= {name: rows[served.rows] for name, rows in novelty(data.columns, folds).items()}
    return {
        "model": note,
        "recipe": recipe.label,
        "baseline": baseline.label,
        "months": [fold.name for fold in folds if fold.role in FORWARD],
        "slices": [
            asdict(slice_figures(name, served, base, mask))
            for name, mask in masks.items()
            if mask.any()
        ],
        "version": card_json["version"],
    }


def _figure(value: float | None, signed: bool = False) -> str:
    return "n/a" if value is None else f"{value:+.3f}" if signed else f"{value:.3f}"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _span(bounds: Sequence[float] | None, signed: bool = False) -> str:
    if bounds is None:
        return "n/a"
    low, high = bounds
    return f"[{low:+.3f}, {high:+.3f}]" if signed else f"[{low:.3f}, {high:.3f}]"


def _gain(row: dict[str, Any]) -> float | None:
    if row["roc_auc"] is None or row["baseline_roc_auc"] is None:
        return None
    gain: float = row["roc_auc"] - row["baseline_roc_auc"]
    return gain


def _verdicts(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Which slices the served model ranks better or worse than the baseline, by the interval
    of the paired gain: written from the figures, so it cannot drift from them."""
    above = [row["slice"] for row in rows if row["gain_interval"] and row["gain_interval"][0] > 0]
    below = [row["slice"] for row in rows if row["gain_interval"] and row["gain_interval"][1] < 0]
    inside = [
        row["slice"] for row in rows if row["gain_interval"] and row["slice"] not in above + below
    ]
    lines = []
    for label, names in (
        ("better than the baseline (the gain's interval above 0)", above),
        ("worse than the baseline (the gain's interval below 0)", below),
        ("not shown better or worse (the interval contains 0)", inside),
    ):
        lines.append(f"- Ranks {label}: {', '.join(names) if names else 'none'}.")
    return lines


def render_contract(contract: str, result: dict[str, Any]) -> list[str]:
    rows = result["slices"]
    months = result["months"]
    return [
        f"## {contract} contract: {result['model']}",
        "",
        f"Served recipe `{result['recipe']}`, against the baseline `{result['baseline']}`; "
        f"forward months {months[0]}..{months[-1]}, pooled.",
        "",
        "| slice | flights | delayed | mean predicted | alerted | precision | recall "
        "| ROC-AUC [95 %] | baseline ROC-AUC | gain [95 %] |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |",
        *(
            f"| {row['slice']} | {row['flights']:,} | {_share(row['delay_rate'])} "
            f"| {_share(row['mean_probability'])} | {_share(row['alert_rate'])} "
            f"| {_share(row['precision'])} | {_share(row['recall'])} "
            f"| {_figure(row['roc_auc'])} {_span(row['roc_auc_interval'])} "
            f"| {_figure(row['baseline_roc_auc'])} "
            f"| {_figure(_gain(row), signed=True)} "
            f"{_span(row['gain_interval'], signed=True)} |"
            for row in rows
        ),
        "",
        *_verdicts(rows[1:]),
        "",
    ]


def render(result: dict[str, Any]) -> str:
    return "\n".join([
        "# Who the models serve well (`make model-slices`)",
        "",
        f"- Date: {result['date']}; code: {result['revision']}; data: `{result['data']}` "
        f"(CSV sha256 `{result['csv_sha256']}`).",
        "- Each served recipe (read from its card in the models directory) and the contract's "
        "baseline, refitted on the forward folds `make export` judges them on; each slice pools "
        "the forward months' flights. An airline's own operations see only its rows, so its "
        "row's ROC-AUC, among its flights alone, is the ranking it meets; the pooled `all "
        "flights` figure also ranks airlines against one another (and it pools months, so it "
        "differs from the monthly mean of reports/model.md). `mean predicted` is the calibrated "
        "probability as served, beside the share `delayed`; `alerted`, `precision` and `recall` "
        "at each month's threshold fitted on the months before it. Intervals: 95 %, days "
        f"resampled ({BOOTSTRAP} replicates), the gain paired (both models on the same "
        f"resampled days). Airlines with fewer than {MIN_FLIGHTS:,} forward flights are pooled "
        f"as `{OTHER_AIRLINES}`. With the schedule, `flight number new` are flights whose "
        "flight number (airline and `Vlo-I`) no training month of their fold held, scored "
        "through the fallback by their route's (airline and `Des-I`) or, where the route is "
        "new too (`flight number and route new`), their airline's delay rate. Reported, never "
        "chosen on.",
        "",
        *(line for contract, figures in result["contracts"].items()
          for line in render_contract(contract, figures)),
    ])  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m train.slices", description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--out", type=Path, help="write model-slices.json and .md here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        dataset = load(args.data)
        contracts = {
            contract: contract_slices(dataset, contract, args.models_dir / f"{name}.json")
            for contract, name in CONTRACT_MODELS.items()
        }
    except DataError as error:
        print(f"model-slices: {error}", file=sys.stderr)
        return 1
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "revision": code_revision(),
        "data": args.data.name,
        "csv_sha256": dataset.csv_sha256,
        "contracts": contracts,
    }
    report = render(result)
    print(report)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "model-slices.json").write_bytes(
            orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
        )
        (args.out / "model-slices.md").write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())

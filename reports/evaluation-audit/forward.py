"""Audit (reports/evaluation-audit.md): the chosen recipes' whole forward run (no search) against
the cards: monthly ROC-AUC, thresholds, Platt map, intervals, ECE, holdout and its day interval.

    .venv/bin/python reports/evaluation-audit/forward.py
"""

from __future__ import annotations

from cards import load_card, served_recipe
from threadpoolctl import threadpool_limits

from app.inference.features import GROUPS, MINIMAL_GROUPS, from_flights
from train.data import chilean_holidays, data_location, load
from train.evaluate import (
    bootstrap_means,
    encode_fold,
    forward_folds,
    holdout_fold,
    interval,
    months_interval,
    run_forward,
)
from train.select import FORWARD, prepare

ds = load(data_location())
labels = ds.labels
departure = ds.table["Fecha-I"].to_numpy().astype("datetime64[m]")
for name, schedule, groups in (
    ("delay-full", True, tuple(GROUPS)),
    ("delay-minimal", False, MINIMAL_GROUPS),
):
    card = load_card(name)
    data = prepare(
        from_flights(ds.flights(schedule)),
        labels,
        chilean_holidays() if schedule else None,
        departure,
    )
    recipe = served_recipe(card)
    with threadpool_limits(limits=1):
        enc = [
            encode_fold(data.columns, labels, f, groups, data.holidays)
            for f in forward_folds(data.months)
        ]
        ho = encode_fold(data.columns, labels, holdout_fold(data.months), groups, data.holidays)
        fw = run_forward(recipe, labels, data.days, enc, ho)
    m = card["metrics"]["forward"]
    draws = bootstrap_means([fw], FORWARD)[:, 0]
    months = months_interval([x.roc_auc for x in fw.months])
    print(name)
    print(
        "  months ROC-AUC equal to card:",
        [round(x.roc_auc, 6) for x in fw.months] == [x["roc_auc"] for x in m["months"]],
        " thresholds equal:",
        [round(x.threshold, 6) for x in fw.months] == [x["threshold"] for x in m["months"]],
    )
    print(
        f"  mean {fw.mean_auc(FORWARD):.6f} day-CI {interval(draws)} (card {m['mean_roc_auc']} {m['interval']}); months-unit {months}"
    )
    print(
        f"  pooled ECE {fw.ece(FORWARD):.6f} (card {m['ece']}); monthly ECE {[round(x.ece, 4) for x in fw.months]}"
    )
    print(
        f"  Platt a={fw.platt.a:.6f} b={fw.platt.b:.6f} (card {card['calibration']['a']} {card['calibration']['b']}); threshold {fw.threshold:.6f} (card {card['threshold']})"
    )
    print(
        f"  holdout ROC-AUC {fw.holdout.roc_auc:.6f} (card {card['metrics']['holdout_last_two_months']['roc_auc']}) day-CI {fw.holdout_interval()}"
    )

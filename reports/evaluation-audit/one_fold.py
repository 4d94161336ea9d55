"""Audit (reports/evaluation-audit.md): the served full recipe fitted on one forward fold or the
holdout, as the export fits it, and scored (ROC-AUC; the holdout with its day interval).

    .venv/bin/python reports/evaluation-audit/one_fold.py [--dst-fix] FOLD...

FOLD: 2017-09, 2017-11..2017-12 (the holdout), or 2017-12-drop58294 (without training row
58294, 0-based row of the data file). --dst-fix: row 43029 labelled on time (14 real minutes).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from app.inference.features import GROUPS, from_flights
from train.candidates import CANDIDATES
from train.data import chilean_holidays, data_location, load
from train.evaluate import (
    BOOTSTRAP,
    SEED,
    Recipe,
    day_bootstrap_aucs,
    encode_fold,
    fit_predict,
    forward_folds,
    holdout_fold,
    interval,
)
from train.select import prepare

card = json.loads(Path("models/delay-full.json").read_text())
blend = next(c for c in CANDIDATES if c.name == "blend")
recipe = Recipe(
    "blend",
    blend.build,
    card["model"]["params"],
    tuple(card["encoder"]["groups"]),
    card["model"]["half_life_months"],
)
ds = load(data_location())
labels = ds.labels.copy()
if "--dst-fix" in sys.argv:
    labels[43029] = 0  # 23:50 -> 01:04 across the 2017-08-13 DST jump: 14 real minutes
    sys.argv.remove("--dst-fix")
departure = ds.table["Fecha-I"].to_numpy().astype("datetime64[m]")
columns = from_flights(ds.flights(True))
data = prepare(columns, labels, chilean_holidays(), departure)
wanted = sys.argv[1:]
folds = {f.name: f for f in forward_folds(data.months)}
ho = holdout_fold(data.months)
folds[ho.name] = ho


def day_boot(y: np.ndarray, p: np.ndarray, days: np.ndarray) -> tuple[float, float]:
    """The holdout's day-bootstrap interval, as Forward.holdout_interval draws it."""
    return interval(day_bootstrap_aucs(y, p, days, np.random.default_rng(SEED), BOOTSTRAP))


with threadpool_limits(limits=1):
    for name in wanted:
        drop = None
        if "-drop" in name:
            name, drop = name.split("-drop")
        fold = folds[name]
        if drop is not None:
            from dataclasses import replace

            keep = ~np.isin(fold.train_rows, [int(drop)])
            fold = replace(fold, train_rows=fold.train_rows[keep], train_age=fold.train_age[keep])
        t0 = time.perf_counter()
        enc = encode_fold(data.columns, labels, fold, tuple(GROUPS), data.holidays)
        p, _ = fit_predict(recipe, labels, enc)
        y = labels[fold.test_rows]
        auc = roc_auc_score(y, p)
        out = f"{name}{'' if drop is None else ' without train row ' + drop}: rows {len(y)} ROC-AUC {auc:.6f}"
        if ".." in name:
            lo, hi = day_boot(y, p, data.days[fold.test_rows])
            out += f" day-bootstrap 95% [{lo:.4f}, {hi:.4f}]"
            mon = data.months[fold.test_rows]
            out += " per-month " + ", ".join(
                f"{m} {roc_auc_score(y[mon == m], p[mon == m]):.4f}" for m in np.unique(mon)
            )
        print(out, f"({time.perf_counter() - t0:.0f} s)", flush=True)

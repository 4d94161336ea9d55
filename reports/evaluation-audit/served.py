"""Audit (reports/evaluation-audit.md): is each committed ONNX the chosen recipe refitted on every
row, with the card's Platt map? Compares onnxruntime with the refit on all 68,206 rows.

    .venv/bin/python reports/evaluation-audit/served.py
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from cards import load_card, served_recipe
from threadpoolctl import threadpool_limits

from app.inference.features import FeatureEncoder, from_flights
from export.__main__ import fit_all
from train.data import chilean_holidays, data_location, load
from train.evaluate import month_keys
from train.metrics import Platt

ds = load(data_location())
labels = ds.labels
months = month_keys(ds.table["Fecha-I"].to_numpy().astype("datetime64[m]"))
for name, schedule in (("delay-full", True), ("delay-minimal", False)):
    card = load_card(name)
    columns = from_flights(ds.flights(schedule))
    recipe = served_recipe(card)
    with threadpool_limits(limits=1):
        fitted, encoder = fit_all(recipe, columns, labels, chilean_holidays(), months)
    matrix = encoder.encode_columns(columns)
    card_encoder = FeatureEncoder.from_json(card["encoder"])
    same_matrix = np.array_equal(card_encoder.encode_columns(columns), matrix)
    platt = Platt(card["calibration"]["a"], card["calibration"]["b"])
    mine = platt.apply(fitted.predict_proba(matrix)[:, 1])
    sess = ort.InferenceSession(f"models/{name}.onnx", providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name
    outs = [o.name for o in sess.get_outputs()]
    served = sess.run(None, {inp: matrix.astype(np.float32)})
    prob = served[outs.index("probabilities")] if "probabilities" in outs else served[-1]
    prob = np.asarray(prob)
    prob = prob[:, 1] if prob.ndim == 2 and prob.shape[1] == 2 else prob.ravel()
    t = card["threshold"]
    print(
        name,
        "groups",
        card["encoder"]["groups"],
        "same encoder matrix:",
        same_matrix,
        "max |onnx - refit+card Platt|:",
        float(np.max(np.abs(prob - mine))),
        "alert mismatches at card threshold:",
        int(np.sum((prob >= t) != (mine >= t))),
    )

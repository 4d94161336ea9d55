"""Audit (reports/evaluation-audit.md): counts only (no rows of the data are printed) of the
label and fold questions: month-crossing departures, the 2017 DST changes, repeated flights.

    .venv/bin/python reports/evaluation-audit/data_checks.py
"""

from __future__ import annotations

import numpy as np

from train.data import data_location, load

ds = load(data_location())
t = ds.table
print("rows", len(t), "delay rate", t.delay_15.mean())
print("Ori-I values", t["Ori-I"].value_counts().to_dict())
fi, fo = t["Fecha-I"], t["Fecha-O"]
cross_month = fo.dt.to_period("M") != fi.dt.to_period("M")
print(
    "rows whose Fecha-O month != Fecha-I month:",
    int(cross_month.sum()),
    "delayed among them:",
    int(t.delay_15[cross_month].sum()),
)
# DST 2017 Chile: ended 2017-05-14 00:00 (-> 2017-05-13 23:00); started 2017-08-13 00:00 (-> 01:00)
for start, end, name in [
    ("2017-05-13 20:00", "2017-05-14 03:00", "DST end"),
    ("2017-08-12 20:00", "2017-08-13 03:00", "DST start"),
]:
    m = (fi >= start) & (fi <= end)
    crossing = m & (fo.dt.date != fi.dt.date)
    print(
        name,
        "flights scheduled in window:",
        int(m.sum()),
        "operated across midnight:",
        int(crossing.sum()),
    )
    print(
        "  of them delayed per the clock and across midnight (wrong by the DST hour):",
        int((crossing & (t.delay_15 == 1)).sum()),
        "row(s)",
        np.flatnonzero(crossing.to_numpy()).tolist(),
    )
key = ["Fecha-I", "Vlo-I", "Emp-I", "Des-I"]
dup = t.duplicated(key, keep=False)
print("rows sharing (Fecha-I, Vlo-I, Emp-I, Des-I):", int(dup.sum()))
dup2 = t.duplicated(["Fecha-I", "Vlo-I", "Emp-I"], keep=False)
print("rows sharing (Fecha-I, Vlo-I, Emp-I):", int(dup2.sum()))
mes_mismatch = t["MES"].astype(int) != fi.dt.month
print("MES != Fecha-I month:", int(mes_mismatch.sum()))
# per-month delay rate
print(t.groupby(fi.dt.to_period("M")).delay_15.agg(["size", "mean"]).to_string())

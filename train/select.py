"""Choosing a contract's model on the earlier forward months, judging it on the later ones.

The rule (stated in reports/model.md): hyperparameters, feature groups and the candidate are
chosen on the `select` months only; the `report` months, the holdout and the grouped CVs never
influence a choice. Among the candidates within noise of the best (the paired day-bootstrap
interval of the difference contains 0), one at least `CHEAPER` times cheaper to run per row at
1,000 rows wins (at 1 row every candidate costs the same few µs of onnxruntime call overhead,
and a smaller ratio would let timing noise decide). A feature group is kept only if removing
it costs the select months at least `MATERIAL_GAIN` of mean ROC-AUC: a smaller gain is below
what a few months resolve, and each kept group is one more effect the served model assumes.
Recency weighting (`Candidate.half_lives`) is one more hyperparameter of the search: a
configuration is its params and its half-life, and the rules above choose among them. The
chosen recipe at each other half-life of `REPORTED_HALF_LIVES` is fitted and reported, never
chosen on.
A blend (`Candidate.components`) is one more finalist, made of its components' best searched
configurations: it is not searched itself, and the rules above choose among the finalists.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from app.inference.features import GROUPS, MINIMAL_GROUPS, from_flights
from app.inference.flights import Columns, Flight
from app.inference.model import FULL_MODEL, MINIMAL_MODEL
from train.candidates import CANDIDATES, REPORTED_HALF_LIVES, Candidate
from train.ceiling import Ceiling, cell_ceiling
from train.data import DataError, Dataset, unreadable
from train.evaluate import (
    Encoded,
    Forward,
    Log,
    Recipe,
    bootstrap_means,
    cross_validated,
    encode_fold,
    forward_folds,
    grouped_folds,
    holdout_fold,
    interval,
    month_keys,
    months_interval,
    run_forward,
)
from train.metrics import Scores

CONTRACT_GROUPS = {"minimal": MINIMAL_GROUPS, "full": tuple(GROUPS)}
CONTRACT_MODELS = {"minimal": MINIMAL_MODEL, "full": FULL_MODEL}
"""The model each contract is served as."""
SELECT = ("select",)
REPORT = ("report",)
FORWARD = ("select", "report")
MATERIAL_GAIN = 0.002
CHEAPER = 2.0
Cost = Callable[[Sequence[Recipe]], list[tuple[float, float]]]
"""onnxruntime microseconds per row at 1 and at 1,000 rows of each recipe fitted on all rows,
timed together in alternating rounds"""


@dataclass(frozen=True)
class Ablation:
    group: str
    select_gain: float
    """mean ROC-AUC of the recipe minus that without the group, on the select months"""
    select_interval: tuple[float, float]
    report_gain: float
    report_interval: tuple[float, float]
    kept: bool


@dataclass
class ContractEvaluation:
    contract: str
    baseline: Forward
    finalists: list[Forward]
    """each candidate's best configuration on the kept groups, full forward run"""
    chosen: Forward
    search: list[tuple[str, float]]
    """every configuration tried (all groups), with its select-months mean ROC-AUC"""
    ablation: list[Ablation]
    ablation_with: str
    """the recipe the ablation was run with"""
    recency: list[Forward] = field(default_factory=list)
    """the chosen recipe at each other half-life (None: unweighted): reported only"""
    cv: dict[str, dict[str, Scores]] = field(default_factory=dict)
    """{"date"|"week": {"chosen"|"baseline": out-of-fold scores}}: optimistic, never chosen on"""
    cost: dict[str, tuple[float, float]] = field(default_factory=dict)
    """candidate -> onnxruntime microseconds per row at 1 and at 1,000 rows"""
    champion: Forward | None = None
    champion_note: str = ""
    ceiling: Ceiling | None = None
    """minimal contract: what any function of the OPERA x TIPOVUELO cell reaches per month"""

    def means(self, forward: Forward, roles: Sequence[str]) -> tuple[float, float, float]:
        """mean monthly ROC-AUC and its 95 % day-bootstrap interval"""
        draws = bootstrap_means([forward], roles)[:, 0]
        return (forward.mean_auc(roles), *interval(draws))

    def month_means(self, forward: Forward, roles: Sequence[str]) -> tuple[float, float, float]:
        """mean monthly ROC-AUC and its 95 % interval with the month as the unit"""
        return months_interval([m.roc_auc for m in forward.months if m.role in roles])

    def month_difference(
        self, first: Forward, second: Forward, roles: Sequence[str]
    ) -> tuple[float, float, float]:
        """first minus second, month by month: mean gap and its 95 % interval, the month as the
        unit (paired)"""
        gaps = [
            mine.roc_auc - theirs.roc_auc
            for mine, theirs in zip(first.months, second.months, strict=True)
            if mine.role in roles
        ]
        return months_interval(gaps)

    def difference(
        self, first: Forward, second: Forward, roles: Sequence[str]
    ) -> tuple[float, float, float]:
        """first minus second: mean ROC-AUC gap and its paired 95 % interval"""
        draws = bootstrap_means([first, second], roles)
        return (
            first.mean_auc(roles) - second.mean_auc(roles),
            *interval(draws[:, 0] - draws[:, 1]),
        )


@dataclass(frozen=True)
class Data:
    """A contract's rows, as the service will see them, and what the folds need."""

    columns: Columns
    labels: np.ndarray
    days: np.ndarray
    months: np.ndarray
    weeks: np.ndarray
    holidays: np.ndarray | None


def prepare(
    columns: Columns, labels: np.ndarray, holidays: np.ndarray | None, departure: np.ndarray
) -> Data:
    days = departure.astype("datetime64[D]")
    return Data(
        columns,
        labels,
        np.datetime_as_string(days),
        month_keys(departure),
        days.astype("datetime64[W]").astype(np.int64),
        holidays,
    )


def contract_rows(
    dataset: Dataset, contract: str, holidays: np.ndarray
) -> tuple[list[Flight], Data]:
    """A contract's rows as the service will see them (through its validator), prepared for the
    folds: the minimal contract's without their schedule, so without holidays."""
    schedule = contract == "full"
    flights = dataset.flights(schedule)
    departure = dataset.table["Fecha-I"].to_numpy().astype("datetime64[m]")
    holidays_known = holidays if schedule else None
    return flights, prepare(from_flights(flights), dataset.labels, holidays_known, departure)


def recipe_from_card(card_path: Path) -> tuple[Recipe | None, str]:
    """The recipe of a served model, read from its card, to be refitted on any folds (the
    exported model itself has seen every month, so only its recipe can be judged forward), and
    how to name it; None, saying why, where the card cannot give one."""
    try:
        card = read_card(card_path)
    except DataError as error:
        return None, str(error)
    return card_recipe(card, card_path.name)


def read_card(card_path: Path) -> Mapping[str, Any]:
    """A model card's JSON object. A file that is missing, unreadable (its permissions, its
    directory's), or not a JSON object (a release cut short, a wrong file in the models
    directory), is a one-line DataError naming it."""
    try:
        if not card_path.is_file():
            raise DataError(f"no model at {card_path}")
        raw = card_path.read_bytes()
    except OSError as error:
        raise unreadable(card_path, error) from None
    try:
        card = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise DataError(f"{card_path}: not a model card: {error}") from None
    if not isinstance(card, dict):
        raise DataError(f"{card_path}: not a model card: a JSON {type(card).__name__}")
    return card


def card_recipe(card: Mapping[str, Any], name: str) -> tuple[Recipe | None, str]:
    """`recipe_from_card` of a card already read: a caller that also quotes the card's version
    reads the file once, so the two cannot come from different exports."""
    model, encoder = card.get("model"), card.get("encoder")
    if not (isinstance(model, dict) and isinstance(encoder, dict | None) and "version" in card):
        return None, f"{name}: not a model card: no version, or no model or encoder object"
    groups = (encoder or {}).get("groups")
    candidate = next((c for c in CANDIDATES if c.name == model.get("estimator")), None)
    if groups is None or candidate is None:
        return None, (
            f"{name} {card['version']} predates feature groups: its recipe "
            "cannot be refitted by this code"
        )
    if not (isinstance(model.get("params"), dict) and isinstance(groups, list)):
        return None, (
            f"{name} {card['version']}: not a model card: model.params is not an object, or "
            "encoder.groups not a list"
        )
    recipe = Recipe(
        candidate.name,
        candidate.build,
        dict(model["params"]),
        tuple(groups),
        model.get("half_life_months"),
    )
    return recipe, f"{name} {card['version']}"


def evaluate_contract(
    contract: str,
    data: Data,
    candidates: Sequence[Candidate] = CANDIDATES,
    champion: Recipe | None = None,
    cost: Cost | None = None,
    log: Log = print,
) -> ContractEvaluation:
    groups = CONTRACT_GROUPS[contract]
    started = time.perf_counter()

    def say(message: str) -> None:
        log(f"[{time.perf_counter() - started:5.0f} s] {contract}: {message}")

    folds = forward_folds(data.months)
    say(
        f"{len(folds)} forward folds (test {folds[0].name}..{folds[-1].name}), "
        f"encoding each on its training months"
    )
    encoded = [
        encode_fold(data.columns, data.labels, fold, groups, data.holidays) for fold in folds
    ]
    holdout = encode_fold(
        data.columns, data.labels, holdout_fold(data.months), groups, data.holidays
    )
    selecting = [split for split in encoded if split.fold.role in ("warm-up", "select")]

    def forward(
        recipe: Recipe, splits: Sequence[Encoded] = encoded, with_holdout: bool = True
    ) -> Forward:
        say(f"fitting {recipe.label} on {len(recipe.groups)} feature groups")
        return run_forward(
            recipe, data.labels, data.days, splits, holdout if with_holdout else None, say
        )

    baseline_candidate, *others = candidates
    baseline = forward(_recipe(baseline_candidate, {}, groups))
    search: list[tuple[str, float]] = []
    best: dict[str, tuple[float, Recipe]] = {}
    for candidate in (c for c in others if not c.components):
        for params, half_life in product(candidate.grid, candidate.half_lives):
            recipe = replace(_recipe(candidate, params, groups), half_life=half_life)
            mean = forward(recipe, selecting, with_holdout=False).mean_auc(SELECT)
            search.append((recipe.label, mean))
            if candidate.name not in best or mean > best[candidate.name][0]:
                best[candidate.name] = (mean, recipe)
    leader = max(best.values(), key=lambda item: item[0])[1]
    say(f"ablation of each feature group with {leader.label}")
    ablation, kept = _ablation(leader, data, encoded, forward)
    finalists = [
        forward(recipe)
        for recipe in [replace(r, groups=kept) for _, r in best.values()]
        + _blends(others, best, kept)
    ]
    costs: dict[str, tuple[float, float]] = {}
    if cost is not None:
        priced = [item.recipe for item in [baseline, *finalists]]
        say(f"onnxruntime cost of {len(priced)} models, timed in alternating rounds")
        costs = {recipe.candidate: c for recipe, c in zip(priced, cost(priced), strict=True)}
    chosen = _cheapest_within_noise(finalists, costs)
    say("the chosen recipe at other half-lives (reported only)")
    recency = [
        forward(replace(chosen.recipe, half_life=half_life))
        for half_life in REPORTED_HALF_LIVES
        if half_life != chosen.recipe.half_life
    ]
    evaluation = ContractEvaluation(
        contract,
        baseline,
        finalists,
        chosen,
        search,
        ablation,
        leader.label,
        recency=recency,
        cost=costs,
    )
    for kind, keys in (("date", data.days), ("week", data.weeks)):
        say(f"{kind}-grouped {len(set(keys.tolist()))}-group CV (reported only)")
        splits = [
            encode_fold(data.columns, data.labels, fold, groups, data.holidays)
            for fold in grouped_folds(keys, data.months)
        ]
        evaluation.cv[kind] = {
            "chosen": cross_validated(chosen.recipe, data.labels, splits),
            "baseline": cross_validated(baseline.recipe, data.labels, splits),
        }
    if champion is not None:
        evaluation.champion = forward(champion)
    if contract == "minimal":
        say("cell rates of the earlier months and of the month itself (reported only)")
        evaluation.ceiling = cell_ceiling(data.labels, data.days, encoded)
    return evaluation


def baseline_recipe(contract: str) -> Recipe:
    """The data scientist's model on a contract's feature groups: the first of CANDIDATES."""
    return _recipe(CANDIDATES[0], {}, CONTRACT_GROUPS[contract])


def _recipe(candidate: Candidate, params: Mapping[str, Any], groups: tuple[str, ...]) -> Recipe:
    return Recipe(candidate.name, candidate.build, dict(params), candidate.groups or groups)


def _blends(
    candidates: Sequence[Candidate], best: Mapping[str, tuple[float, Recipe]], kept: tuple[str, ...]
) -> list[Recipe]:
    """Each blend of the components' best searched configurations, on the kept groups (as
    every finalist); not in the search, so the ablation and the other finalists stay as they
    are with or without it. One weight vector reaches every member: the blend is weighted only
    if its components' best configurations share a half-life."""
    blends = []
    for c in candidates:
        if c.components and all(name in best for name in c.components):
            members = [best[name][1] for name in c.components]
            half_lives = {member.half_life for member in members}
            params = {member.candidate: member.params for member in members}
            shared = half_lives.pop() if len(half_lives) == 1 else None
            blends.append(Recipe(c.name, c.build, params, kept, shared))
    return blends


def _ablation(
    leader: Recipe, data: Data, encoded: Sequence[Encoded], forward: Any
) -> tuple[list[Ablation], tuple[str, ...]]:
    """Drop one group at a time; keep the groups whose loss lowers the select-months mean."""
    full = forward(leader, encoded, with_holdout=False)
    results = []
    for group in leader.groups:
        rest = tuple(g for g in leader.groups if g != group)
        if not rest:
            continue
        without = forward(replace(leader, groups=rest), encoded, with_holdout=False)
        select = bootstrap_means([full, without], SELECT)
        report = bootstrap_means([full, without], REPORT)
        select_gain = full.mean_auc(SELECT) - without.mean_auc(SELECT)
        results.append(
            Ablation(
                group,
                select_gain,
                interval(select[:, 0] - select[:, 1]),
                full.mean_auc(REPORT) - without.mean_auc(REPORT),
                interval(report[:, 0] - report[:, 1]),
                select_gain >= MATERIAL_GAIN,
            )
        )
    kept = tuple(result.group for result in results if result.kept) or leader.groups[:1]
    return results, kept


def best_on_select(finalists: Sequence[Forward]) -> Forward:
    return max(finalists, key=lambda forward: forward.mean_auc(SELECT))


def _cheapest_within_noise(
    finalists: Sequence[Forward], costs: Mapping[str, tuple[float, float]]
) -> Forward:
    """The best select-months mean, unless a finalist within noise of it (paired interval of
    the gap contains 0) is `CHEAPER` times cheaper at 1,000 rows; then the cheapest such one."""
    best = best_on_select(finalists)
    contenders = [best]
    for forward in finalists:
        if forward is best or forward.recipe.candidate not in costs:
            continue
        draws = bootstrap_means([best, forward], SELECT)
        cheaper = costs[forward.recipe.candidate][1] * CHEAPER <= costs[best.recipe.candidate][1]
        if cheaper and interval(draws[:, 0] - draws[:, 1])[0] <= 0:
            contenders.append(forward)
    return min(contenders, key=lambda forward: costs.get(forward.recipe.candidate, (0.0, 0.0))[1])

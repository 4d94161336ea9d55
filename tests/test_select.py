"""train.select's rules on forward runs made up for them: the cheapest finalist within noise of
the best, and the feature groups an ablation keeps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from tests.conftest import refuse_access
from train.data import DataError
from train.evaluate import Encoded, Fold, Forward, Recipe
from train.select import (
    ContractEvaluation,
    _ablation,
    _cheapest_within_noise,
    best_on_select,
    read_card,
    recipe_from_card,
)

ROLES = ("warm-up", "select", "select", "report", "report")
NO_ROWS = np.array([], dtype=np.int64)


class Scored(Forward):
    """A forward run whose mean ROC-AUC on the select and the report months is set; the
    bootstrap resamples its days' scores."""

    select_auc = 0.0
    report_auc = 0.0

    def __post_init__(self) -> None:  # no monthly scores: the means are set
        pass

    def mean_auc(self, roles: Sequence[str]) -> float:
        return self.select_auc if tuple(roles) == ("select",) else self.report_auc


def made_up(
    candidate: str,
    signal: float,
    seed: int = 0,
    groups: tuple[str, ...] = ("OPERA",),
    like: Forward | None = None,
) -> Scored:
    """A forward run of 200 flights over 10 days a month, scored with `signal` (0: chance),
    its select-months mean `signal`; `like`: the same flights and scores as that run."""
    folds = [
        Fold(f"2017-0{k + 1}", NO_ROWS, NO_ROWS, role, NO_ROWS) for k, role in enumerate(ROLES)
    ]
    recipe = Recipe(candidate, lambda groups, params: None, {}, groups)
    if like is None:
        rng = np.random.default_rng(seed)
        labels = [rng.integers(0, 2, 200) for _ in folds]
        noise = [rng.normal(0, 1, 200) for _ in folds]
        chances = [
            1 / (1 + np.exp(-(signal * (2 * y - 1) + e)))
            for y, e in zip(labels, noise, strict=True)
        ]
        days = [np.repeat(np.arange(10), 20) for _ in folds]
    else:
        labels, chances, days = like.labels, like.probabilities, like.days
    run = Scored(recipe, folds, labels, chances, days, None, 0.0)
    run.select_auc = signal
    return run


def test_a_finalist_twice_as_cheap_and_within_noise_of_the_best_is_chosen() -> None:
    best = made_up("hgb", signal=1.0)
    alike = made_up("logreg", signal=1.0, like=best)  # the same scores: a gap of exactly 0
    assert best_on_select([best, alike]) is best
    costs = {"hgb": (5.0, 2.0), "logreg": (5.0, 1.0)}
    assert _cheapest_within_noise([best, alike], costs) is alike


def test_a_cheaper_finalist_as_good_on_other_flights_is_chosen() -> None:
    """Not the same scores: a gap whose interval holds 0 (the lower end under it, the upper over)."""
    best = made_up("hgb", signal=1.0)
    alike = made_up("logreg", signal=1.0, like=best)
    rng = np.random.default_rng(4)
    alike.probabilities = [p + rng.normal(0, 0.05, len(p)) for p in best.probabilities]
    assert _cheapest_within_noise([best, alike], {"hgb": (5.0, 2.0), "logreg": (5.0, 1.0)}) is alike


def test_a_finalist_less_than_twice_as_cheap_is_not_chosen() -> None:
    best = made_up("hgb", signal=1.0)
    alike = made_up("logreg", signal=1.0, like=best)
    costs = {"hgb": (5.0, 2.0), "logreg": (1.0, 1.01)}  # 1 row: every candidate costs the same
    assert _cheapest_within_noise([best, alike], costs) is best


def test_a_cheaper_finalist_clearly_worse_than_the_best_is_not_chosen() -> None:
    best = made_up("hgb", signal=1.5)
    worse = made_up("logreg", signal=0.0, seed=1, like=None)
    assert _cheapest_within_noise([best, worse], {"hgb": (5.0, 9.0), "logreg": (1.0, 1.0)}) is best


def test_the_cheapest_of_the_finalists_within_noise_wins() -> None:
    best = made_up("hgb", signal=1.0)
    finalists = [
        best,
        made_up("lgbm", signal=1.0, like=best),
        made_up("logreg", signal=1.0, like=best),
        made_up("blend", signal=1.0, like=best),
    ]
    costs = {"hgb": (1.0, 10.0), "lgbm": (1.0, 4.0), "logreg": (1.0, 2.0), "blend": (1.0, 3.0)}
    assert _cheapest_within_noise(finalists, costs).recipe.candidate == "logreg"


def test_a_finalist_not_timed_is_never_chosen_for_its_cost() -> None:
    """Without costs (export without timing), or for a finalist not timed: the best."""
    best = made_up("hgb", signal=1.0)
    alike = made_up("logreg", signal=1.0, like=best)
    assert _cheapest_within_noise([best, alike], {}) is best
    assert _cheapest_within_noise([best, alike], {"hgb": (5.0, 2.0)}) is best


def ablated(losses: dict[str, float]) -> tuple[list[Any], tuple[str, ...]]:
    """`_ablation` of a leader on the groups of `losses`, each group's removal costing the
    select months that much mean ROC-AUC."""
    base = made_up("hgb", signal=1.0)

    def forward(recipe: Recipe, splits: Sequence[Encoded], with_holdout: bool = True) -> Forward:
        assert not with_holdout
        missing = [group for group in losses if group not in recipe.groups]
        run = made_up("hgb", 0.7 - sum(losses[g] for g in missing), groups=recipe.groups, like=base)
        run.report_auc = 0.6 - 2 * sum(losses[g] for g in missing)
        return run

    leader = Recipe("hgb", lambda groups, params: None, {}, tuple(losses))
    return _ablation(leader, None, [], forward)  # type: ignore[arg-type]


def test_a_group_is_kept_when_removing_it_costs_a_fifth_of_a_point_of_roc_auc() -> None:
    results, kept = ablated({"OPERA": 0.02, "hour": 0.0021, "Emp-I": 0.0019, "MES": -0.001})
    assert kept == ("OPERA", "hour")
    assert [(row.group, row.kept) for row in results] == [
        ("OPERA", True),
        ("hour", True),
        ("Emp-I", False),
        ("MES", False),
    ]
    assert [row.select_gain for row in results] == pytest.approx([0.02, 0.0021, 0.0019, -0.001])
    assert [row.report_gain for row in results] == pytest.approx([0.04, 0.0042, 0.0038, -0.002])
    # the same scores with and without each group: a bootstrap gap of exactly 0
    assert {(row.select_interval, row.report_interval) for row in results} == {((0, 0), (0, 0))}


def test_when_no_group_is_worth_its_place_the_first_is_kept() -> None:
    assert ablated({"OPERA": 0.001, "hour": 0.0})[1] == ("OPERA",)


def test_a_single_group_is_not_ablated() -> None:
    assert ablated({"OPERA": 0.05}) == ([], ("OPERA",))


def scored_forward(candidate: str, signal: float, seed: int) -> Forward:
    """A forward run of made-up flights whose months are scored as export scores them."""
    run = made_up(candidate, signal, seed)
    return Forward(run.recipe, run.folds, run.labels, run.probabilities, run.days, None, 0.0)


def test_the_report_gives_means_and_gaps_on_the_months_of_a_role() -> None:
    strong, weak = scored_forward("hgb", 1.5, seed=2), scored_forward("logreg", 0.3, seed=3)
    evaluation = ContractEvaluation("full", weak, [strong, weak], strong, [], [], "hgb()")
    select = [m.roc_auc for m in strong.months if m.role == "select"]
    assert len(select) == 2
    mean, low, high = evaluation.means(strong, ("select",))
    assert mean == pytest.approx(sum(select) / 2)
    assert low < mean < high
    mean, low, high = evaluation.month_means(strong, ("select",))
    assert mean == pytest.approx(sum(select) / 2)
    assert low < mean < high
    gaps = [s.roc_auc - w.roc_auc for s, w in zip(strong.months, weak.months, strict=True)]
    report = [gap for gap, m in zip(gaps, strong.months, strict=True) if m.role == "report"]
    gap, low, high = evaluation.month_difference(strong, weak, ("report",))
    assert gap == pytest.approx(sum(report) / 2)
    assert gap > 0.2
    assert low < gap < high
    gap, low, high = evaluation.difference(strong, weak, ("report",))
    assert gap == pytest.approx(sum(report) / 2)
    assert 0 < low < gap < high


def test_a_served_recipe_is_read_from_its_card(synthetic_export: Path, tmp_path: Path) -> None:
    recipe, note = recipe_from_card(synthetic_export / "models" / "delay-full.json")
    card = orjson.loads((synthetic_export / "models" / "delay-full.json").read_bytes())
    assert recipe is not None
    assert recipe.groups == tuple(card["encoder"]["groups"])
    assert recipe.params == card["model"]["params"]
    assert card["version"] in note
    blend = tmp_path / "blend.json"
    params = {"logreg": {"C": 0.1}, "hgb": {"max_iter": 7}}
    blend_card = card | {"model": {"estimator": "blend", "params": params}}
    blend.write_bytes(orjson.dumps(blend_card))
    blended = recipe_from_card(blend)[0]
    assert blended is not None
    assert blended.params == params
    assert blended.build(blended.groups, blended.params).estimators[1][1].max_iter == 7
    # an unweighted model's card names no half-life; a weighted one's is refitted weighted
    assert "half_life_months" not in card["model"]
    assert recipe.half_life is None
    weighted = tmp_path / "weighted.json"
    weighted_model = card["model"] | {"half_life_months": 3.0}
    weighted.write_bytes(orjson.dumps(card | {"model": weighted_model}))
    refitted = recipe_from_card(weighted)[0]
    assert refitted == replace(recipe, half_life=3.0)
    old = tmp_path / "old.json"
    old.write_bytes(orjson.dumps({"version": "x", "model": {"estimator": "hgb"}, "encoder": {}}))
    assert recipe_from_card(old)[0] is None
    assert recipe_from_card(tmp_path / "none.json") == (
        None,
        f"no model at {tmp_path / 'none.json'}",
    )


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b'{"version": "x", "model": {"estim', "not a model card: unexpected end of data"),
        (b"[1, 2]", "not a model card: a JSON list"),
        (b'{"model": {"estimator": "hgb"}}', "not a model card: no version"),
        (b'{"version": "x", "model": "hgb"}', "not a model card: no version"),
        (b'{"version": "x", "model": {}, "encoder": []}', "not a model card: no version"),
        (
            b'{"version": "x", "model": {"estimator": "hgb", "params": 3}, '
            b'"encoder": {"groups": ["hour"]}}',
            "not a model card: model.params is not an object",
        ),
        (
            b'{"version": "x", "model": {"estimator": "hgb", "params": {}}, '
            b'"encoder": {"groups": 7}}',
            "encoder.groups not a list",
        ),
    ],
    ids=[
        "cut-short",
        "not-an-object",
        "no-version",
        "model-not-an-object",
        "encoder-not-an-object",
        "params-not-an-object",
        "groups-not-a-list",
    ],
)
def test_a_card_that_is_not_one_is_refused_saying_why(
    tmp_path: Path, content: bytes, says: str
) -> None:
    """The export's gate and `make model-slices` read the served models' cards: a release cut
    short or a wrong file there was a traceback (JSONDecodeError, KeyError, TypeError)."""
    card = tmp_path / "delay-full.json"
    card.write_bytes(content)
    recipe, note = recipe_from_card(card)
    assert recipe is None
    assert says in note
    assert "\n" not in note


@pytest.mark.parametrize("refused", ["stat", "read_bytes"])
def test_a_card_that_cannot_be_read_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused: str
) -> None:
    """An unreadable card (its permissions, its directory's) was a PermissionError traceback out
    of the export's gate and `make model-slices`: the look-up (`is_file`'s stat) or the read."""
    card = tmp_path / "delay-full.json"
    card.write_bytes(b'{"version": "x"}')
    refuse_access(monkeypatch, card, refused)
    with pytest.raises(DataError, match=r"^cannot read .*delay-full\.json: Permission denied$"):
        read_card(card)
    assert recipe_from_card(card) == (None, f"cannot read {card}: Permission denied")

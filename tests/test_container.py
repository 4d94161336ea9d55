"""The container image: the Dockerfile's promises checked from its text (fast), and the image
built with buildah and serving /predict for real (slow, needs buildah and root)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
TEST_IMAGE = ROOT / "deploy" / "container" / "test-image.sh"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = (pending + stripped).strip()
        pending = ""
        if whole:
            keyword, _, arguments = whole.partition(" ")
            result.append((keyword.upper(), arguments.strip()))
    return result


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def final_stage(dockerfile: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(dockerfile) if keyword == "FROM")
    return dockerfile[last_from:]


def test_dockerfile_is_multi_stage_on_an_overridable_base(
    dockerfile: list[tuple[str, str]],
) -> None:
    froms = [i for i, (keyword, _) in enumerate(dockerfile) if keyword == "FROM"]
    assert len(froms) >= 2, "the image is built in a builder stage and copied into a runtime stage"
    args_before = [arguments for keyword, arguments in dockerfile[: froms[0]] if keyword == "ARG"]
    assert any(re.match(r"BASE_IMAGE(=|$)", arguments) for arguments in args_before)
    for i in froms:
        assert "${BASE_IMAGE}" in dockerfile[i][1] or "$BASE_IMAGE" in dockerfile[i][1]


def test_the_service_runs_as_a_non_root_user(dockerfile: list[tuple[str, str]]) -> None:
    users = [arguments for keyword, arguments in final_stage(dockerfile) if keyword == "USER"]
    assert users, "the runtime stage sets a USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_healthcheck_probes_readiness_without_curl(dockerfile: list[tuple[str, str]]) -> None:
    checks = [
        arguments for keyword, arguments in final_stage(dockerfile) if keyword == "HEALTHCHECK"
    ]
    assert len(checks) == 1
    assert "/v2/health/ready" in checks[0]
    # on the port app.settings listens on: BIND, else a platform's PORT (no BIND in the image)
    assert "'BIND'" in checks[0]
    assert "'PORT'" in checks[0]
    envs = " ".join(arguments for keyword, arguments in final_stage(dockerfile) if keyword == "ENV")
    assert not re.search(r"\bBIND=", envs)
    assert "curl" not in checks[0]
    assert "wget" not in checks[0]


def test_only_runtime_dependencies_are_installed(dockerfile: list[tuple[str, str]]) -> None:
    runs = " ".join(arguments for keyword, arguments in dockerfile if keyword == "RUN")
    assert "pip install" in runs
    assert not re.search(r"\[(train|dev)\b", runs), "the train/dev extras stay out of the image"
    for training_library in ("scikit-learn", "sklearn", "pandas", "skl2onnx", "matplotlib"):
        assert f"install {training_library}" not in runs
    assert "['project']['dependencies']" in runs, "installs [project].dependencies only"
    assert not any(
        keyword == "RUN" and "pip install" in arguments
        for keyword, arguments in final_stage(dockerfile)
    ), "nothing is pip-installed in the runtime stage: the venv comes from the builder"


def test_runtime_stage_serves_the_committed_models(dockerfile: list[tuple[str, str]]) -> None:
    stage = final_stage(dockerfile)
    envs = " ".join(arguments for keyword, arguments in stage if keyword == "ENV")
    models_dir = re.search(r"MODELS_DIR=(\S+)", envs)
    assert models_dir, "MODELS_DIR is explicit: the installed package cannot find ../models"
    workdir = next(arguments for keyword, arguments in stage if keyword == "WORKDIR")
    copies = [arguments for keyword, arguments in stage if keyword == "COPY"]
    assert any(c.split()[0] == "models" for c in copies)
    assert any(c.split()[0] == "gunicorn.conf.py" for c in copies)
    assert models_dir.group(1) in (f"{workdir}/models", f"{workdir.rstrip('/')}/models")
    cmd = next(arguments for keyword, arguments in stage if keyword == "CMD")
    assert "gunicorn.conf.py" in cmd
    assert "app.main:create_app()" in cmd
    assert ("EXPOSE", "8000") in stage


def test_dockerignore_keeps_the_build_context_small() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    for path in (".venv", ".git", "data", "reports", "tests", "benchmarks"):
        assert path in ignored, path


@pytest.mark.slow
def test_image_builds_and_serves_predictions(tmp_path: Path) -> None:
    """The script builds, serves and checks the image, and writes its report where REPORT says
    (`make image-report`'s reports/image.md)."""
    if shutil.which("buildah") is None:
        pytest.skip("buildah is not installed (apt-get install -y buildah debootstrap)")
    if os.geteuid() != 0:
        pytest.skip("building with buildah --isolation chroot and debootstrap needs root")
    # Popen, not run(timeout=): on a timeout the script gets SIGTERM so it stops its server.
    with subprocess.Popen(
        ["bash", str(TEST_IMAGE)],
        cwd=ROOT,
        env={**os.environ, "REPORT": str(tmp_path / "image.md")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        try:
            output, _ = process.communicate(timeout=1200)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=60)
            pytest.fail(f"test-image.sh took over 20 minutes:\n{output}")
    assert process.returncode == 0, output
    assert "POST /predict -> 200" in output, output
    assert re.search(r"SUMMARY image=\S+ size=.+ cold_start=[\d.]+s", output), output
    report = (tmp_path / "image.md").read_text()
    assert report.startswith("# The container image (`make image-report`)")
    assert re.search(r"^- Date: \S+; code: [0-9a-f]{7,}", report, re.MULTILINE), report
    row = report.rstrip().splitlines()[-1]
    assert re.fullmatch(
        r"\| \d[\d.]* [kMG]?B \| \d+ s \| [\d.]+ s \| 200 `\{.+\}` \| 3, all uid 10001 \| passes \|",
        row,
    ), row


def test_docker_build_defaults_to_the_public_slim_base_and_buildah_passes_its_own() -> None:
    args = re.findall(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert args == ["python:3.11-slim"], "`docker build .` pulls a public base"
    container_mk = (ROOT / "mk" / "container.mk").read_text()
    assert re.search(r"^BASE_IMAGE \?= localhost/", container_mk, re.MULTILINE)
    assert (
        container_mk.count("BASE_IMAGE=$(BASE_IMAGE) deploy/container/test-image.sh") == 3
    )  # image, image-test, image-report
    assert '--build-arg "BASE_IMAGE=$BASE_IMAGE"' in TEST_IMAGE.read_text()


def test_the_build_runs_the_release_check_on_the_models_it_ships(
    dockerfile: list[tuple[str, str]],
) -> None:
    stage = final_stage(dockerfile)
    checks = [
        i
        for i, (keyword, args) in enumerate(stage)
        if keyword == "RUN" and "app.inference.check_models" in args
    ]
    assert len(checks) == 1
    copy_models = next(
        i for i, (k, a) in enumerate(stage) if k == "COPY" and a.split()[0] == "models"
    )
    user = max(i for i, (keyword, _) in enumerate(stage) if keyword == "USER")
    assert copy_models < checks[0] < user
    assert '"$MODELS_DIR"' in stage[checks[0]][1]

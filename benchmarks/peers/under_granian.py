"""pytest plugin: the service's real-server tests, run against the same app under Granian.

`pytest -p benchmarks.peers.under_granian tests/test_server.py tests/test_reliability.py`
(`make granian-reliability`): tests.test_server's spawn and wait_until_ready, and
benchmarks.chaos.served, start `granian --interface asgi --factory app.main:create_app` from
build/peers/granian instead of gunicorn, with the same environment, so the same assertions
say which behaviours (limits, timeouts, drain, reload, request IDs, metrics across workers)
carry over to Granian. Never loaded by `make test`.
"""

from __future__ import annotations

import importlib
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from benchmarks.peers.launch import LAUNCHERS, environment, granian_command, launched
from benchmarks.stress import ROOT, _ready
from benchmarks.stress import Server as StressServer

GRANIAN = LAUNCHERS["granian"]
SETTLE = 1.0
"""Seconds after ready before a test starts: Granian logs no per-worker start-up line, so this
gives the second worker time to load its models."""


def _tests() -> Any:
    """tests.test_server, which holds the real-server tests' spawn (tests/ is not typed)."""
    return importlib.import_module("tests.test_server")


def spawn(workdir: Path, **env: str) -> Any:
    """tests.test_server.spawn's contract (a tests.test_server.Server), Granian serving."""
    test_server = _tests()
    workdir.mkdir(parents=True, exist_ok=True)
    port = test_server.free_port()
    environ = environment(
        {
            "BIND": f"{test_server.HOST}:{port}",
            "WORKERS": str(test_server.WORKERS),
            "LOG_LEVEL": "info",
            "TMPDIR": str(workdir),
            "XDG_RUNTIME_DIR": str(workdir),
            # named as gunicorn.conf.py names its own, where the tests look for it
            "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(
                prefix="latam-delay-metrics-", dir=workdir
            ),
            **env,
        }
    )
    stderr = workdir / "stderr.log"
    with stderr.open("wb") as err, (workdir / "stdout.log").open("wb") as out:
        process = subprocess.Popen(
            granian_command(GRANIAN.venv, test_server.HOST, port, environ),
            cwd=ROOT, env=environ,
            stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
        )  # fmt: skip
    return test_server.Server(process, port, workdir, stderr)


def wait_until_ready(server: Any) -> None:
    test_server = _tests()
    deadline = time.monotonic() + test_server.STARTUP_TIMEOUT
    while not _ready(server.url + "/v2/health/ready"):
        if server.process.poll() is not None:
            pytest.fail(f"granian exited with {server.process.returncode}:\n{server.log()}")
        if time.monotonic() > deadline:
            pytest.fail(f"granian not ready in {test_server.STARTUP_TIMEOUT} s:\n{server.log()}")
        time.sleep(0.1)
    time.sleep(SETTLE)


@contextmanager
def chaos_served(
    workdir: Path, models_dir: Path, workers: int = 2, worker_class: str = "", **env: str
) -> Iterator[StressServer]:
    """benchmarks.chaos.served's contract, Granian serving (worker_class has no meaning)."""
    extra = {"MODELS_DIR": str(models_dir), "TMPDIR": str(workdir), **env}
    with launched(GRANIAN, workdir / "server.log", 60, extra) as server:
        time.sleep(SETTLE)
        yield server


def pytest_configure(config: pytest.Config) -> None:
    if not GRANIAN.installed():
        raise pytest.UsageError(f"Granian is not installed in {GRANIAN.venv} (make peers)")
    from benchmarks import chaos

    test_server = _tests()
    test_server.spawn = spawn
    test_server.wait_until_ready = wait_until_ready
    chaos.served = chaos_served

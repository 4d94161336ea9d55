"""Starting the peers (and the service under Granian) the way compare.measure starts gunicorn.

Each runs from its own virtualenv under build/peers/<name> (mk/peers.mk), in the project
directory with the project on PYTHONPATH, from an environment cleared of the service's settings
(as compare.served clears it), on free loopback ports. The context manager yields a
benchmarks.stress.Server once the peer's readiness route answers 200, and on exit stops the
whole process group it started: the peers spawn helpers (inference workers, tritonserver and
its Python stubs) that must not outlive the run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks.stress import (
    ROOT,
    Server,
    StressError,
    _ready,
    defaults_environment,
    free_port,
    stop,
)

PEERS_DIR = ROOT / "build" / "peers"
WORKERS = 2
"""Worker processes (model instances for Triton) where the framework has workers."""
MODELS = ("delay-minimal", "delay-full")


@dataclass(frozen=True, slots=True)
class Ports:
    http: int
    grpc: int
    metrics: int

    @classmethod
    def free(cls) -> Ports:
        return cls(free_port(), free_port(), free_port())


@dataclass(frozen=True, slots=True)
class Launcher:
    """How one framework is started."""

    name: str
    """Also the virtualenv's folder under build/peers/."""
    version_of: str
    """The distribution whose version the report names."""
    ready_paths: tuple[str, ...]
    """Every one must answer 200 before the server counts as ready."""
    argv: Callable[[Path, Ports, Path, Mapping[str, str]], list[str]]
    """(virtualenv, ports, scratch directory, its environment) -> the command."""
    env: Callable[[Path, Path], Mapping[str, str]] = lambda venv, scratch: {}
    """(virtualenv, scratch directory) -> what its environment needs besides the common part."""

    @property
    def venv(self) -> Path:
        return PEERS_DIR / self.name

    def installed(self) -> bool:
        """mk/peers.mk's stamp: written only once every install step succeeded."""
        return (self.venv / ".installed").is_file()

    def version(self) -> str:
        """The framework's installed version, read from its virtualenv's metadata."""
        found = sorted(self.venv.glob(f"lib/python*/site-packages/{self.version_of}-*.dist-info"))
        return found[-1].name.removesuffix(".dist-info").split("-", 1)[1] if found else "?"


def _mlserver(venv: Path, ports: Ports, scratch: Path, env: Mapping[str, str]) -> list[str]:
    """MLServer's settings folder: the server's settings and one model-settings.json per model."""
    root = Path(tempfile.mkdtemp(prefix="mlserver-", dir=scratch))
    settings = {
        "host": "127.0.0.1",
        "http_port": ports.http,
        "grpc_port": ports.grpc,
        "metrics_port": ports.metrics,
        "parallel_workers": WORKERS,
        "debug": False,
        "metrics_dir": str(root / "metrics"),  # default: ./.metrics, in the project
    }
    (root / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    for name in MODELS:
        (root / name).mkdir()
        model = {"name": name, "implementation": "benchmarks.peers.mlserver_runtime.DelayRuntime"}
        (root / name / "model-settings.json").write_text(json.dumps(model), encoding="utf-8")
    return [str(venv / "bin" / "mlserver"), "start", str(root)]


def _bentoml(venv: Path, ports: Ports, scratch: Path, env: Mapping[str, str]) -> list[str]:
    return [
        str(venv / "bin" / "bentoml"), "serve", "benchmarks.peers.bentoml_service:Delay",
        "--host", "127.0.0.1", "--port", str(ports.http),
    ]  # fmt: skip


def _litserve(venv: Path, ports: Ports, scratch: Path, env: Mapping[str, str]) -> list[str]:
    return [str(venv / "bin" / "python"), "-m", "benchmarks.peers.litserve_server",
            "--port", str(ports.http), "--workers", str(WORKERS)]  # fmt: skip


def _pytriton(venv: Path, ports: Ports, scratch: Path, env: Mapping[str, str]) -> list[str]:
    return [
        str(venv / "bin" / "python"), "-m", "benchmarks.peers.pytriton_server",
        "--http-port", str(ports.http), "--grpc-port", str(ports.grpc),
        "--metrics-port", str(ports.metrics), "--instances", str(WORKERS),
        # in the run's scratch directory, not ~/.cache/pytriton, where a killed run leaves it
        "--workspace", str(Path(tempfile.mkdtemp(prefix="pytriton-", dir=scratch)) / "triton"),
    ]  # fmt: skip


def granian_command(venv: Path, host: str, port: int | str, env: Mapping[str, str]) -> list[str]:
    """The service's own app under Granian, as a deployment would run it: WORKERS, LOG_LEVEL
    and HEAD_TIMEOUT mapped to Granian's options where it has one, access log off (as the
    service's default), failed workers respawned (as gunicorn does)."""
    head_timeout_ms = round(float(env.get("HEAD_TIMEOUT") or 10) * 1000)
    return [
        str(venv / "bin" / "granian"), "--interface", "asgi", "--factory",
        "--workers", env.get("WORKERS") or str(WORKERS), "--host", host, "--port", str(port),
        "--http1-header-read-timeout", str(head_timeout_ms), "--respawn-failed-workers",
        "--log-level", env.get("LOG_LEVEL") or "warning", "app.main:create_app",
    ]  # fmt: skip


def _granian(venv: Path, ports: Ports, scratch: Path, env: Mapping[str, str]) -> list[str]:
    return granian_command(venv, "127.0.0.1", ports.http, env)


def _python_library(venv: Path, scratch: Path) -> dict[str, str]:
    """PyTriton's tritonserver links libpython3.11: that of the interpreter that made the
    virtualenv (pyvenv.cfg's `home`) must come before the system's, or its stubs load another."""
    config = (venv / "pyvenv.cfg").read_text(encoding="utf-8").splitlines()
    home = next(line.split("=", 1)[1].strip() for line in config if line.startswith("home"))
    return {"LD_LIBRARY_PATH": str(Path(home).parent / "lib")}


def _metrics_dir(venv: Path, scratch: Path) -> dict[str, str]:
    """The service sums its metrics across workers through this directory: gunicorn.conf.py
    makes one, under Granian nothing else does."""
    return {"PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="metrics-", dir=scratch)}


LAUNCHERS = {
    launcher.name: launcher
    for launcher in (
        Launcher("mlserver", "mlserver", ("/v2/health/ready",), _mlserver),
        Launcher("bentoml", "bentoml", ("/readyz",), _bentoml),
        Launcher("litserve", "litserve", ("/health",), _litserve),
        # Triton is ready before PyTriton has loaded the models into it.
        Launcher("pytriton", "nvidia_pytriton", tuple(f"/v2/models/{name}/ready" for name in MODELS),
                 _pytriton, _python_library),
        Launcher("granian", "granian", ("/v2/health/ready",), _granian, _metrics_dir),
    )
}  # fmt: skip


def environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of the README's defaults (stress.defaults_environment), the project
    importable, the committed models unless `extra` names others."""
    env = defaults_environment()
    env["PYTHONPATH"] = str(ROOT)
    env["MODELS_DIR"] = str(ROOT / "models")
    library = env.get("LD_LIBRARY_PATH")
    for key, value in extra.items():
        env[key] = f"{value}:{library}" if key == "LD_LIBRARY_PATH" and library else value
    return env


@contextmanager
def launched(
    launcher: Launcher, log: Path, ready_timeout: float, env: Mapping[str, str] | None = None
) -> Iterator[Server]:
    """The framework on free loopback ports until the block ends."""
    if not launcher.installed():
        raise StressError(f"{launcher.name} is not installed in {launcher.venv} (make peers)")
    ports = Ports.free()
    full_env = environment({**launcher.env(launcher.venv, log.parent), **(env or {})})
    command = launcher.argv(launcher.venv, ports, log.parent, full_env)
    with log.open("wb") as sink:
        spawned = time.monotonic()
        process = subprocess.Popen(
            command, cwd=ROOT, env=full_env, stdin=subprocess.DEVNULL, stdout=sink,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{ports.http}"
    server = Server(process, url, log, command, None)
    try:
        deadline = spawned + ready_timeout
        while not all(_ready(url + path) for path in launcher.ready_paths):
            if process.poll() is not None:
                raise StressError(
                    f"{launcher.name} exited with {process.returncode} before it was ready:\n"
                    + server.log_tail()
                )
            if time.monotonic() > deadline:
                raise StressError(f"{launcher.name} not ready in {ready_timeout} s:\n"
                                  + server.log_tail())  # fmt: skip
            time.sleep(0.1)
        yield Server(process, url, log, command, None, time.monotonic() - spawned)
    finally:
        stop(process)
        _kill_group(process.pid)


def _kill_group(group: int) -> None:
    """Whatever of the started session is left (helpers the leader did not reap)."""
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        return
    for _ in range(50):
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)

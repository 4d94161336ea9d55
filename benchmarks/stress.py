"""A bounded wrk stress run of `POST /predict` against the service served as the README serves it.

Starts `gunicorn -c gunicorn.conf.py 'app.main:create_app()'` on a free loopback port, waits
until it is ready, runs wrk with `wrk/predict.lua`, stops the server, then writes
`README.md` and `latency.png` to --out. Exits non-zero, saying why, when the run did not reach
--min-requests or saw any socket error or non-2xx answer.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.settings import Settings
from benchmarks.stress_report import (
    CpuUse,
    RunInfo,
    failures,
    parse_summary,
    plot_latency,
    render_markdown,
)
from train.provenance import machine

ROOT = Path(__file__).resolve().parent.parent
APP = "app.main:create_app()"
GUNICORN = Path(sys.executable).parent / "gunicorn"
"""This interpreter's gunicorn: the one the benchmarks serve with."""
READY_PATH = "/v2/health/ready"
MIXES = {
    "minimal.jsonl": "minimal single flights: the table path, as served by default",
    "full.jsonl": "full-schedule single flights: onnxruntime full",
}
"""What each body file measures, for the report's title (issue 10: every figure names its path)."""
SERVICE_SETTINGS = (
    "WORKERS", "WEB_CONCURRENCY", "TABULATE_MINIMAL", "ORT_THREADS", "ACCESS_LOG", "LOG_LEVEL",
    "LOG_FORMAT", "MODELS_DIR", "MAX_BODY_BYTES", "MAX_FLIGHTS", "MAX_HEAD_BYTES", "HEAD_TIMEOUT",
    "BODY_TIMEOUT", "MAX_IN_FLIGHT", "HOLD_EARLY_RETRIES", "CROWDED_CONNECTIONS",
    "CROWDED_IN_FLIGHT", "CROWDED_WINDOW", "MAX_CONNECTIONS", "OFFLOAD_FLIGHTS", "OFFLOAD_BYTES",
    "PROMETHEUS_MULTIPROC_DIR", "REFERENCE_MODEL", "MICROBATCH", "METRICS_BIND", "PORT", "BIND",
    "GRPC_BIND", "GRPC_MAX_STREAMS", "GRPC_MAX_CONNECTIONS", "GRPC_IDLE_SECONDS",
    "GRPC_MAX_AGE_SECONDS", "OTEL_EXPORTER_OTLP_ENDPOINT", "DRIFT", "DRIFT_WINDOW",
    "GUNICORN_CMD_ARGS",
)  # fmt: skip
"""Every variable app.settings reads (tests/test_benchmark_environment.py holds the list to it),
and gunicorn's own GUNICORN_CMD_ARGS: a shell's WEB_CONCURRENCY, MAX_IN_FLIGHT or
OTEL_EXPORTER_OTLP_ENDPOINT changed what a benchmark measured while its report said the README's
defaults."""


def defaults_environment(settings: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment cleared of the service's settings (SERVICE_SETTINGS and every
    LATAM_DELAY_* variable), then `settings`: a server started from it differs from the
    README's defaults by `settings` alone, whatever the shell running the benchmark has set."""
    kept = {
        key: value
        for key, value in os.environ.items()
        if key not in SERVICE_SETTINGS and not key.startswith("LATAM_DELAY_")
    }
    return kept | dict(settings or {})


WORKER_STARTED = "Application startup complete"
"""uvicorn's line once a worker's lifespan (model loading) is done: one per worker."""


class StressError(Exception):
    """The run could not happen (no wrk, server never ready): no numbers to judge."""


@dataclass(frozen=True, slots=True)
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    command: list[str]
    workers: int | None
    ready_s: float = 0.0
    """Seconds from spawn to the first 200 of the readiness route."""

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def served(
    gunicorn: Path,
    port: int,
    ready_timeout: float,
    log: Path,
    app: str = APP,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> Iterator[Server]:
    """The README's serve command (or `app` with `extra_args` and `env` instead of the
    process's environment) on 127.0.0.1:port; SIGTERM and a bounded wait on exit."""
    command = [str(gunicorn), "-c", "gunicorn.conf.py", *extra_args, app]
    # gRPC (GRPC_BIND, default 0.0.0.0:8001) only where a caller asks for it, on loopback
    env = {"GRPC_BIND": "", **(os.environ if env is None else env), "BIND": f"127.0.0.1:{port}"}
    with log.open("wb") as sink:
        spawned = time.monotonic()
        try:
            process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=sink,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        except OSError as error:
            raise StressError(f"cannot start {gunicorn}: {error}") from None
    server = Server(process, f"http://127.0.0.1:{port}", log, command, None)
    try:
        ready_s = wait_ready(server, spawned, spawned + ready_timeout, expected_workers(env))
        yield Server(process, server.url, log, command, worker_count(process.pid), ready_s)
    finally:
        stop(process)


def expected_workers(env: Mapping[str, str]) -> int | None:
    """The workers gunicorn.conf.py starts with `env` (None if its settings are refused)."""
    try:
        return Settings.from_env(env).workers
    except ValueError:  # a refused setting: the server will say so itself
        return None


def wait_ready(
    server: Server,
    spawned: float,
    deadline: float,
    workers: int | None = None,
    worker_grace: float = 15,
) -> float:
    """Ready answers 200, then every worker has loaded its models (else wrk meets cold ones,
    or one worker takes every connection while the next is still starting). Returns the
    seconds from `spawned` to the first 200.

    `workers` is how many gunicorn starts; counting the master's children instead misses a
    worker not yet forked when the first answers (a full stress run was served by one).

    Worker start-up is read from uvicorn's log line, so a quieter LOG_LEVEL only costs a
    warning and `worker_grace` seconds, not the run.
    """
    while not _ready(server.url + READY_PATH):
        _check_alive(server, deadline, f"{READY_PATH} never answered 200")
        time.sleep(0.05)
    ready_s = time.monotonic() - spawned
    grace = min(deadline, time.monotonic() + worker_grace)
    while _started(server.log) < (workers or worker_count(server.process.pid) or 1):
        _check_alive(server, deadline, "not every worker finished starting")
        if time.monotonic() > grace:
            print(f"stress: warning: no {WORKER_STARTED!r} from every worker", file=sys.stderr)
            return ready_s
        time.sleep(0.2)
    return ready_s


LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""An opener that uses no proxy from the environment: the benchmarks' probes and scrapes, like
wrk, only talk to the servers they start on 127.0.0.1."""


def scrape(url: str, timeout: float = 10) -> str:
    """The server's /metrics (Prometheus text)."""
    with LOOPBACK.open(f"{url}/metrics", timeout=timeout) as answer:
        text: str = answer.read().decode("utf-8")
        return text


def _ready(url: str) -> bool:
    try:
        with LOOPBACK.open(url, timeout=2) as answer:
            status: int = answer.status
            return status == 200
    except (urllib.error.URLError, OSError):
        return False


def _started(log: Path) -> int:
    return log.read_text(encoding="utf-8", errors="replace").count(WORKER_STARTED)


def _check_alive(server: Server, deadline: float, problem: str) -> None:
    if server.process.poll() is not None:
        raise StressError(
            f"the server exited with {server.process.returncode} before it was ready:\n"
            + server.log_tail()
        )
    if time.monotonic() > deadline:
        raise StressError(f"{problem} within the ready timeout:\n" + server.log_tail())


def worker_count(pid: int) -> int | None:
    """The master's child processes, from /proc (None where Linux does not expose them)."""
    try:
        return len(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    except OSError:
        return None


def stop(process: subprocess.Popen[bytes], grace: float = 30) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        # Only the session this run started: the master and its own workers.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def wrk_command(args: argparse.Namespace, script: str, url: str) -> list[str]:
    return [
        args.wrk,
        f"--threads={args.threads}",
        f"--connections={args.connections}",
        f"--duration={args.duration}s",
        f"--timeout={args.timeout}s",
        f"--script={script}",
        url,
    ]


def run_wrk(command: list[str], bodies: Path, duration: int) -> str:
    env = {**os.environ, "WRK_BODIES": _display(bodies)}
    try:
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=duration + 60,
            check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise StressError(f"wrk did not finish within {duration + 60} s") from None
    if done.returncode != 0:
        raise StressError(f"wrk exited with {done.returncode}:\n{done.stderr}{done.stdout}")
    return done.stdout


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(stat: str) -> float:
    """utime + stime, in seconds, of a /proc/<pid>/stat line (all its threads). The command
    name, in parentheses, may itself hold spaces and parentheses: fields count from its end."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of proc(5)


def machine_cpu_s(proc_stat: str, cpus: Iterable[int] | None = None) -> tuple[float, float]:
    """(busy, all) CPU seconds since boot, from /proc/stat: of every core (its `cpu` line) or of
    the `cpus` named (their `cpu<N>` lines); all is user .. steal, busy all but idle and
    iowait."""
    names = {"cpu"} if cpus is None else {f"cpu{cpu}" for cpu in cpus}
    busy = total = 0
    for line in proc_stat.splitlines():
        fields = line.split()
        if fields and fields[0] in names:
            ticks = [int(value) for value in fields[1:9]]
            total += sum(ticks)
            busy += sum(ticks) - ticks[3] - ticks[4]
    return busy / CLOCK_TICKS, total / CLOCK_TICKS


def process_tree(master: int) -> list[int]:
    """The master and every process under it (workers, and the helpers a peer framework
    spawns), from /proc: each thread's children, since a process started by a thread other
    than the main one is listed under that thread."""
    found = [master]
    for pid in found:  # grows while it is walked: breadth first
        found.extend(_children(pid))
    return found


def _children(pid: int) -> list[int]:
    listed = list(Path(f"/proc/{pid}/task").glob("*/children"))
    if listed:
        children: list[int] = []
        for path in listed:
            try:
                children.extend(int(child) for child in path.read_text().split())
            except OSError:  # the thread ended meanwhile
                continue
        return children
    # no CONFIG_PROC_CHILDREN: scan every process's parent
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of each process itself (not of its reaped children), summed."""
    return sum(process_cpu_s(Path(f"/proc/{pid}/stat").read_text()) for pid in pids)


@dataclass(frozen=True, slots=True)
class Clocks:
    """CPU-seconds used so far, read at one instant."""

    server: float | None
    """The gunicorn master and workers; None if one of them is gone."""
    children: float
    """This process's waited-for children: wrk, once run_wrk has returned."""
    machine: float
    """Every core's busy time (/proc/stat): the server, wrk and everyone else."""


def clocks(pids: Sequence[int]) -> Clocks:
    try:
        server: float | None = cpu_seconds(pids)
    except (OSError, IndexError, ValueError):
        server = None
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[1:8])
    busy = (user + nice + system + irq + softirq) / CLOCK_TICKS
    return Clocks(server, usage.ru_utime + usage.ru_stime, busy)


def cpu_use(before: Clocks, after: Clocks, same_workers: bool) -> CpuUse:
    """What the server, wrk (this process's waited-for child) and the rest of the machine spent
    between two readings; the server's is unknown when its processes changed between them."""
    server = (
        after.server - before.server
        if same_workers and before.server is not None and after.server is not None
        else None
    )
    wrk = after.children - before.children
    return CpuUse(server, wrk, after.machine - before.machine - wrk - (server or 0.0))


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def commit(short: bool = True) -> tuple[str, bool] | None:
    """HEAD (abbreviated, or the full hash) and whether tracked files differ from it (others
    edit the tree too); None where git cannot tell. One helper for every benchmark's report."""
    git = ["git", "-C", str(ROOT)]
    head = [*git, "rev-parse", *(["--short"] if short else []), "HEAD"]
    try:
        sha = subprocess.run(head, capture_output=True, text=True, timeout=10, check=True).stdout
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return sha.strip(), bool(dirty.strip())


def revision() -> str:
    """The commit measured, as a report states it: `abc1234`, or `abc1234 + uncommitted changes`."""
    state = commit()
    if state is None:
        return "unknown"
    head, dirty = state
    return f"{head} + uncommitted changes" if dirty else head


def publish(result: dict[str, Any], report: str, out: Path | None, name: str) -> None:
    """Prints a benchmark's Markdown report and, given `out`, writes it there as `name`.md
    beside its figures as `name`.json."""
    print(report)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / f"{name}.md").write_text(report)


def _display(path: Path | str) -> str:
    """Paths relative to the project, as someone would type them there."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stress", description=__doc__)
    parser.add_argument("--duration", type=int, default=45, help="seconds of traffic")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--timeout", type=int, default=5, help="wrk's per-request timeout, s")
    parser.add_argument("--bodies", type=Path, default=Path("build/wrk/minimal.jsonl"))
    parser.add_argument("--script", type=Path, default=Path("wrk/predict.lua"))
    parser.add_argument("--out", type=Path, default=Path("reports/stress"))
    parser.add_argument("--min-requests", type=int, default=50_000)
    parser.add_argument("--ready-timeout", type=float, default=60, help="seconds")
    parser.add_argument("--wrk", default="wrk", help="the wrk executable")
    parser.add_argument(
        "--revision",
        help="the code's revision as the report states it (default: `revision()` as the run "
        "starts); `make stress` takes it once before its first run, whose report would "
        "otherwise make the tree look changed to the second",
    )
    parser.add_argument(
        "--gunicorn", type=Path, default=GUNICORN,
        help="the project's .venv/bin/gunicorn",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads (wrk gives each thread a share)")
    return args


def run(args: argparse.Namespace, command: str) -> list[str]:
    """One stress run; returns the reasons it failed (empty when it passed)."""
    if shutil.which(args.wrk) is None:
        raise StressError(f"{args.wrk!r} is not on PATH (apt-get install wrk)")
    bodies = args.bodies.resolve()
    if not bodies.is_file():
        raise StressError(f"no bodies at {args.bodies}: run `make bodies` first")
    script = args.script.resolve()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    load = load_average()
    measured = args.revision or revision()  # before the run: the code as it is served
    with (
        tempfile.TemporaryDirectory(prefix="stress-") as scratch,
        served(
            args.gunicorn,
            free_port(),
            args.ready_timeout,
            Path(scratch) / "server.log",
            env=defaults_environment(),  # the README's serve command, as the report names it
        ) as server,
    ):
        pids = process_tree(server.process.pid)
        before = clocks(pids)
        output = run_wrk(wrk_command(args, str(script), server.url), bodies, args.duration)
        after = clocks(pids)
        died = server.process.poll()
        if died is not None:
            raise StressError(f"the server died during the run ({died}):\n{server.log_tail()}")
        spent = cpu_use(before, after, same_workers=process_tree(server.process.pid) == pids)
    summary = parse_summary(output)
    uname, cpu, nproc = machine()
    shown_wrk = wrk_command(args, _display(script), "http://127.0.0.1:<free port>")
    info = RunInfo(
        date_utc=date,
        uname=uname,
        cpu_model=cpu,
        nproc=nproc,
        load_average=load,
        command=command,
        server_command=(
            f"BIND=127.0.0.1:<free port> {_display(server.command[0])} -c gunicorn.conf.py '{APP}'"
        ),
        wrk_command=f"WRK_BODIES={_display(bodies)} {shlex.join(shown_wrk)}",
        workers=server.workers,
        connections=args.connections,
        mix=MIXES.get(bodies.name, bodies.name),
        revision=measured,
        cpu=spent,
        wrk_output="\n".join(
            line for line in output.splitlines() if not line.startswith('{"tool":"wrk"')
        ),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "README.md").write_text(
        render_markdown(summary, info, args.min_requests), encoding="utf-8"
    )
    plot_latency(summary, args.out / "latency.png")
    lat = summary.latency
    print(
        f"{summary.requests:,} requests in {summary.duration_s:.1f} s, "
        f"{summary.requests_per_s:,.0f} req/s, p50 {lat.p50 / 1000:.2f} ms, "
        f"p99 {lat.p99 / 1000:.2f} ms, max {lat.max / 1000:.2f} ms, "
        f"{summary.errors.socket} socket errors, {summary.non_2xx} non-2xx; "
        f"report in {args.out}/README.md"
    )
    return failures(summary, args.min_requests)


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    command = shlex.join(["python", "-m", "benchmarks.stress", *raw])
    try:
        reasons = run(args, command)
    except StressError as error:
        print(f"stress: {error}", file=sys.stderr)
        return 2
    for reason in reasons:
        print(f"stress: FAIL: {reason}", file=sys.stderr)
    return 1 if reasons else 0


if __name__ == "__main__":
    sys.exit(main())

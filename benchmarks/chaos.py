"""Failure experiments against the service as deployed, under wrk load on 127.0.0.1.

    python -m benchmarks.chaos worker-kill   # SIGKILL one worker mid-run; the master replaces it
    python -m benchmarks.chaos reload        # SIGHUP with a new model release, then a corrupt one
    python -m benchmarks.chaos shutdown      # SIGTERM mid-run, with slow requests in flight
    python -m benchmarks.chaos storm         # 20 SIGHUPs in 2 s, good and broken releases
    python -m benchmarks.chaos all

Each starts gunicorn with gunicorn.conf.py (2 workers) on a free loopback port, runs wrk with
wrk/predict.lua for --duration seconds (bounded: wrk's own duration, a subprocess timeout), acts
at fixed points of the run, and writes what happened to --out/<experiment>.json. It exits
non-zero when an expectation failed, saying which. The figures go into reports/reliability.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import stress
from benchmarks.stress import GUNICORN, Server, StressError, free_port, load_average
from benchmarks.stress_report import WrkSummary, parse_summary
from train.provenance import machine

if TYPE_CHECKING:
    from asyncio import StreamReader, StreamWriter

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "models"
UNBOUNDED = "1000000"
"""`MAX_IN_FLIGHT` for a server whose in-flight bound never sheds in these experiments."""
APP = "app.main:create_app()"
MODEL = "delay-minimal"
ACCOUNTING_CONNECTIONS = 16


@dataclass
class Outcome:
    experiment: str
    date_utc: str
    machine: dict[str, Any]
    load_average_before: str
    load_average_after: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    wrk: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    log_excerpt: list[str] = field(default_factory=list)

    def event(self, start: float, what: str, **details: Any) -> None:
        self.events.append({"t_s": round(time.monotonic() - start, 2), "what": what, **details})

    @property
    def passed(self) -> bool:
        return all(self.checks.values())


# --- the server ------------------------------------------------------------------------------


def served(
    workdir: Path, models_dir: Path, workers: int = 2, worker_class: str = "", **env: str
) -> AbstractContextManager[Server]:
    """gunicorn as deployed, in its own session; SIGTERM and a bounded wait on exit."""
    return served_by(GUNICORN, workdir, models_dir, workers,
                     worker_class, env)  # fmt: skip


@contextmanager
def served_by(
    gunicorn: Path,
    workdir: Path,
    models_dir: Path,
    workers: int = 2,
    worker_class: str = "",
    env: Mapping[str, str] | None = None,
) -> Iterator[Server]:
    """`served`, started by `gunicorn` (a launcher that drops privileges, say)."""
    port = free_port()
    environment = stress.defaults_environment(
        {
            "BIND": f"127.0.0.1:{port}",
            "WORKERS": str(workers),
            "MODELS_DIR": str(models_dir),
            "TMPDIR": str(workdir),
            **(env or {}),
        }
    )
    extra_args = ("-k", worker_class) if worker_class else ()
    with stress.served(
        gunicorn, port, 60, workdir / "server.log", env=environment, extra_args=extra_args
    ) as server:
        yield server


def worker_pids(master: int) -> list[int]:
    try:
        return [
            int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()
        ]
    except OSError:
        return []


def established_connections(pid: int, port: int) -> int:
    """TCP connections to `port` that process `pid` holds open (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


def log_lines(server: Server, *needles: str) -> list[str]:
    text = server.log.read_text(encoding="utf-8", errors="replace")
    return [line for line in text.splitlines() if any(needle in line for needle in needles)]


def get_json(url: str, timeout: float = 5) -> Any:
    with stress.LOOPBACK.open(url, timeout=timeout) as answer:
        return json.loads(answer.read())


def served_version(server: Server, model: str = MODEL) -> str:
    version: str = get_json(f"{server.url}/v2/models/{model}")["versions"][0]
    return version


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


# --- the load --------------------------------------------------------------------------------


class Wrk:
    """One wrk run in the background: started now, `result()` waits for it (bounded)."""

    def __init__(
        self,
        url: str,
        duration: int,
        connections: int,
        threads: int,
        bodies: Path,
        wrk: str = "wrk",
        timeout: float = 5,
        script: str = "predict.lua",
    ) -> None:
        self.duration = duration
        self.command = [
            wrk, f"--threads={threads}", f"--connections={connections}",
            f"--duration={duration}s", f"--timeout={timeout:g}s",
            f"--script={ROOT / 'wrk' / script}", url,
        ]  # fmt: skip
        env = {**os.environ, "WRK_BODIES": str(bodies)}
        self.process = subprocess.Popen(
            self.command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip

    def result(self) -> WrkSummary:
        try:
            out, err = self.process.communicate(timeout=self.duration + 60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise StressError(f"wrk did not finish within {self.duration + 60} s") from None
        if self.process.returncode != 0:
            raise StressError(f"wrk exited with {self.process.returncode}:\n{err}{out}")
        return parse_summary(out)


@dataclass
class Tally:
    """What an accounting client saw: every request is answered, lost after it was sent
    (reset or closed before its answer), or never sent (the connect was refused)."""

    answered: dict[str, int] = field(default_factory=dict)
    timed: list[tuple[int, float]] = field(default_factory=list, repr=False)
    """(status, seconds from send to the whole answer) of each answered request."""
    lost: int = 0
    lost_errors: dict[str, int] = field(default_factory=dict)
    refused_connects: int = 0

    def counts(self) -> dict[str, Any]:
        """Everything but `timed`, for a report: one entry per request is megabytes of JSON."""
        return {key: value for key, value in asdict(self).items() if key != "timed"}


async def _client(
    port: int, request: bytes, deadline: float, tally: Tally, backoff: bool = False
) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            tally.refused_connects += 1
            await asyncio.sleep(0.05)
            continue
        try:
            while loop.time() < deadline:
                sent = time.perf_counter()  # uvloop's loop.time() ticks in milliseconds
                writer.write(request)
                try:
                    status, head = await read_answer(reader, writer)
                except (OSError, asyncio.IncompleteReadError) as error:
                    tally.lost += 1
                    name = type(error).__name__
                    tally.lost_errors[name] = tally.lost_errors.get(name, 0) + 1
                    break
                tally.answered[str(status)] = tally.answered.get(str(status), 0) + 1
                tally.timed.append((status, time.perf_counter() - sent))
                if backoff and status == 503:
                    await asyncio.sleep(min(retry_after(head), max(0, deadline - loop.time())))
                if b"connection: close" in head.lower():
                    break  # the server said so: this is no failure, reconnect
        finally:
            writer.close()


def post(body: bytes) -> bytes:
    """A keep-alive `POST /predict` of a JSON body, as bytes to write."""
    return (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body


async def read_answer(reader: StreamReader, writer: StreamWriter) -> tuple[int, bytes]:
    """Once what was written is sent, the next answer on the connection: its status and head
    (its body, sized by Content-Length as this service's always are, read and dropped)."""
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1]), head


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile: a value that was measured, never interpolated."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def retry_after(head: bytes) -> int:
    """The seconds of a response head's Retry-After (delta-seconds; 0 if none)."""
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"retry-after" and value.strip().isdigit():
            return int(value)
    return 0


def accounting_load(
    port: int, seconds: float, connections: int, body: bytes, backoff: bool = False
) -> Tally:
    """`connections` keep-alive clients posting `body` for `seconds`, in this thread. With
    `backoff`, a client answered 503 waits its Retry-After before the next request, as the
    service's users are expected to (wrk/backoff.lua does the same for wrk)."""
    import asyncio

    import uvloop

    request = post(body)
    tally = Tally()

    async def clients() -> None:
        deadline = asyncio.get_running_loop().time() + seconds
        await asyncio.gather(
            *(_client(port, request, deadline, tally, backoff) for _ in range(connections))
        )

    uvloop.run(clients())
    return tally


def wrk_figures(summary: WrkSummary) -> dict[str, Any]:
    return {
        "requests": summary.requests,
        "duration_s": round(summary.duration_s, 1),
        "requests_per_s": round(summary.requests_per_s),
        "errors": asdict(summary.errors),
        "non_2xx": summary.non_2xx,
        "statuses": {str(k): v for k, v in summary.statuses.items()},
        "latency_ms": {
            "p50": summary.latency.p50 / 1000,
            "p99": summary.latency.p99 / 1000,
            "max": summary.latency.max / 1000,
        },
    }


def failed_requests(summary: WrkSummary) -> int:
    """Requests sent that got no answer or a non-2xx: not counting refused connects."""
    e = summary.errors
    return e.read + e.write + e.timeout + (summary.non_2xx or 0)


def until(start: float, offset: float) -> None:
    time.sleep(max(0.0, start + offset - time.monotonic()))


# --- model releases --------------------------------------------------------------------------


def retagged_release(source: Path, target: Path, tag: str) -> dict[str, str]:
    """A copy of `source`'s models whose ONNX files carry `tag` in their doc string: new bytes,
    so new sha256 and version, predicting exactly as before. Returns name -> new version."""
    import onnx

    target.mkdir(parents=True)
    versions = {}
    for card_path in sorted(source.glob("*.json")):
        card = json.loads(card_path.read_text(encoding="utf-8"))
        model = onnx.load_from_string((source / card["onnx"]["file"]).read_bytes())
        model.doc_string = f"{model.doc_string} [{tag}]".strip()
        data = model.SerializeToString()
        digest = hashlib.sha256(data).hexdigest()
        card["onnx"] |= {"sha256": digest, "bytes": len(data)}
        card["version"] = digest[:12]
        (target / card["onnx"]["file"]).write_bytes(data)
        (target / card_path.name).write_text(json.dumps(card, indent=2), encoding="utf-8")
        versions[card["name"]] = card["version"]
    return versions


def corrupt_release(source: Path, target: Path) -> None:
    """A copy whose full model's ONNX file is cut in half (its card's sha256 no longer matches)."""
    shutil.copytree(source, target)
    onnx_file = target / "delay-full.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[: onnx_file.stat().st_size // 2])


def point(link: Path, release: Path) -> None:
    """Atomically repoints the symlink `link` at `release` (rename over it)."""
    temporary = link.with_name(link.name + ".new")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(release)
    os.replace(temporary, link)


# --- experiments -----------------------------------------------------------------------------


def started_outcome(name: str, settings: dict[str, Any]) -> Outcome:
    """An experiment's record as it starts: when, on what machine, at what load."""
    uname, cpu, nproc = machine()
    return Outcome(
        experiment=name,
        date_utc=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        machine={"uname": uname, "cpu": cpu, "nproc": nproc},
        load_average_before=load_average(),
        settings=settings,
    )


def new_outcome(name: str, args: argparse.Namespace) -> Outcome:
    return started_outcome(
        name,
        {
            "duration_s": args.duration,
            "connections": args.connections,
            "threads": args.threads,
            "workers": 2,
            "bodies": str(args.bodies),
            "worker_class": args.worker_class
            or "gunicorn.conf.py's (app.server.worker.UvicornWorker)",
        },
    )


def worker_kill(args: argparse.Namespace, workdir: Path) -> Outcome:
    """SIGKILL one of two workers a third into the run; a second, small wrk run starts once the
    master has replaced it and must see no error at all.

    The in-flight bound is off, as in `shutdown`: the killed worker's clients reconnect before
    its replacement is up, so the survivor holds all of wrk's 64 connections, and keep-alive
    keeps them there; with the second wrk's 8 it holds more than the default bound's 64 and
    sheds (3,194 503s in one 45-s run, none in another: reports/reliability.md, section 3).
    What this measures is losing only the killed worker's requests, not shedding."""
    outcome = new_outcome("worker-kill", args)
    with served(
        workdir, MODELS_DIR, worker_class=args.worker_class, MAX_IN_FLIGHT=UNBOUNDED
    ) as server:
        port = int(server.url.rsplit(":", 1)[1])
        start = time.monotonic()
        main = Wrk(server.url, args.duration, args.connections, args.threads, args.bodies, args.wrk)
        until(start, args.duration / 3)
        before = worker_pids(server.process.pid)
        victim = before[0]
        held = established_connections(victim, port)
        started = len(log_lines(server, "Application startup complete"))
        os.kill(victim, signal.SIGKILL)
        outcome.event(start, "SIGKILL", worker=victim, connections_it_held=held)
        replaced = wait_for(
            lambda: (
                len(worker_pids(server.process.pid)) == 2
                and victim not in worker_pids(server.process.pid)
                and len(log_lines(server, "Application startup complete")) > started
            ),
            timeout=30,
        )
        outcome.event(start, "replacement ready" if replaced else "no replacement within 30 s",
                      workers=worker_pids(server.process.pid))  # fmt: skip
        after_duration = int(args.duration - (time.monotonic() - start) - 3)
        after = None
        if after_duration >= 3:
            time.sleep(1)
            outcome.event(start, "after-replacement wrk starts", duration_s=after_duration)
            after = Wrk(server.url, after_duration, 8, 1, args.bodies, args.wrk)
        main_result = main.result()
        outcome.wrk["main"] = wrk_figures(main_result)
        failed = failed_requests(main_result)
        outcome.checks["master replaced the killed worker"] = replaced
        outcome.checks["failed requests <= connections the killed worker held"] = failed <= held
        if after is not None:
            after_result = after.result()
            outcome.wrk["after_replacement"] = wrk_figures(after_result)
            outcome.checks["zero errors after the replacement"] = (
                failed_requests(after_result) == 0 and after_result.errors.connect == 0
            )
        outcome.checks["server still running"] = server.process.poll() is None
        outcome.log_excerpt = log_lines(server, "SIGKILL", "Booting worker", "ERROR")[-8:]
    return outcome


def reload(args: argparse.Namespace, workdir: Path) -> Outcome:
    """SIGHUP after repointing MODELS_DIR at a new release a third into the run, then at a
    corrupt one two thirds in: no failed request, the new version served, the corrupt refused."""
    outcome = new_outcome("reload", args)
    releases = workdir / "releases"
    first = releases / "r1"
    shutil.copytree(MODELS_DIR, first)
    new_versions = retagged_release(MODELS_DIR, releases / "r2", "chaos r2")
    corrupt_release(MODELS_DIR, releases / "broken")
    current = workdir / "current"
    current.symlink_to(first)
    with served(workdir, current, worker_class=args.worker_class) as server:
        old_version = served_version(server)
        start = time.monotonic()
        main = Wrk(server.url, args.duration, args.connections, args.threads, args.bodies, args.wrk)
        until(start, args.duration / 3)
        pids = worker_pids(server.process.pid)
        point(current, releases / "r2")
        os.kill(server.process.pid, signal.SIGHUP)
        outcome.event(start, "MODELS_DIR -> r2, SIGHUP", old_version=old_version,
                      new_version=new_versions[MODEL])  # fmt: skip
        swapped = wait_for(lambda: _stable_version(server) == new_versions[MODEL], timeout=30)
        outcome.event(start, "new version served" if swapped else "new version not served in 30 s")
        renewed = wait_for(lambda: not set(pids) & set(worker_pids(server.process.pid)), 30)
        outcome.event(start, "old workers gone" if renewed else "old workers still there",
                      workers=worker_pids(server.process.pid))  # fmt: skip

        until(start, 2 * args.duration / 3)
        refused_before = len(log_lines(server, "model reload refused"))
        point(current, releases / "broken")
        os.kill(server.process.pid, signal.SIGHUP)
        outcome.event(start, "MODELS_DIR -> broken, SIGHUP")
        refused = wait_for(
            lambda: len(log_lines(server, "model reload refused")) > refused_before, timeout=30
        )
        outcome.event(start, "corrupt release refused" if refused else "no refusal logged")
        time.sleep(3)  # the restarted workers load the kept release
        kept = _stable_version(server)
        outcome.event(start, "version served after the refused reload", version=kept)
        main_result = main.result()
        outcome.wrk["main"] = wrk_figures(main_result)
        outcome.checks["zero failed requests"] = (
            failed_requests(main_result) == 0 and main_result.errors.connect == 0
        )
        outcome.checks["new version served after SIGHUP"] = swapped
        outcome.checks["corrupt release refused"] = refused
        outcome.checks["new version still served after the refused reload"] = (
            kept == new_versions[MODEL]
        )
        outcome.checks["server still running"] = server.process.poll() is None
        outcome.log_excerpt = log_lines(server, "models reloaded", "reload refused", "ERROR")[-8:]
    return outcome


def _stable_version(server: Server, probes: int = 6) -> str | None:
    """The version every probe (each on a new connection, so on either worker) agrees on."""
    try:
        seen = {served_version(server) for _ in range(probes)}
    except OSError:
        return None
    return seen.pop() if len(seen) == 1 else None


def shutdown(args: argparse.Namespace, workdir: Path) -> Outcome:
    """SIGTERM a third into the run while 4 slow requests are mid-body. Each slow request must
    still get its 200; an accounting client (16 keep-alive connections beside wrk's) must see no
    request lost after it was sent, only connects refused once the listener is closed; wrk must
    see no read error or timeout (its write errors are those refused connects: wrk cannot tell
    them apart); the master must exit 0 within gunicorn's graceful_timeout.

    The in-flight bound is off: wrk's and the accounting client's connections and the slow
    requests (84 at the defaults) exceed the 64 the default bound never sheds, and the worker
    that stops last takes the reconnects of the one that stopped first, so it shed a few (12
    and 40 503s in two 20-s runs). What this measures is the drain, not shedding."""
    import threading

    outcome = new_outcome("shutdown", args)
    body = json.dumps({"flights": [{"OPERA": "Grupo LATAM", "TIPOVUELO": "N", "MES": 7}]}).encode()
    with served(
        workdir, MODELS_DIR, worker_class=args.worker_class, MAX_IN_FLIGHT=UNBOUNDED
    ) as server:
        port = int(server.url.rsplit(":", 1)[1])
        start = time.monotonic()
        main = Wrk(server.url, args.duration, args.connections, args.threads, args.bodies, args.wrk)
        tallies: list[Tally] = []
        accounting = threading.Thread(
            target=lambda: tallies.append(
                accounting_load(port, args.duration / 3 + 8, ACCOUNTING_CONNECTIONS, body)
            )
        )
        accounting.start()
        until(start, args.duration / 3 - 1)
        slow = [_start_slow_request(port, body) for _ in range(4)]
        outcome.event(start, "4 slow requests sent their head and half their body")
        until(start, args.duration / 3)
        os.kill(server.process.pid, signal.SIGTERM)
        outcome.event(start, "SIGTERM")
        time.sleep(1)
        answers = [_finish_slow_request(sock, body) for sock in slow]
        outcome.event(start, "slow requests finished", statuses=answers)
        try:
            code = server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = None
        outcome.event(start, "master exited", returncode=code)
        main.process.send_signal(signal.SIGINT)  # wrk prints its summary and stops
        outcome.event(start, "wrk interrupted")
        main_result = main.result()
        accounting.join(timeout=args.duration + 30)
        outcome.wrk["main"] = wrk_figures(main_result)
        tally = tallies[0] if tallies else Tally(lost=-1)
        outcome.wrk["accounting_client"] = tally.counts()
        e = main_result.errors
        outcome.checks["in-flight slow requests answered 200"] = answers == [200] * 4
        outcome.checks["accounting client: no request lost after it was sent"] = tally.lost == 0
        outcome.checks["accounting client: every answer a 200"] = set(tally.answered) == {"200"}
        outcome.checks["wrk: no read error, timeout or non-2xx"] = (
            e.read + e.timeout + (main_result.non_2xx or 0) == 0
        )
        outcome.checks["master exited 0"] = code == 0
        outcome.log_excerpt = log_lines(server, "Shutting down", "Worker exiting", "ERROR")[-8:]
    return outcome


def _start_slow_request(port: int, body: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    unsent = len(body) - len(body) // 2  # the body's second half
    sock.sendall(post(body)[:-unsent])
    return sock


def _finish_slow_request(sock: socket.socket, body: bytes) -> int | str:
    try:
        with sock:
            sock.sendall(body[len(body) // 2 :])
            answer = sock.recv(4096)
        return int(answer.split(b" ", 2)[1]) if answer else "closed"
    except OSError as error:
        return f"{type(error).__name__}"


def unreadable_release(source: Path, target: Path) -> None:
    """A copy whose files are mode 000: unreadable to the unprivileged user the storm's server
    runs as (root would read them anyway)."""
    shutil.copytree(source, target)
    for path in target.iterdir():
        path.chmod(0)


def directory_release(source: Path, target: Path) -> None:
    """A copy with a directory where the full model's ONNX file should be."""
    shutil.copytree(source, target)
    (target / "delay-full.onnx").unlink()
    (target / "delay-full.onnx").mkdir()


UNPRIVILEGED = "65534"
"""nobody/nogroup: the storm's server runs as this user, so that mode 000 really is unreadable."""


def as_unprivileged(workdir: Path) -> Path:
    """A gunicorn launcher that drops root (setpriv) before exec: the arbiter and its workers
    then run as nobody, as the container's uid 10001 would."""
    launcher = workdir / "gunicorn-as-nobody"
    launcher.write_text(
        "#!/bin/sh\n"
        f"exec setpriv --reuid={UNPRIVILEGED} --regid={UNPRIVILEGED} --clear-groups "
        f'--inh-caps=-all {GUNICORN} "$@"\n'
    )
    launcher.chmod(0o755)
    workdir.chmod(0o777)  # the server's TMPDIR: its run, metrics and snapshot directories
    return launcher


STORM_KINDS = ("unreadable", "directory", "corrupt", "good")
STORM_SIGNALS = 20
STORM_SECONDS = 2.0


def storm(args: argparse.Namespace, workdir: Path) -> Outcome:
    """Under wrk load, with the server running as nobody: 20 SIGHUPs in 2 s, MODELS_DIR
    repointed before each at, in turn, an unreadable, a directory-in-place-of-file, a corrupt
    and a good release (new versions each; the last is good). gunicorn handles the signals one
    after another, each reading MODELS_DIR as it is by then, so most of the burst sees the last
    release: a paced round follows, one SIGHUP per kind, each waited for, then the last good
    release again. No request may fail, the server must stay up, every SIGHUP be answered by
    one log line, each kind of bad release be refused, and the last good release be served."""
    outcome = new_outcome("storm", args)
    releases = workdir / "releases"
    makers: dict[str, Callable[[Path], None]] = {
        "unreadable": lambda target: unreadable_release(MODELS_DIR, target),
        "directory": lambda target: directory_release(MODELS_DIR, target),
        "corrupt": lambda target: corrupt_release(MODELS_DIR, target),
    }
    sequence: list[tuple[str, Path]] = []
    good_versions: dict[Path, dict[str, str]] = {}
    for number in range(STORM_SIGNALS):
        kind = STORM_KINDS[number % len(STORM_KINDS)]
        target = releases / f"{number:02d}-{kind}"
        if kind == "good":
            good_versions[target] = retagged_release(MODELS_DIR, target, f"storm {number}")
        else:
            makers[kind](target)
        sequence.append((kind, target))
    last_good = sequence[-1][1]
    paced = [*sequence[:3], (STORM_KINDS[-1], last_good)]
    shutil.copytree(MODELS_DIR, releases / "initial")
    current = workdir / "current"
    current.symlink_to(releases / "initial")
    launcher = as_unprivileged(workdir)
    outcome.settings |= {"signals": STORM_SIGNALS, "seconds": STORM_SECONDS,
                         "server_user": f"uid {UNPRIVILEGED} (setpriv)",
                         "sequence": [kind for kind, _ in sequence],
                         "paced": [kind for kind, _ in paced]}  # fmt: skip

    def handled() -> int:
        return len(log_lines(server, "models reloaded", "model reload refused"))

    with served_by(launcher, workdir, current) as server:
        start = time.monotonic()
        main = Wrk(server.url, args.duration, args.connections, args.threads, args.bodies, args.wrk)
        until(start, 5)
        outcome.event(start, "storm starts", served=served_version(server))
        for number, (_, target) in enumerate(sequence):
            until(start, 5 + number * STORM_SECONDS / STORM_SIGNALS)
            point(current, target)
            os.kill(server.process.pid, signal.SIGHUP)
        outcome.event(start, "storm sent", signals=STORM_SIGNALS)
        settled = wait_for(lambda: handled() >= STORM_SIGNALS, timeout=60)
        outcome.event(start, "storm handled" if settled else "storm not handled in 60 s",
                      handled=handled())  # fmt: skip
        for kind, target in paced:
            before = handled()
            point(current, target)
            os.kill(server.process.pid, signal.SIGHUP)
            answered = wait_for(lambda: handled() > before, timeout=30)  # noqa: B023
            outcome.event(start, f"paced SIGHUP: {kind}", handled=answered)
        wait_for(lambda: _stable_version(server) == good_versions[last_good][MODEL], 15)
        served_now = _stable_version(server)
        outcome.event(start, "version served at the end", version=served_now,
                      last_good=good_versions[last_good][MODEL])  # fmt: skip
        main_result = main.result()
        reloaded = log_lines(server, "models reloaded")
        refused = log_lines(server, "model reload refused")
        outcome.wrk["main"] = wrk_figures(main_result)
        outcome.checks["zero failed requests"] = (
            failed_requests(main_result) == 0 and main_result.errors.connect == 0
        )
        outcome.checks["server still running"] = server.process.poll() is None
        outcome.checks["every SIGHUP answered by one log line"] = len(reloaded) + len(
            refused
        ) == STORM_SIGNALS + len(paced)
        for kind in STORM_KINDS[:-1]:
            line = next((line for line in refused if _REFUSAL_WORDS[kind] in line), "")
            outcome.checks[f"{kind} release refused"] = bool(line)
            outcome.events.append({"refusal": kind, "line": line.split("] ", 1)[-1]})
        outcome.checks["the last good release served"] = (
            served_now == good_versions[last_good][MODEL]
        )
        outcome.checks["no worker failed to boot, no traceback"] = not log_lines(
            server, "Worker failed to boot", "Traceback"
        )
        outcome.log_excerpt = (reloaded + refused)[-8:]
    return outcome


_REFUSAL_WORDS = {
    "unreadable": "Permission denied",
    "directory": "not a regular file but a directory",
    "corrupt": "does not match its card's sha256",
}


EXPERIMENTS: dict[str, Callable[[argparse.Namespace, Path], Outcome]] = {
    "worker-kill": worker_kill,
    "reload": reload,
    "shutdown": shutdown,
    "storm": storm,
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("experiment", choices=[*EXPERIMENTS, "all"])
    parser.add_argument("--duration", type=int, default=45, help="seconds of wrk load")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bodies", type=Path, default=ROOT / "build" / "wrk" / "minimal.jsonl")
    parser.add_argument("--wrk", default="wrk")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "reliability")
    parser.add_argument(
        "--worker-class", default="",
        help="override gunicorn.conf.py's worker class, e.g. uvicorn_worker.UvicornWorker for "
        "the stock protocol as a baseline",
    )  # fmt: skip
    return parser.parse_args(argv)


def in_scratch(
    prefix: str, experiment: Callable[[argparse.Namespace, Path], Outcome], args: argparse.Namespace
) -> Outcome:
    """`experiment` run in a scratch directory removed afterwards (its server's log and run
    directories), with the load average at its end."""
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        outcome = experiment(args, Path(scratch))
    outcome.load_average_after = load_average()
    return outcome


def run(name: str, args: argparse.Namespace) -> Outcome:
    return in_scratch(f"chaos-{name}-", EXPERIMENTS[name], args)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which(args.wrk) is None:
        print(f"chaos: {args.wrk!r} is not on PATH (apt-get install wrk)", file=sys.stderr)
        return 2
    if not args.bodies.is_file():
        print(f"chaos: no bodies at {args.bodies}: run `make bodies` first", file=sys.stderr)
        return 2
    args.bodies = args.bodies.resolve()
    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    status = 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        try:
            outcome = run(name, args)
        except StressError as error:
            print(f"chaos {name}: {error}", file=sys.stderr)
            status = 2
            continue
        suffix = f"-{args.worker_class.rsplit('.', 1)[-1]}" if args.worker_class else ""
        path = args.out / f"{name}{suffix}.json"
        path.write_text(json.dumps(asdict(outcome), indent=2) + "\n", encoding="utf-8")
        for check, ok in outcome.checks.items():
            print(f"chaos {name}: {'ok  ' if ok else 'FAIL'} {check}")
        main_wrk = outcome.wrk.get("main", {})
        print(
            f"chaos {name}: {main_wrk.get('requests', 0):,} requests, errors "
            f"{main_wrk.get('errors')}, non-2xx {main_wrk.get('non_2xx')}; written to {path}"
        )
        if not outcome.passed:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())

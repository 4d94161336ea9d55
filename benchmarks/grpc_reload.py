"""gRPC across model reloads: `make grpc-reload`.

A reload (SIGHUP) replaces every worker, and each worker listens on the gRPC port itself
(SO_REUSEPORT): app.server.handoff keeps a reload's old workers listening until the new ones do.
This measures what a client meets meanwhile. The service (the README's gunicorn, gRPC on a free
loopback port) is started; CLIENTS threads call `ServerLive`, each call on a new channel, so on a
new connection, without `wait_for_ready` (a refused connection fails the call at once), or with
--kept-connections each thread on one channel of its own for all its calls, as a long-lived
client's (the calls an old worker's connections still carry when it stops); RELOADS
SIGHUPs follow one another, each once the previous reload has completed (the new workers serve
gRPC, the old ones have exited), with the calls' status codes counted per reload (from its
SIGHUP to SETTLE_S after it completed); then SIGTERM, timed. Writes grpc-reload.md and
grpc-reload.json (--name); exits 1 if any call failed.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc

from benchmarks.chaos import wait_for
from benchmarks.grpc_load import GRPC_SERVING, log_text, served
from benchmarks.stress import Server, StressError, load_average, revision
from train.provenance import machine

LIVE = "/inference.GRPCInferenceService/ServerLive"
EXITED = "Finished server process"
"""uvicorn's line as a worker exits"""
FRESH_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)
"""A channel's own subchannel pool: each channel opens its own connection."""
SERVICE_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "grpc" / "service-config.json"
"""The client configuration docs/grpc.md advises: ModelInfer (and every method of the service)
retried on UNAVAILABLE and CANCELLED, which it has no side effect to make unsafe."""
SETTLE_S = 0.5
MAKE_TARGET = {
    (False, False): "grpc-reload",
    (True, False): "grpc-reload-kept",
    (True, True): "grpc-reload-kept-retrying",
}
"""By (kept connections, retrying clients); a run no target makes is titled by its command."""
CONNECTIONS = {
    False: "each call on a new connection (a channel of its own)",
    True: "each thread on one connection it keeps for all its calls, back to back",
}
RETRIES = {
    False: "a failed call not retried",
    True: "retrying as `deploy/grpc/service-config.json` says (the client configuration "
    "docs/grpc.md advises: `UNAVAILABLE` and `CANCELLED`, 3 attempts in all)",
}
CALL_TIMEOUT_S = 5
SHOWN_FAILURES = 10


@dataclass(frozen=True)
class Reload:
    seconds: float
    """From SIGHUP to the new workers serving gRPC and the old ones gone."""
    calls: dict[str, int]
    """Calls finished meanwhile (and SETTLE_S after), by gRPC status code."""

    @property
    def failed(self) -> int:
        return sum(count for code, count in self.calls.items() if code != "OK")


@dataclass
class Outcome:
    revision: str
    date: str
    cpu: str
    nproc: int
    load_average: str
    command: str
    workers: int
    clients: int
    reloads: list[Reload] = field(default_factory=list)
    stop_s: float = 0.0
    failures: list[str] = field(default_factory=list)
    """The first failed calls' codes and details."""
    kept_connections: bool = False
    """Each client thread keeps one connection (else: a new connection per call)."""
    retrying: bool = False
    """The clients retry as SERVICE_CONFIG says (else: a failed call is not retried)."""

    @property
    def failed(self) -> int:
        return sum(reload.failed for reload in self.reloads)

    @property
    def calls(self) -> int:
        return sum(sum(reload.calls.values()) for reload in self.reloads)


class Callers:
    """Threads calling ServerLive, each call on a new connection (or each thread on one it keeps),
    counting the status codes."""

    def __init__(
        self, target: str, clients: int, kept_connections: bool = False, retrying: bool = False
    ) -> None:
        self._target = target
        self._kept = kept_connections
        self._options: list[tuple[str, str | int]] = list(FRESH_CONNECTION)
        if retrying:
            self._options.append(("grpc.service_config", SERVICE_CONFIG.read_text()))
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()
        self.failures: list[str] = []
        self._done = threading.Event()
        self._threads = [threading.Thread(target=self._call) for _ in range(clients)]

    def __enter__(self) -> Callers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join()

    def counts(self) -> collections.Counter[str]:
        with self._lock:
            return collections.Counter(self._counts)

    def _call(self) -> None:
        if self._kept:
            with grpc.insecure_channel(self._target, options=self._options) as channel:
                live = channel.unary_unary(LIVE)
                while not self._done.is_set():
                    self._count(live)
            return
        while not self._done.is_set():
            with grpc.insecure_channel(self._target, options=self._options) as channel:
                self._count(channel.unary_unary(LIVE))

    def _count(self, live: grpc.UnaryUnaryMultiCallable) -> None:
        try:
            live(b"", timeout=CALL_TIMEOUT_S)
            code = "OK"
        except grpc.RpcError as error:
            code = error.code().name
            with self._lock:
                if len(self.failures) < SHOWN_FAILURES:
                    self.failures.append(f"{code}: {error.details()}")
        with self._lock:
            self._counts[code] += 1


def measure(args: argparse.Namespace, scratch: Path) -> Outcome:
    _, cpu, nproc = machine()
    outcome = Outcome(
        revision(), datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"), cpu, nproc,
        load_average(), " ".join(["python -m benchmarks.grpc_reload", *sys.argv[1:]]),
        args.workers, args.clients, kept_connections=args.kept_connections,
        retrying=args.retrying,
    )  # fmt: skip
    with served(args, scratch, "grpc-reload", args.workers) as (server, target):
        with Callers(target, args.clients, args.kept_connections, args.retrying) as callers:
            time.sleep(SETTLE_S)
            for reload in range(1, args.reloads + 1):
                before, exited = callers.counts(), log_text(server).count(EXITED)
                sent = time.monotonic()
                server.process.send_signal(signal.SIGHUP)
                completed = functools.partial(
                    _completed, server, args.workers * (reload + 1), exited + args.workers
                )
                _wait(server, completed, f"reload {reload} never completed")
                seconds = time.monotonic() - sent
                time.sleep(SETTLE_S)
                calls = callers.counts() - before
                outcome.reloads.append(Reload(round(seconds, 3), dict(sorted(calls.items()))))
                print(f"reload {reload}: {seconds:.2f} s, calls {dict(calls)}", flush=True)
        outcome.failures = callers.failures
        stopping = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=60)
        outcome.stop_s = round(time.monotonic() - stopping, 2)
    return outcome


def _completed(server: Server, serving: int, exited: int) -> bool:
    """Whether `serving` workers in all have served gRPC and `exited` have exited."""
    log = log_text(server)
    return log.count(GRPC_SERVING) >= serving and log.count(EXITED) >= exited


def _wait(server: Server, condition: Callable[[], bool], problem: str) -> None:
    if not wait_for(condition, 60, 0.02):
        raise StressError(f"{problem} within 60 s:\n{server.log_tail()}")


def render(outcome: Outcome) -> str:
    seconds = sorted(reload.seconds for reload in outcome.reloads)
    verdict = "PASS: no call failed" if outcome.failed == 0 else f"FAIL: {outcome.failed:,} failed"
    lines = [
        f"# gRPC across model reloads (`{_made_by(outcome)}`)",
        "",
        f"- Code: {outcome.revision}; {outcome.date}",
        f"- CPU: {outcome.cpu}, {outcome.nproc} cores; load average before: "
        f"{outcome.load_average}. The client threads run on the same cores as the server.",
        f"- {outcome.workers} workers, gRPC on a loopback port; {outcome.clients} client threads "
        f"call `ServerLive`, {CONNECTIONS[outcome.kept_connections]}, without "
        f"`wait_for_ready`, {RETRIES[outcome.retrying]}; {len(outcome.reloads)} SIGHUPs one "
        "after another, each once the previous reload completed (the new workers serve gRPC, the "
        "old ones have exited); a "
        f"reload's calls are those finished from its SIGHUP to {SETTLE_S} s after it completed.",
        f"- Command: `{outcome.command}`",
        "",
        f"**{verdict}** of {outcome.calls:,} calls over {len(outcome.reloads)} reloads. "
        f"A reload took {seconds[len(seconds) // 2]:.2f} s (median; {seconds[0]:.2f}-"
        f"{seconds[-1]:.2f} s) from SIGHUP to the old workers gone; SIGTERM after the last one "
        f"stopped the server in {outcome.stop_s:.2f} s.",
        "",
        "| reload | seconds | calls | failed | by status |",
        "| ---: | ---: | ---: | ---: | --- |",
    ]
    for number, reload in enumerate(outcome.reloads, 1):
        codes = ", ".join(f"{code} {count:,}" for code, count in reload.calls.items())
        lines.append(
            f"| {number} | {reload.seconds:.2f} | {sum(reload.calls.values()):,} | "
            f"{reload.failed:,} | {codes} |"
        )
    if outcome.failures:
        lines += ["", "First failures:", "", *(f"- `{failure}`" for failure in outcome.failures)]
    return "\n".join(lines) + "\n"


def _made_by(outcome: Outcome) -> str:
    target = MAKE_TARGET.get((outcome.kept_connections, outcome.retrying))
    return f"make {target}" if target else outcome.command


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grpc_reload", description=__doc__)
    parser.add_argument("--reloads", type=int, default=10)
    parser.add_argument("--clients", type=int, default=2, help="client threads")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--kept-connections", action="store_true", help="each client thread keeps one connection"
    )
    parser.add_argument(
        "--retrying", action="store_true", help="clients retry as deploy/grpc/service-config.json"
    )
    parser.add_argument("--gunicorn", type=Path, default=Path(".venv/bin/gunicorn"))
    parser.add_argument("--ready-timeout", type=float, default=60)
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--name", default="grpc-reload", help="the report files' name")
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            outcome = measure(args, Path(scratch))
    except StressError as error:
        print(f"grpc-reload: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(
        json.dumps(asdict(outcome), indent=2) + "\n", encoding="utf-8"
    )
    (args.out / f"{args.name}.md").write_text(render(outcome), encoding="utf-8")
    print(render(outcome))
    return 0 if outcome.failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

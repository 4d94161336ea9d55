"""gRPC rows of `make compare`: ModelInfer against the REST OIP route, same server, same flights.

Both transports are driven by a load generator written in C, so that the client's own cost per
call is small beside the server's on the shared cores: wrk (benchmarks.compare's measurement)
for REST, h2load (Debian's `nghttp2-client`; `ghz` is not packaged) for gRPC. h2load posts a
pre-built gRPC frame (a serialised ModelInferRequest behind its 5-byte prefix) over h2c with
gRPC's headers, many streams per connection. It reads neither gRPC status nor answer, so each
run checks both elsewhere: one call through grpcio must answer what the REST route answers for
the same flights, and the server's own counters (`http_requests_total` by gRPC status code)
must show every call of the run OK.

Each row repeats one request: the first body of its `make bodies` file, for REST and gRPC alike
(h2load posts one body; the minimal model answers from its table, whose cost does not depend on
the flight). Variants alternate over --rounds (A B C D A B C D ...), each on a fresh server (the
README's gunicorn, 2 workers, gRPC on a free loopback port), so that a burst of other work on the
shared machine hits one round of each rather than every round of one. Writes grpc.md and
grpc.json.

The messages it builds and reads are tritonclient's, as a client's: app.grpc's stubs share
their `inference` protobuf package, and protobuf refuses both in one process
(app/grpc/__init__.py); tests/test_grpc_server.py imports tritonclient's, so a test that builds
a request here (tests/test_wire_fuzz.py) needs them too. The serialised bytes are the same.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import compare, stress
from benchmarks.chaos import wait_for
from benchmarks.compare_report import Variant
from benchmarks.stress import Server, StressError, free_port, load_average
from benchmarks.stress_report import WrkSummary, parse_summary
from train.provenance import machine

ROOT = Path(__file__).resolve().parent.parent
MODEL = "delay-minimal"
INFER = "/inference.GRPCInferenceService/ModelInfer"
FLUSH_WAIT = 1.5
"""Seconds for every worker's metrics of a run to reach /metrics (app.observability.metrics flushes
each 1 s)."""
OIP_SCRIPT = "benchmarks/grpc_oip.lua"
FIELDS = ("OPERA", "TIPOVUELO", "MES")
GRPC_SERVING = "gRPC serving on"
"""app.server.worker's line once a worker's gRPC server listens"""


@dataclass(frozen=True)
class Row:
    """One variant: the same flights over REST (wrk) or gRPC (h2load)."""

    name: str
    description: str
    transport: str
    """"rest" or "grpc"."""
    bodies: str
    """The /predict body file (benchmarks.bodies) whose flights it sends."""
    flights_per_request: int
    contents: str = "raw"
    """gRPC only: "raw" (raw_input_contents) or "typed" (each tensor's contents)."""
    connections: int = 64
    streams: int = 1
    """gRPC only: calls in flight on each HTTP/2 connection (HTTP/1.1 carries one)."""

    @property
    def in_flight(self) -> int:
        return self.connections * self.streams


# The same calls in flight on both sides: wrk's 64 connections against 8 HTTP/2 connections of 8
# streams each (a gRPC client multiplexes; 8 connections so that SO_REUSEPORT spreads them over
# both workers), and 4 against 4 for the 1,000-flight batches.
ROWS = (
    Row("rest-oip-1", "REST OIP route, JSON tensors, 1 flight (wrk)", "rest", "minimal.jsonl", 1),
    Row("grpc-1", "gRPC ModelInfer, raw_input_contents, 1 flight (h2load)", "grpc",
        "minimal.jsonl", 1, connections=8, streams=8),
    Row("rest-oip-1000", "REST OIP route, JSON tensors, 1000 flights (wrk)", "rest",
        "batch-minimal.jsonl", 1000, connections=4),
    Row("grpc-raw-1000", "gRPC ModelInfer, raw_input_contents, 1000 flights (h2load)", "grpc",
        "batch-minimal.jsonl", 1000, connections=4),
    Row("grpc-typed-1000", "gRPC ModelInfer, typed contents, 1000 flights (h2load)", "grpc",
        "batch-minimal.jsonl", 1000, "typed", connections=4),
)  # fmt: skip


@dataclass
class Result:
    row: str
    round: int
    requests: int
    duration_s: float
    requests_per_s: float
    flights_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu_s: float | None
    """The server's CPU-seconds over the measured window (master and workers, /proc)."""
    load_before: float
    notes: list[str] = field(default_factory=list)


# --- bodies --------------------------------------------------------------------------------------


def flights_of(path: Path) -> list[list[dict[str, Any]]]:
    """The flights of each /predict body in a wrk body file."""
    return [
        json.loads(line)["flights"]
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def oip_body(flights: list[dict[str, Any]]) -> str:
    """The flights as one REST OIP infer body: one JSON tensor per field."""
    inputs = [
        {
            "name": name,
            "datatype": "INT64" if name == "MES" else "BYTES",
            "shape": [len(flights)],
            "data": [flight[name] for flight in flights],
        }
        for name in FIELDS
    ]
    return json.dumps({"inputs": inputs}, separators=(",", ":"))


def infer_request(
    flights: list[dict[str, Any]],
    contents: str,
    model: str = MODEL,
    fields: Sequence[str] = FIELDS,
) -> bytes:
    """The flights as one serialised ModelInferRequest to `model`, a tensor per field, its
    contents typed (`contents` "typed") or raw."""
    from tritonclient.grpc import service_pb2 as pb  # a client's: see the module's doc

    request = pb.ModelInferRequest(model_name=model)
    for name in fields:
        values = [flight[name] for flight in flights]
        datatype = "INT64" if name == "MES" else "BYTES"
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[len(flights)])
        if contents == "typed":
            if name == "MES":
                tensor.contents.int64_contents.extend(values)
            else:
                tensor.contents.bytes_contents.extend(str(v).encode() for v in values)
        elif name == "MES":
            request.raw_input_contents.append(struct.pack(f"<{len(values)}q", *values))
        else:
            encoded = [str(v).encode() for v in values]
            request.raw_input_contents.append(
                b"".join(struct.pack("<I", len(e)) + e for e in encoded)
            )
    serialised: bytes = request.SerializeToString()
    return serialised


def write_bodies(wrk_dir: Path, scratch: Path) -> None:
    """Each row's request, from the first body of its file: an OIP JSON body (for wrk, and the
    answer check) and, for gRPC rows, the framed ModelInferRequest h2load posts."""
    for row in ROWS:
        flights = flights_of(wrk_dir / row.bodies)[0]
        (scratch / f"{row.name}.oip.json").write_text(oip_body(flights), encoding="utf-8")
        if row.transport == "grpc":
            (scratch / f"{row.name}.frame").write_bytes(
                grpc_frame(infer_request(flights, row.contents))
            )


# --- the gRPC load: h2load ----------------------------------------------------------------------


def grpc_frame(message: bytes) -> bytes:
    """A gRPC message as it travels in HTTP/2 DATA: uncompressed flag, big-endian length."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def h2load_command(
    args: argparse.Namespace, row: Row, target: str, frame: Path, log: Path
) -> list[str]:
    """h2load posting the row's frame over h2c for --warmup + --duration seconds, with the
    headers a gRPC call carries: --connections HTTP/2 connections, each with --streams calls
    in flight."""
    return [
        args.h2load,
        f"--threads={min(args.threads, row.connections)}",
        f"--clients={row.connections}",
        f"--max-concurrent-streams={row.streams}",
        f"--duration={args.duration}",
        f"--warm-up-time={args.warmup}",
        f"--log-file={log}",
        "--header=content-type: application/grpc",
        "--header=te: trailers",
        f"--data={frame}",
        f"http://{target}{INFER}",
    ]


@dataclass(frozen=True)
class H2loadRun:
    requests: int
    """Calls answered with HTTP 200 in the measured window (whatever their gRPC status)."""
    failures: int
    """h2load's failed requests (its errored and timed-out ones among them) and the answers it
    counts as succeeded with a status other than 200."""
    latencies_us: list[int]


def parse_h2load(output: str, log: Path) -> H2loadRun:
    """h2load's summary line `requests: N total, N started, N done, N succeeded, F failed, E
    errored, T timeout`, and the latencies of its --log-file (start µs, HTTP status or -1, µs).

    The counts nest (man h2load): `failed` holds every request not answered 2xx or 3xx,
    `errored` those of them that got no answer at all, `timeout` those of them that timed out;
    the log has a line for each request done, failed or not. So `failed` is every failure but
    a 2xx or 3xx other than 200, which h2load counts as succeeded."""
    match = re.search(
        r"^requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        output,
        re.MULTILINE,
    )
    if match is None:
        raise StressError(f"no summary in h2load's output:\n{output[-2000:]}")
    succeeded, failed, _errored, _timeout = (int(group) for group in match.groups())
    latencies, other_success = [], 0
    for line in log.read_text(encoding="utf-8").splitlines():
        _start, status, micros = line.split("\t")[:3]
        if status == "200":
            latencies.append(int(micros))
        elif status[:1] in ("2", "3"):
            other_success += 1
    return H2loadRun(succeeded - other_success, failed + other_success, latencies)


def grpc_counts(url: str) -> dict[str, float]:
    """The server's ModelInfer calls so far by gRPC status code, from its /metrics."""
    return {
        status: count
        for (route, method, status), count in compare.requests_total(url).items()
        if method == "GRPC" and route == INFER
    }


def unexpected(counted: dict[str, float], answered: int, in_flight: int) -> list[str]:
    """What the server's counts of a run's calls by status code show beyond h2load's `answered`
    OK calls, one line each: nothing when every call was OK. The calls in flight when h2load
    stops, at most `in_flight`, are cancelled by h2load: CANCELLED up to that many is no error."""
    notes = [
        f"{count:.0f} calls answered {code}"
        for code, count in sorted(counted.items())
        if count and code != "OK" and not (code == "CANCELLED" and count <= in_flight)
    ]
    if counted.get("OK", 0) < answered:
        notes.append(f"the server counted {counted.get('OK', 0):.0f} OK calls, h2load {answered}")
    return notes


def check_answer(url: str, target: str, scratch: Path, row: Row) -> None:
    """One call of the row's request through grpcio must answer what the REST OIP route
    answers for the same flights: h2load does not read gRPC answers."""
    import grpc
    import numpy as np
    from tritonclient.grpc import service_pb2 as pb  # a client's: see the module's doc

    request = (scratch / (row.name + ".frame")).read_bytes()[5:]
    with grpc.insecure_channel(target) as channel:
        answer = pb.ModelInferResponse.FromString(channel.unary_unary(INFER)(request, timeout=10))
    raw = dict(zip((o.name for o in answer.outputs), answer.raw_output_contents, strict=True))
    body = (scratch / (row.name + ".oip.json")).read_bytes()
    rest = urllib.request.Request(f"{url}/v2/models/{MODEL}/infer", body, method="POST",
                                  headers={"content-type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(rest, timeout=10) as reply:
        outputs = {o["name"]: o["data"] for o in json.loads(reply.read())["outputs"]}
    same = np.array_equal(np.frombuffer(raw["label"], "<i8"), outputs["label"]) and (
        np.array_equal(np.frombuffer(raw["proba"], "<f4"), np.float32(outputs["proba"]))
    )
    if not same:
        raise StressError(f"{row.name}: gRPC answered {answer} where REST answered {outputs}")


# --- rounds --------------------------------------------------------------------------------------


@contextmanager
def served(
    args: argparse.Namespace, scratch: Path, name: str, workers: int | None = None
) -> Iterator[tuple[Server, str]]:
    """The README's gunicorn (compare's cleared environment) with gRPC on a free port, once
    every worker serves it; `workers`: WORKERS (None: the README's default, 2 on this machine)."""
    target = f"127.0.0.1:{free_port()}"
    env = {"GRPC_BIND": target} | ({} if workers is None else {"WORKERS": str(workers)})
    variant = Variant(name, "", compare.SERVICE, env=env)
    with compare.served(variant, args, scratch) as server:
        serving = workers or 2
        if not wait_for(lambda: log_text(server).count(GRPC_SERVING) >= serving, 30):
            raise StressError(f"gRPC not served:\n{server.log_tail()}")
        yield server, target


def log_text(server: Server) -> str:
    return server.log.read_text(encoding="utf-8", errors="replace")


def measure(row: Row, round_: int, args: argparse.Namespace, scratch: Path) -> Result:
    with served(args, scratch, row.name) as (server, target):
        load = float(load_average().split()[0])
        pids = stress.process_tree(server.process.pid)
        if row.transport == "rest":
            variant = Variant(row.name, row.description, compare.SERVICE,
                              bodies=row.name + ".oip.json", script=OIP_SCRIPT,
                              connections=row.connections,
                              flights_per_request=row.flights_per_request)  # fmt: skip
            url = server.url
            bodies = scratch / variant.bodies
            env_target = {"WRK_TARGET": f"/v2/models/{MODEL}/infer"}
            if args.warmup > 0:
                run_wrk_with(compare.wrk_command(args, variant, args.warmup, url), bodies,
                             args.warmup, env_target)  # fmt: skip
            before = stress.clocks(pids)
            output = run_wrk_with(compare.wrk_command(args, variant, args.duration, url), bodies,
                                  args.duration, env_target)  # fmt: skip
            after = stress.clocks(pids)
            summary = parse_summary(output)
            requests, seconds = summary.requests, summary.duration_s
            p50, p99 = summary.latency.p50 / 1000, summary.latency.p99 / 1000
            errors = rest_errors(summary)
            notes: list[str] = []
        else:
            check_answer(server.url, target, scratch, row)
            run, before, after, notes = run_h2load(args, row, server, target, pids, scratch)
            requests, seconds = run.requests, float(args.duration)
            ordered = sorted(run.latencies_us) or [0]
            p50 = ordered[len(ordered) // 2] / 1000
            p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1000
            errors = run.failures + len(notes)
    cpu = None
    if before.server is not None and after.server is not None:
        cpu = after.server - before.server
    return Result(row.name, round_, requests, seconds, requests / seconds,
                  requests * row.flights_per_request / seconds, p50, p99, errors,
                  cpu, load, notes)  # fmt: skip


def rest_errors(summary: WrkSummary) -> int:
    """A REST row's failed calls, as compare_report.RunResult.errors counts them: wrk's socket
    errors (its timeouts among them: not added again), non-2xx answers, 200s without outputs."""
    return summary.errors.socket + summary.non_2xx + summary.bad_bodies


def run_h2load(
    args: argparse.Namespace, row: Row, server: Server, target: str, pids: list[int], scratch: Path
) -> tuple[H2loadRun, stress.Clocks, stress.Clocks, list[str]]:
    """h2load's run, the server's clocks around its measured window, and what the server's
    counters say went wrong (`unexpected`)."""
    log = scratch / f"{row.name}.h2load.log"
    earlier = grpc_counts(server.url)
    command = h2load_command(args, row, target, scratch / f"{row.name}.frame", log)
    process = subprocess.Popen(command, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    time.sleep(args.warmup)  # h2load's own warm-up: its measured window starts now
    before = stress.clocks(pids)
    time.sleep(args.duration)
    after = stress.clocks(pids)
    try:
        output = process.communicate(timeout=60)[0].decode("utf-8", errors="replace")
    except subprocess.TimeoutExpired:
        process.kill()
        raise StressError("h2load did not finish within 60 s of its duration") from None
    if process.returncode != 0:
        raise StressError(f"h2load exited with {process.returncode}:\n{output[-2000:]}")
    run = parse_h2load(output, log)
    time.sleep(FLUSH_WAIT)  # each worker adds its tallies to the shared metrics every second
    now = grpc_counts(server.url)
    counted = {code: now[code] - earlier.get(code, 0) for code in now}
    notes = unexpected(counted, run.requests, row.in_flight)
    return run, before, after, notes


def run_wrk_with(command: list[str], bodies: Path, seconds: int, env: dict[str, str]) -> str:
    """benchmarks.stress.run_wrk with extra environment for the Lua script."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        return stress.run_wrk(command, bodies, seconds)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --- report --------------------------------------------------------------------------------------


def ratio(results: list[Result], top: str, bottom: str, key: str) -> tuple[float, float, float]:
    """Median, min and max over rounds of top/bottom (each round's own pair)."""
    by_round: dict[int, dict[str, float]] = {}
    for result in results:
        by_round.setdefault(result.round, {})[result.row] = getattr(result, key)
    values = [
        pair[top] / pair[bottom] for pair in by_round.values() if pair.get(bottom) and top in pair
    ]
    if not values:
        return (float("nan"),) * 3
    return statistics.median(values), min(values), max(values)


GOALS = (
    ("gRPC single-flight req/s ≥ REST OIP route's", "grpc-1", "rest-oip-1", "requests_per_s", 1.0),
    ("gRPC 1000-flight raw_input_contents flights/s ≥ 1.3 x REST OIP JSON's", "grpc-raw-1000",
     "rest-oip-1000", "flights_per_s", 1.3),
)  # fmt: skip


def _cpu_per_call(results: list[Result]) -> str:
    """Median over rounds of the server's CPU-milliseconds per call answered."""
    values = [r.server_cpu_s * 1000 / r.requests for r in results if r.server_cpu_s and r.requests]
    return f"{statistics.median(values):.3f}" if values else "n/a"


def report(info: dict[str, Any], results: list[Result]) -> str:
    lines = [
        "# gRPC vs the REST OIP route (`make compare-grpc`)",
        "",
        f"Measured {info['date_utc']} UTC at revision `{info['revision']}` on {info['machine']}; "
        f"load average before: {info['load_average']}. Command: `{info['command']}`.",
        "",
        f"{info['rounds']} rounds of {info['duration_s']} s (after {info['warmup_s']} s of "
        "discarded warm-up) per row, rows alternating within each round, each run on a fresh "
        "server: the README's gunicorn with 2 workers, gRPC on a loopback port. Load "
        f"generators, both in C ({info['tools']}): wrk drives the REST rows (HTTP/1.1, one call "
        "in flight per connection), h2load the gRPC rows (h2c, a pre-built gRPC frame, several "
        "streams per connection); they run on the same 2 cores as the server. h2load reads no "
        "gRPC status: a gRPC row's errors are h2load's failures plus every call the server's "
        "own metrics counted with a status other than OK, and before each gRPC run one call "
        "through grpcio must answer what the REST route answers for the same flights.",
        "",
        "Flights: the minimal model (`delay-minimal`, answered from its table), one request "
        "repeated per row, the same flights for REST and gRPC (the first body of `make bodies`' "
        "single-flight and 1,000-flight files, from the real data). REST bodies are JSON "
        "tensors; gRPC requests carry `raw_input_contents` or typed `contents`; gRPC answers "
        "are raw outputs.",
        "",
        "| row | what | calls in flight (connections x streams) | median req/s "
        "| median flights/s | p50 ms | p99 ms "
        "| server CPU ms per call | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in ROWS:
        mine = [r for r in results if r.row == row.name]
        if not mine:
            continue
        lines.append(
            f"| {row.name} | {row.description} | {row.in_flight} "
            f"({row.connections} x {row.streams}) "
            f"| {statistics.median(r.requests_per_s for r in mine):,.0f} "
            f"| {statistics.median(r.flights_per_s for r in mine):,.0f} "
            f"| {statistics.median(r.p50_ms for r in mine):.2f} "
            f"| {statistics.median(r.p99_ms for r in mine):.2f} "
            f"| {_cpu_per_call(mine)} "
            f"| {sum(r.errors for r in mine)} |"
        )
    lines += [
        "",
        "| goal | ratio: median (min to max over rounds) | verdict |",
        "| --- | --- | --- |",
    ]
    for text, top, bottom, key, target in GOALS:
        median, low, high = ratio(results, top, bottom, key)
        if low >= target:
            verdict = "met"
        elif high < target:
            verdict = "**missed**"
        else:
            verdict = "**not shown**: the interval straddles the goal"
        lines.append(f"| {text} | {median:.2f} ({low:.2f} to {high:.2f}) | {verdict} |")
    lines += ["", "Per round:", "", "| round | row | req/s | flights/s | p50 ms | p99 ms | errors | load |",
              "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in results:
        lines.append(
            f"| {r.round} | {r.row} | {r.requests_per_s:,.0f} | {r.flights_per_s:,.0f} "
            f"| {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} | {r.load_before:.2f} |"
        )
    noted = [f"- round {r.round}, {r.row}: {note}" for r in results for note in r.notes]
    if noted:
        lines += ["", "What the server's metrics counted besides OK calls:", "", *noted]
    return "\n".join(lines) + "\n"


def _version(tool: str, flag: str) -> str:
    """The first line a tool prints about itself (wrk prints it with its usage, and fails)."""
    done = subprocess.run([tool, flag], capture_output=True, text=True, check=False)
    return (done.stdout + done.stderr).strip().splitlines()[0].split(" Copyright")[0]


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    parser = compare.run_parser("python -m benchmarks.grpc_load", __doc__)
    parser.add_argument("--h2load", default="h2load", help="h2load (Debian: nghttp2-client)")
    parser.add_argument("--rows", help="comma-separated subset (default: all)")
    args = compare.parse_run(parser, raw)
    if shutil.which(args.h2load) is None:
        parser.error(f"no {args.h2load!r}: install Debian's nghttp2-client (h2load drives gRPC)")
    chosen = [row for row in ROWS if not args.rows or row.name in args.rows.split(",")]
    uname, cpu, nproc = machine()
    info = {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "revision": stress.revision(),
        "machine": f"{cpu}, {nproc} CPUs ({uname})",
        "load_average": load_average(),
        "command": shlex.join(["python", "-m", "benchmarks.grpc_load", *raw]),
        "rounds": args.rounds,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "tools": f"{_version(args.wrk, '--version')}; {_version(args.h2load, '--version')}",
    }
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="compare-grpc-") as scratch:
        write_bodies(args.wrk_dir, Path(scratch))
        for round_ in range(1, args.rounds + 1):
            for row in chosen:
                result = measure(row, round_, args, Path(scratch))
                results.append(result)
                print(f"round {round_}/{args.rounds} {row.name:<16} {result.requests_per_s:>9,.0f}"
                      f" req/s {result.flights_per_s:>11,.0f} flights/s p50 {result.p50_ms:.2f} ms"
                      f" p99 {result.p99_ms:.2f} ms errors {result.errors}", flush=True)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "grpc.md").write_text(report(info, results), encoding="utf-8")
    (args.out / "grpc.json").write_text(
        json.dumps({"info": info, "results": [asdict(r) for r in results]}, indent=1) + "\n",
        encoding="utf-8",
    )
    print(f"compare-grpc: wrote {args.out / 'grpc.md'}, {args.out / 'grpc.json'}")
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

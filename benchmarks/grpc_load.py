"""gRPC rows of `make compare`: ModelInfer against the REST OIP route, same server, same flights.

No gRPC load generator is packaged for Debian (`ghz` is not), so the gRPC load is this module's
`client`: asyncio processes on grpc.aio, each holding --channels HTTP/2 connections with
--concurrency calls in flight in total, sending requests serialised once beforehand and
reading raw response bytes (so the client spends its CPU on the calls, as wrk does). The REST
rows are wrk (benchmarks.compare's measurement) on the same flights as OIP JSON bodies.

Variants alternate over --rounds (A B C D A B C D ...), each on a fresh server (the README's
gunicorn, 2 workers, gRPC on a free loopback port), so that a burst of other work on the shared
machine hits one round of each rather than every round of one. Writes grpc.md and grpc.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import compare, stress
from benchmarks.chaos import wait_for
from benchmarks.compare_report import Variant
from benchmarks.stress import Server, StressError, free_port, load_average, machine
from benchmarks.stress_report import parse_summary

ROOT = Path(__file__).resolve().parent.parent
MODEL = "delay-minimal"
INFER = "/inference.GRPCInferenceService/ModelInfer"
OIP_SCRIPT = "benchmarks/grpc_oip.lua"
FIELDS = ("OPERA", "TIPOVUELO", "MES")


@dataclass(frozen=True)
class Row:
    """One variant: the same flights over REST (wrk) or gRPC (this module's client)."""

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


ROWS = (
    Row("rest-oip-1", "REST OIP route, JSON tensors, 1 flight (wrk)", "rest", "minimal.jsonl", 1),
    Row("grpc-1", "gRPC ModelInfer, raw_input_contents, 1 flight", "grpc", "minimal.jsonl", 1),
    Row("rest-oip-1000", "REST OIP route, JSON tensors, 1000 flights (wrk)", "rest",
        "batch-minimal.jsonl", 1000, connections=4),
    Row("grpc-raw-1000", "gRPC ModelInfer, raw_input_contents, 1000 flights", "grpc",
        "batch-minimal.jsonl", 1000, connections=4),
    Row("grpc-typed-1000", "gRPC ModelInfer, typed contents, 1000 flights", "grpc",
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


def infer_request(flights: list[dict[str, Any]], contents: str) -> bytes:
    """The flights as one serialised ModelInferRequest."""
    from app.grpc import grpc_predict_v2_pb2 as pb  # client side only: see app/grpc/__init__.py

    request = pb.ModelInferRequest(model_name=MODEL)
    for name in FIELDS:
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
    """OIP JSON bodies (for wrk) and serialised requests (for the client) of each row."""
    for row in ROWS:
        batches = flights_of(wrk_dir / row.bodies)
        if row.transport == "rest":
            lines = [oip_body(flights) for flights in batches]
            (scratch / f"{row.name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        else:
            requests = [infer_request(flights, row.contents) for flights in batches]
            with (scratch / f"{row.name}.bin").open("wb") as out:
                for request in requests:
                    out.write(struct.pack("<I", len(request)) + request)


def read_requests(path: Path) -> list[bytes]:
    data = path.read_bytes()
    requests, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack_from("<I", data, offset)
        requests.append(data[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return requests


# --- the gRPC client -----------------------------------------------------------------------------


async def drive(
    target: str,
    requests: list[bytes],
    channels: int,
    concurrency: int,
    warmup: float,
    seconds: float,
) -> dict[str, Any]:
    """`concurrency` loops, spread over `channels` connections, each sending the next request
    as soon as its last answer came; latencies and errors of the calls ended in the measured
    window (after `warmup` seconds)."""
    import grpc

    opened = [grpc.aio.insecure_channel(target) for _ in range(channels)]
    calls = [channel.unary_unary(INFER) for channel in opened]  # bytes in, bytes out
    latencies: list[float] = []
    errors: dict[str, int] = {}
    print("started", file=sys.stderr, flush=True)  # start_clients waits for this line
    begin = time.perf_counter() + warmup
    end = begin + seconds

    async def loop(worker: int) -> None:
        call = calls[worker % channels]
        index = worker
        while (now := time.perf_counter()) < end:
            try:
                answer = await call(requests[index % len(requests)], timeout=10)
                ok = bool(answer)
                problem = "" if ok else "empty answer"
            except grpc.aio.AioRpcError as error:
                problem = error.code().name
            done = time.perf_counter()
            if done >= begin and now >= begin:
                if problem:
                    errors[problem] = errors.get(problem, 0) + 1
                else:
                    latencies.append(done - now)
            index += concurrency

    try:
        await asyncio.gather(*(loop(worker) for worker in range(concurrency)))
    finally:
        for channel in opened:
            await channel.close()
    return {"latencies": latencies, "errors": errors, "seconds": seconds}


def client_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grpc_load client")
    parser.add_argument("--target", required=True)
    parser.add_argument("--requests", type=Path, required=True)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--duration", type=float, default=10)
    args = parser.parse_args(argv)
    import uvloop

    tally = uvloop.run(
        drive(
            args.target, read_requests(args.requests), args.channels, args.concurrency,
            args.warmup, args.duration,
        )
    )  # fmt: skip
    json.dump(tally, sys.stdout)
    return 0


def start_clients(
    target: str, requests: Path, processes: int, connections: int, args: argparse.Namespace
) -> list[subprocess.Popen[bytes]]:
    """`processes` client processes sharing `connections` calls in flight, each started."""
    command = [sys.executable, "-m", "benchmarks.grpc_load", "client", "--target", target,
               "--requests", str(requests), "--warmup", str(args.warmup),
               "--duration", str(args.duration),
               "--channels", str(max(1, min(args.channels, connections // processes))),
               "--concurrency", str(max(1, connections // processes))]  # fmt: skip
    running = [
        subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(processes)
    ]
    for process in running:  # so that the server's CPU is read over the clients' window
        assert process.stderr is not None
        if process.stderr.readline().strip() != b"started":
            raise StressError(f"gRPC client failed: {process.communicate()[1][-2000:]!r}")
    return running


def collect(
    running: list[subprocess.Popen[bytes]], args: argparse.Namespace
) -> tuple[list[float], dict[str, int]]:
    """The clients' latencies (seconds) and errors by status code."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    for process in running:
        out, err = process.communicate(timeout=args.warmup + args.duration + 60)
        if process.returncode != 0:
            raise StressError(f"gRPC client failed: {err.decode(errors='replace')[-2000:]}")
        tally = json.loads(out)
        latencies += tally["latencies"]
        for code, count in tally["errors"].items():
            errors[code] = errors.get(code, 0) + count
    return latencies, errors


# --- rounds --------------------------------------------------------------------------------------


@contextmanager
def served(args: argparse.Namespace, scratch: Path, name: str) -> Iterator[tuple[Server, str]]:
    """The README's gunicorn (compare's cleared environment) with gRPC on a free port."""
    target = f"127.0.0.1:{free_port()}"
    variant = Variant(name, "", compare.SERVICE, env={"GRPC_BIND": target})
    with compare.served(variant, args, scratch) as server:
        if not wait_for(lambda: _log(server).count("gRPC serving on") >= 2, 30):
            raise StressError(f"gRPC not served:\n{server.log_tail()}")
        yield server, target


def _log(server: Server) -> str:
    return server.log.read_text(encoding="utf-8", errors="replace")


def measure(row: Row, round_: int, args: argparse.Namespace, scratch: Path) -> Result:
    with served(args, scratch, row.name) as (server, target):
        load = float(load_average().split()[0])
        if row.transport == "rest":
            variant = Variant(row.name, row.description, compare.SERVICE, bodies=row.name + ".jsonl",
                              script=OIP_SCRIPT, connections=row.connections,
                              flights_per_request=row.flights_per_request)  # fmt: skip
            pids = compare.process_tree(server.process.pid)
            url = server.url
            bodies = scratch / variant.bodies
            env_target = {"WRK_TARGET": f"/v2/models/{MODEL}/infer"}
            if args.warmup > 0:
                run_wrk_with(compare.wrk_command(args, variant, args.warmup, url), bodies,
                             args.warmup, env_target)  # fmt: skip
            before = compare.clocks(pids)
            output = run_wrk_with(compare.wrk_command(args, variant, args.duration, url), bodies,
                                  args.duration, env_target)  # fmt: skip
            after = compare.clocks(pids)
            summary = parse_summary(output)
            requests, seconds = summary.requests, summary.duration_s
            p50, p99 = summary.latency.p50 / 1000, summary.latency.p99 / 1000
            errors = summary.errors.socket + summary.errors.timeout + summary.non_2xx
            errors += summary.bad_bodies
        else:
            pids = compare.process_tree(server.process.pid)
            running = start_clients(target, scratch / f"{row.name}.bin", args.clients,
                                    row.connections, args)  # fmt: skip
            time.sleep(args.warmup)  # the clients' own warm-up: their window starts now
            before = compare.clocks(pids)
            time.sleep(args.duration)
            after = compare.clocks(pids)
            latencies, failed = collect(running, args)
            requests, seconds = len(latencies), float(args.duration)
            ordered = sorted(latencies) or [0.0]
            p50 = ordered[len(ordered) // 2] * 1000
            p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
            errors = sum(failed.values())
    cpu = None
    if before.server is not None and after.server is not None:
        cpu = after.server - before.server
    return Result(row.name, round_, requests, seconds, requests / seconds,
                  requests * row.flights_per_request / seconds, p50, p99, errors,
                  cpu, load)  # fmt: skip


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
        "server: the README's gunicorn with 2 workers, gRPC on a loopback port. The load "
        "generators (wrk for REST; for gRPC, "
        f"{info['clients']} processes of this module's grpc.aio client, `benchmarks/grpc_load.py`) "
        "run on the same 2 cores as the server, and other helpers' work was running: absolute "
        "figures are low and noisy, the ratios within a round are the comparison.",
        "",
        "Flights: the minimal model (`delay-minimal`), the same flights for every row (from "
        "the wrk bodies of the real data, `make bodies`): 1,000 single-flight bodies, and 1,000-flight "
        "batches. REST bodies are JSON tensors; gRPC requests carry `raw_input_contents` or "
        "typed `contents`; gRPC answers are raw outputs.",
        "",
        "| row | what | calls in flight | median req/s | median flights/s | p50 ms | p99 ms "
        "| server CPU ms per call | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in ROWS:
        mine = [r for r in results if r.row == row.name]
        if not mine:
            continue
        lines.append(
            f"| {row.name} | {row.description} | {row.connections} "
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
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["client"]:
        return client_main(raw[1:])
    parser = compare.run_parser("python -m benchmarks.grpc_load", __doc__)
    parser.add_argument("--clients", type=int, default=2, help="gRPC client processes")
    parser.add_argument("--channels", type=int, default=4, help="gRPC connections per client")
    parser.add_argument("--rows", help="comma-separated subset (default: all)")
    args = compare.parse_run(parser, raw)
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
        "clients": args.clients,
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

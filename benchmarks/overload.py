"""Overload and starvation, against the service as deployed (2 workers, 127.0.0.1).

    python -m benchmarks.overload --duration 15 --rounds 3 --out reports/reliability

Overload: wrk posts one-flight bodies over C - 8 keep-alive connections while a timing probe
(8 more connections, this process) records the status and latency of each of its own requests,
for C = 16, 64, 256, 1,024. wrk's summary mixes 200s and 503s in its percentiles; the probe's
requests queue like wrk's, so the p50/p99 of the 200s are the probe's. Two kinds of clients:
`at-once` re-sends the instant it is answered, 503 or not (wrk's own behaviour), `backoff`
honours Retry-After as the service's users are expected to (wrk/backoff.lua, and the probe
likewise). Servers with each in-flight bound of --bounds (default: the setting's default) and
one with the bound off (MAX_IN_FLIGHT=1000000; it never sheds, so its clients are `at-once`),
and with --hold-off each bound again with HOLD_EARLY_RETRIES off, all alternated within each
round. With --idle-pool N, N more keep-alive connections, each answered once and then idle
(a client's connection pool), stay open through every overload run: they must not make a worker
crowded (app.server.protocol counts busy connections), so 64 connections are still never
shed.

Starvation: 2 wrk connections post the largest full-schedule batch the limits admit (just under
MAX_BODY_BYTES) back to back while the probe (4 connections) posts one-flight bodies; batches
offloaded to the batch thread (default OFFLOAD_FLIGHTS) against offload off, alternated.

Each run also records where the 2 cores' time went (`cpu`): the server's workers, wrk, the
probe (this process) and everything else, from /proc and getrusage, since wrk and the probe
share the cores with the server (reports/reliability.md §10).

Writes --out/overload.json; exits non-zero when a target of issue 11 is missed, saying which.
"""

from __future__ import annotations

import argparse
import http.client
import json
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.settings import Settings
from benchmarks.chaos import (
    UNBOUNDED,
    Tally,
    Wrk,
    accounting_load,
    established_connections,
    percentile,
    served_by,
    worker_pids,
    wrk_figures,
)
from benchmarks.stress import GUNICORN, Server, commit, load_average, machine_cpu_s, process_cpu_s
from benchmarks.stress_report import WrkSummary
from train.provenance import machine

ROOT = Path(__file__).resolve().parent.parent
PROBE_CONNECTIONS = 8
STARVATION_PROBES = 4
CONNECTIONS = (16, 64, 256, 1024)
CLIENTS = {"at-once": "predict.lua", "backoff": "backoff.lua"}
"""wrk's script for each kind of client: re-send at once, or wait the 503's Retry-After."""
OFF = "off"
HOLD_OFF = "hold off"
"""A bound's variant with HOLD_EARLY_RETRIES off: every shed request answered at once."""
CROWDED_OFF = "crowded off"
"""A bound's variant without the crowded bound (CROWDED_IN_FLIGHT = the bound): a worker sheds
past MAX_IN_FLIGHT however many connections it holds, as before the eighth session."""
PROBE_BODY = b'{"flights":[{"OPERA":"Grupo LATAM","TIPOVUELO":"N","MES":3}]}'
P99_MIN_SAMPLES = 1000
"""The fewest 200s the probe must get in a run for their p99 to be given (else None, left out
of the rounds' median). With clients re-sending at once the hold keeps serving the connections
it serves, and a probe whose 8 connections all ended up shed got only its first requests' 200s,
made while wrk's 1,016 connections were still being accepted: the p99 of 85 such 200s is
their maximum, 226 ms in one development run (reports/reliability.md §10)."""


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds used so far by the server's workers (by pid), this process (the probe's
    thread) and its reaped children (wrk, once waited for), and the whole machine."""

    at: float
    workers: dict[int, float]
    own: float
    children: float
    busy: float
    capacity: float

    @classmethod
    def take(cls, master: int) -> CpuSnapshot:
        workers = {}
        for pid in worker_pids(master):
            try:
                workers[pid] = process_cpu_s(Path(f"/proc/{pid}/stat").read_text())
            except OSError:
                continue  # exited meanwhile
        own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                              resource.RUSAGE_CHILDREN))  # fmt: skip
        busy, capacity = machine_cpu_s(Path("/proc/stat").read_text())
        return cls(time.monotonic(), workers, own.ru_utime + own.ru_stime,
                   children.ru_utime + children.ru_stime, busy, capacity)  # fmt: skip


def cpu_split(before: CpuSnapshot, after: CpuSnapshot, ok: int, shed: int) -> dict[str, Any]:
    """Where the machine's CPU went between two snapshots around one run (wrk reaped in
    between, so that its CPU is in `children`): the workers' (a worker new since `before`
    counts from 0), wrk's, the probe's, and the rest (the master, other processes, the
    kernel's softirqs not charged to any of these); and the workers' per answer."""
    workers = sum(cpu - before.workers.get(pid, 0.0) for pid, cpu in after.workers.items())
    wrk, probe = after.children - before.children, after.own - before.own
    busy = after.busy - before.busy
    answers = ok + shed
    return {
        "seconds": round(after.at - before.at, 3),
        "capacity_s": round(after.capacity - before.capacity, 2),
        "busy_s": round(busy, 2),
        "workers_s": round(workers, 2),
        "wrk_s": round(wrk, 2),
        "probe_s": round(probe, 2),
        "other_s": round(busy - workers - wrk - probe, 2),
        "workers_us_per_answer": round(workers / answers * 1e6, 1) if answers else None,
        "workers_us_per_200": round(workers / ok * 1e6, 1) if ok else None,
    }


def probe_figures(tally: Tally) -> dict[str, Any]:
    ok = sorted(seconds for status, seconds in tally.timed if status == 200)
    return {
        "requests": len(tally.timed),
        "statuses": tally.answered,
        "lost": tally.lost,
        "ok_p50_ms": round(percentile(ok, 50) * 1000, 2) if ok else None,
        "ok_p99_ms": round(percentile(ok, 99) * 1000, 2) if len(ok) >= P99_MIN_SAMPLES else None,
        "ok_max_ms": round(ok[-1] * 1000, 2) if ok else None,
    }


@contextmanager
def idle_pool(port: int, connections: int) -> Iterator[list[http.client.HTTPConnection]]:
    """`connections` keep-alive connections to 127.0.0.1:`port`, each answered once (GET
    /health) and then left idle, as a client's pool holds them; closed on exit."""
    pool: list[http.client.HTTPConnection] = []
    try:
        for _ in range(connections):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            pool.append(connection)
            connection.request("GET", "/health")
            answer = connection.getresponse()
            answer.read()
            if answer.status != 200 or answer.will_close:
                raise RuntimeError(f"idle pool: GET /health answered {answer.status}, not kept")
        yield pool
    finally:
        for connection in pool:
            connection.close()


def measure(
    server: Server,
    bodies: Path,
    connections: int,
    probes: int,
    seconds: int,
    wrk: str,
    client: str = "at-once",
    idle: int = 0,
) -> dict[str, Any]:
    """wrk with `connections` and the probe with `probes` connections, at the same time, both
    behaving as `client` (a key of CLIENTS), beside an `idle_pool` of `idle` connections."""
    port = int(server.url.rsplit(":", 1)[1])
    with idle_pool(port, idle):
        idle_per_worker = sorted(
            established_connections(pid, port) for pid in worker_pids(server.process.pid)
        )
        before = CpuSnapshot.take(server.process.pid)
        script = CLIENTS[client]
        load = Wrk(server.url, seconds, connections, 2, bodies, wrk, timeout=2, script=script)
        backoff = client == "backoff"
        result: dict[str, Tally] = {}
        thread = threading.Thread(
            target=lambda: result.update(
                probe=accounting_load(port, seconds - 1, probes, PROBE_BODY, backoff)
            )
        )
        thread.start()
        summary: WrkSummary = load.result()
        thread.join(timeout=seconds + 60)
        after = CpuSnapshot.take(server.process.pid)
    figures = wrk_figures(summary)
    duration = summary.duration_s or seconds
    probe = probe_figures(result["probe"])
    ok = summary.statuses.get(200, 0) + probe["statuses"].get("200", 0)  # answers, not per s
    shed = summary.statuses.get(503, 0) + probe["statuses"].get("503", 0)
    other = sum(n for s, n in summary.statuses.items() if s not in (200, 503))
    other += sum(n for s, n in probe["statuses"].items() if s not in ("200", "503"))
    return {
        "connections": connections + probes,
        "idle_connections": idle,
        "idle_per_worker": idle_per_worker,
        "ok_per_s": round(ok / duration),
        "shed_per_s": round(shed / duration),
        "other_statuses": other,
        "socket_errors": figures["errors"],
        "probe_lost": probe["lost"],
        "ok_p50_ms": probe["ok_p50_ms"],
        "ok_p99_ms": probe["ok_p99_ms"],
        "probe": probe,
        "wrk": figures,
        "cpu": cpu_split(before, after, ok, shed),
        "load_average": load_average(),
    }


def largest_batch(full_bodies: Path, max_bytes: int, max_flights: int, out: Path) -> int:
    """One line: as many full-schedule flights (from the real-data bodies) as fit in
    `max_bytes` and `max_flights`. Returns the flight count."""
    flights = [
        flight
        for line in full_bodies.read_text().splitlines()
        if line.strip()
        for flight in json.loads(line)["flights"]
    ]
    chosen: list[str] = []
    size = len('{"flights":[]}')
    while len(chosen) < max_flights:
        text = json.dumps(flights[len(chosen) % len(flights)], separators=(",", ":"))
        if size + len(text) + 1 > max_bytes:
            break
        chosen.append(text)
        size += len(text) + 1
    out.write_text('{"flights":[' + ",".join(chosen) + "]}\n")
    return len(chosen)


@contextmanager
def servers(workdir: Path, **variants: dict[str, str]) -> Iterator[dict[str, Server]]:
    with ExitStack() as stack:
        yield {
            name: stack.enter_context(
                served_by(GUNICORN, _made(workdir / name), ROOT / "models", env=env)
            )
            for name, env in variants.items()
        }


def _made(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def overload(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """runs[client][bound][connections]: one run per round, the variants alternated."""
    env = {str(bound): {"MAX_IN_FLIGHT": str(bound)} for bound in args.bounds}
    for bound in args.bounds:
        if args.hold_off:
            env[f"{bound} {HOLD_OFF}"] = {"MAX_IN_FLIGHT": str(bound), "HOLD_EARLY_RETRIES": "0"}
        if args.crowded_off:
            env[f"{bound} {CROWDED_OFF}"] = {"MAX_IN_FLIGHT": str(bound),
                                             "CROWDED_IN_FLIGHT": str(bound)}  # fmt: skip
    variants = [(client, name) for client in args.clients for name in env]
    if args.unbounded:
        env[OFF] = {"MAX_IN_FLIGHT": UNBOUNDED}
        variants.append(("at-once", OFF))
    runs: dict[str, dict[str, dict[int, list[dict[str, Any]]]]] = {}
    with servers(workdir, **{_server(name): e for name, e in env.items()}) as running:
        for server in running.values():  # warm each: first requests, page cache
            measure(server, args.bodies, 56, PROBE_CONNECTIONS, 3, args.wrk)
        for round_ in range(args.rounds):
            for connections in args.connections:
                for client, bound in variants if round_ % 2 == 0 else variants[::-1]:
                    run = measure(
                        running[_server(bound)], args.bodies, connections - PROBE_CONNECTIONS,
                        PROBE_CONNECTIONS, args.duration, args.wrk, client, args.idle_pool,
                    )  # fmt: skip
                    by_bound = runs.setdefault(client, {}).setdefault(bound, {})
                    by_bound.setdefault(connections, []).append(run)
                    print(
                        f"overload {client} bound {bound} {connections}: {_line(run)}", flush=True
                    )
    return {
        client: {bound: {str(c): r for c, r in by_c.items()} for bound, by_c in by_bound.items()}
        for client, by_bound in runs.items()
    }


def _server(bound: str) -> str:
    return "bound-" + bound.replace(" ", "-")


def starvation(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    batch = workdir / "largest.jsonl"
    flights = largest_batch(args.full_bodies, 1_048_576, 10_000, batch)
    runs: dict[str, list[dict[str, Any]]] = {"offloaded": [], "on the event loop": []}
    variants = {"offloaded": {}, "on the event loop": {"OFFLOAD_FLIGHTS": "1000000"}}
    with servers(workdir, **{k.replace(" ", "-"): v for k, v in variants.items()}) as running:
        for round_ in range(args.rounds):
            order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
            for name in order:
                run = measure(
                    running[name.replace(" ", "-")], batch, 2, STARVATION_PROBES,
                    args.duration, args.wrk,
                )  # fmt: skip
                runs[name].append(run)
                print(f"starvation {name}: {_line(run)}", flush=True)
    return {"batch_flights": flights, "batch_bytes": batch.stat().st_size, "runs": runs}


def _line(run: dict[str, Any]) -> str:
    cpu = run["cpu"]
    return (
        f"200/s {run['ok_per_s']}, 503/s {run['shed_per_s']}, other {run['other_statuses']}, "
        f"200 p50 {run['ok_p50_ms']} ms p99 {run['ok_p99_ms']} ms, "
        f"socket errors {run['socket_errors']}, probe lost {run['probe_lost']}, "
        f"CPU s: workers {cpu['workers_s']}, wrk {cpu['wrk_s']}, probe {cpu['probe_s']}, "
        f"other {cpu['other_s']} of {cpu['capacity_s']}"
    )


def medians(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    keys = ("ok_per_s", "shed_per_s", "ok_p50_ms", "ok_p99_ms")
    # the probe's p50/p99 are None in a run where it got no 200
    present = {key: [r[key] for r in runs if r[key] is not None] for key in keys}
    summary: dict[str, Any] = {
        key: statistics.median(values) if values else None for key, values in present.items()
    }
    for key in ("ok_p99_ms", "ok_per_s"):
        values = present[key]
        summary[f"{key}_range"] = [min(values), max(values)] if values else [None, None]
    summary["other_statuses"] = sum(r["other_statuses"] for r in runs)
    summary["socket_errors"] = {
        kind: sum(r["socket_errors"][kind] for r in runs)
        for kind in ("connect", "read", "write", "timeout")
    }
    summary["probe_lost"] = sum(r["probe_lost"] for r in runs)
    return summary


def table(result: dict[str, Any]) -> str:
    """The report's overload table (markdown) from a result file: medians [min-max of rounds]."""
    lines = [
        "| clients | bound | connections | 200 req/s | 503 req/s | 200 p50 ms | 200 p99 ms "
        "| non-503 errors | socket errors: connect / read / write | wrk timeouts (2 s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row, runs in _rows(result):
        m = medians(runs)
        low, high = m["ok_per_s_range"]
        p99_low, p99_high = m["ok_p99_ms_range"]
        e = m["socket_errors"]
        p50 = "n/a" if m["ok_p50_ms"] is None else f"{m['ok_p50_ms']:.2f}"
        p99 = "n/a" if m["ok_p99_ms"] is None else f"{m['ok_p99_ms']:.1f}"
        if p99_low is not None:
            p99 += f" [{p99_low:.1f}-{p99_high:.1f}]"
        lines.append(
            f"{row} | {m['ok_per_s']:,.0f} [{low:,}-{high:,}] | {m['shed_per_s']:,.0f} "
            f"| {p50} | {p99} "
            f"| {m['other_statuses']} | {e['connect']} / {e['read']} / {e['write']} "
            f"| {e['timeout']} |"
        )
    return "\n".join(lines)


def _rows(result: dict[str, Any]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Each row's first cells (clients, bound, connections, and the idle pool's beside them)
    and its runs, in the file's order."""
    idle = result.get("settings", {}).get("idle_pool", 0)
    pool = f" + {idle:,} idle" if idle else ""
    for client, by_bound in result.get("overload", {}).items():
        for bound, by_c in by_bound.items():
            for connections, runs in by_c.items():
                yield f"| {client} | {bound} | {int(connections):,}{pool}", runs


def cpu_table(result: dict[str, Any]) -> str:
    """Where the 2 cores went in each row (markdown), medians of the rounds: the shares of the
    machine's CPU time of the server's workers, wrk, the probe and the rest (other processes,
    unattributed kernel time, idle), and the workers' CPU per 200 and per answer (200 or 503)."""
    lines = [
        "| clients | bound | connections | workers | wrk | probe | rest "
        "| workers' CPU per 200 | per answer |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row, runs in _rows(result):
        cpus = [run["cpu"] for run in runs if "cpu" in run]
        if cpus:
            lines.append(f"{row} | {' | '.join(_cpu_cells(cpus))} |")
    return "\n".join(lines)


def _cpu_cells(cpus: Sequence[dict[str, Any]]) -> list[str]:
    shares = {
        part: statistics.median(c[f"{part}_s"] / c["capacity_s"] for c in cpus)
        for part in ("workers", "wrk", "probe")
    }
    cells = [f"{share:.0%}" for share in shares.values()]
    cells.append(f"{1 - sum(shares.values()):.0%}")
    for key in ("workers_us_per_200", "workers_us_per_answer"):
        values = [c[key] for c in cpus if c[key] is not None]
        cells.append(f"{statistics.median(values):.0f} µs" if values else "n/a")
    return cells


def verdicts(result: dict[str, Any]) -> dict[str, bool]:
    """Issue 11's targets for each kind of client and each bound measured, each against its
    own unloaded figures: the p99 of the 200s at 16 connections, the 200/s at 16 or 64."""
    checks: dict[str, bool] = {}
    pool = result.get("settings", {}).get("idle_pool", 0)
    idle = f", beside {pool:,} idle connections" if pool else ""
    for client, by_bound in result.get("overload", {}).items():
        for bound, by_c in by_bound.items():
            if bound == OFF:
                continue
            rows = {int(c): medians(r) for c, r in by_c.items()}
            for connections in (64, 256, 1024):
                if connections not in rows:
                    continue
                row, errors = rows[connections], rows[connections]["socket_errors"]
                name = f"{client}, bound {bound}, {connections}:"
                checks[f"{name} zero non-503 errors"] = row["other_statuses"] == 0
                checks[f"{name} zero socket errors (connect/read/write)"] = (
                    errors["connect"] + errors["read"] + errors["write"] + row["probe_lost"] == 0
                )
                checks[f"{name} zero wrk timeouts (2 s)"] = errors["timeout"] == 0
                if connections == 64 and bound.isdigit() and int(bound) >= 64:
                    checks[f"{name} no 503 (64 clients are never shed){idle}"] = (
                        row["shed_per_s"] == 0
                    )
                if 16 not in rows or 64 not in rows:
                    continue
                p99, unloaded_p99 = row["ok_p99_ms"], rows[16]["ok_p99_ms"]
                checks[f"{name} p99 of 200s <= 5 x unloaded p99 (16 connections)"] = (
                    p99 is not None and unloaded_p99 is not None and p99 <= 5 * unloaded_p99
                )  # no 200 to time is no p99 met
                unloaded_max = max(rows[c]["ok_per_s"] for c in (16, 64))
                checks[f"{name} 200/s >= 90 % of the unloaded maximum"] = (
                    row["ok_per_s"] >= 0.9 * unloaded_max
                )
    if "starvation" in result:
        offloaded = medians(result["starvation"]["runs"]["offloaded"])
        checks["starvation: single-flight p99 <= 50 ms while the largest batches are scored"] = (
            offloaded["ok_p99_ms"] <= 50
        )
    return checks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overload", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bodies", type=Path, default=ROOT / "build" / "wrk" / "minimal.jsonl")
    parser.add_argument("--full-bodies", type=Path, default=ROOT / "build" / "wrk" / "full.jsonl")
    parser.add_argument("--wrk", default="wrk")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "reliability")
    parser.add_argument("--connections", type=int, nargs="+", default=list(CONNECTIONS))
    parser.add_argument(
        "--bounds",
        type=int,
        nargs="+",
        default=[Settings.max_in_flight],
        help="MAX_IN_FLIGHT values, a server each (default: the setting's)",
    )
    parser.add_argument("--clients", nargs="+", choices=list(CLIENTS), default=list(CLIENTS))
    parser.add_argument(
        "--hold-off",
        action="store_true",
        help="also each bound with HOLD_EARLY_RETRIES off (every 503 at once), for comparison",
    )
    parser.add_argument(
        "--crowded-off",
        action="store_true",
        help="also each bound without the crowded bound (CROWDED_IN_FLIGHT = the bound)",
    )
    parser.add_argument(
        "--idle-pool",
        type=int,
        default=0,
        metavar="N",
        help="N keep-alive connections, answered once then idle, open through each overload run",
    )
    parser.add_argument(
        "--unbounded",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also a server with the bound off (at-once clients)",
    )
    parser.add_argument(
        "--name",
        default=None,
        help="report file name (default overload.json, or overload-ONLY.json)",
    )
    parser.add_argument("--only", choices=["overload", "starvation"], default=None)
    parser.add_argument(
        "--table",
        type=Path,
        default=None,
        help="print the overload and CPU tables of this result file and exit",
    )
    args = parser.parse_args(argv)
    if args.table is not None:
        recorded = json.loads(args.table.read_text(encoding="utf-8"))
        print(table(recorded) + "\n\n" + cpu_table(recorded))
        return 0
    for path in (args.bodies, args.full_bodies):
        if not path.is_file():
            print(f"overload: no bodies at {path}: run `make bodies` first", file=sys.stderr)
            return 2
    args.bodies, args.full_bodies = args.bodies.resolve(), args.full_bodies.resolve()
    uname, cpu, nproc = machine()
    state = commit(short=False)
    result: dict[str, Any] = {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"uname": uname, "cpu": cpu, "nproc": nproc},
        "load_average_before": load_average(),
        "settings": {"duration_s": args.duration, "rounds": args.rounds, "workers": 2,
                     "probe_connections": PROBE_CONNECTIONS, "wrk_timeout_s": 2,
                     "bounds": args.bounds, "clients": args.clients, "hold_off": args.hold_off,
                     "crowded_off": args.crowded_off, "idle_pool": args.idle_pool,
                     "default_max_in_flight": Settings.max_in_flight,
                     "default_hold_early_retries": Settings.hold_early_retries,
                     "default_crowded": [Settings.crowded_connections,
                                         Settings.crowded_in_flight, Settings.crowded_window]},
        "git_revision": state[0] if state else "unknown",
        "git_dirty": state[1] if state else None,
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="overload-") as scratch:
        if args.only in (None, "overload"):
            result["overload"] = overload(args, Path(scratch))
        if args.only in (None, "starvation"):
            result["starvation"] = starvation(args, Path(scratch))
    result["load_average_after"] = load_average()
    result["checks"] = verdicts(result)
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.name or ("overload.json" if args.only is None else f"overload-{args.only}.json")
    (args.out / name).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for check, ok in result.get("checks", {}).items():
        print(f"overload: {'ok  ' if ok else 'MISS'} {check}")
    return 0 if all(result.get("checks", {}).values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""benchmarks/open_loop.py: arrivals on their own schedule, latencies from when each request was
due (a stall is timed for every request due during it), its figures, and a short real run."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from benchmarks.chaos import percentile, post
from benchmarks.open_loop import (
    CpuClock,
    MetricsScraper,
    Scrape,
    Timings,
    arrivals,
    figures,
    open_loop,
    parse_args,
    plan_p99_ms,
    read_scrape,
    render,
    signals,
    summary,
)
from benchmarks.stress import CLOCK_TICKS, StressError, machine_cpu_s

ROOT = Path(__file__).resolve().parent.parent
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"


@contextmanager
def fake_server(
    stall_at: float = math.inf, stall_s: float = 0.0, drop_every: int = 0
) -> Iterator[int]:
    """A loopback HTTP server on its own thread that answers each request `{}` at once, but
    stalls its whole loop `stall_s` s at the first request after `stall_at` s, and closes the
    connection unanswered on every `drop_every`-th request; yields its port."""
    loop = asyncio.new_event_loop()
    started = time.perf_counter()
    state = {"stalled": False, "requests": 0}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))  # fmt: skip
                await reader.readexactly(length)
                state["requests"] += 1
                if drop_every and state["requests"] % drop_every == 0:
                    break
                if not state["stalled"] and time.perf_counter() - started > stall_at:
                    state["stalled"] = True
                    time.sleep(stall_s)  # the whole loop: as a busy worker
                writer.write(ANSWER)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = loop.run_until_complete(asyncio.start_server(serve, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server.sockets[0].getsockname()[1]
    finally:

        async def shut_down() -> None:
            server.close()
            handlers = asyncio.all_tasks() - {asyncio.current_task()}
            for handler in handlers:
                handler.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut_down(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_arrivals_come_at_the_rate_with_exponential_gaps() -> None:
    offsets = arrivals(1000, 20, random.Random(1))
    assert abs(len(offsets) - 20_000) < 4 * math.sqrt(20_000)  # Poisson: sd = sqrt(mean)
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    assert statistics.mean(gaps) == pytest.approx(1e-3, rel=0.05)
    assert statistics.stdev(gaps) / statistics.mean(gaps) == pytest.approx(1, rel=0.05)
    assert offsets == sorted(offsets)
    assert offsets[0] > 0
    assert offsets[-1] < 20


def test_percentiles_are_values_measured() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 99) == 99
    assert percentile(values, 99.9) == 100
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3  # the true median, not the 2nd
    assert percentile([7.0], 99) == 7


def test_a_stall_is_timed_for_every_request_due_during_it() -> None:
    """One connection, 200 requests a second, the server stalled 0.3 s: a closed loop (timing
    from the write) sees one slow request; the requests due meanwhile waited too."""
    with fake_server(stall_at=0.5, stall_s=0.3) as port:
        timings = open_loop(port, [post(b"{}")], 200, 1.5, 1, 0.0, seed=3)
    assert not timings.lost
    assert len(timings.latency) == timings.due
    assert sum(seconds > 0.1 for seconds in timings.latency) >= 25  # ~60 due in the stall
    assert sum(seconds > 0.1 for seconds in timings.from_write) <= 1
    assert max(timings.latency) >= 0.29


def test_answers_lost_are_counted_and_the_run_goes_on() -> None:
    with fake_server(drop_every=10) as port:
        timings = open_loop(port, [post(b"{}")], 200, 1.0, 4, 0.0, seed=4)
    lost = sum(timings.lost.values())
    assert lost >= 10
    assert len(timings.latency) + lost == timings.due
    assert timings.statuses == {200: len(timings.latency)}


def test_the_warm_up_is_not_timed() -> None:
    with fake_server() as port:
        timings = open_loop(port, [post(b"{}")], 400, 1.0, 2, 0.5, seed=5)
    assert timings.answered_all > len(timings.latency) == timings.due
    assert timings.due == pytest.approx(200, abs=4 * math.sqrt(200))


def test_figures_from_timings_and_cpu_clocks() -> None:
    timings = Timings(
        latency=[0.001 * i for i in range(1, 101)],
        send_lag=[0.0001] * 100,
        from_write=[0.0005] * 100,
        answered_all=120,
        due=100,
    )
    timings.statuses[200] = 100
    before = CpuClock(at=10.0, workers=1.0, cpus_busy=5.0, own=0.5)
    after = CpuClock(at=12.0, workers=1.6, cpus_busy=6.0, own=0.9)
    result = figures(timings, before, after, workers=1, rate=60, window=1.0)
    assert result["utilisation"] == 0.3  # 0.6 CPU-s over 2 s
    assert result["worker_us_per_request"] == 5000.0  # 0.6 s over 120 answers, warm-up's too
    assert result["answered_per_s"] == 100
    assert result["latency_ms"]["p99"] == 99.0
    assert result["latency_ms"]["max"] == 100.0
    assert result["others_on_server_cpus"] == 0.2  # 1.0 busy - 0.6 of the workers, over 2 s
    assert result["client_cpu"] == 0.2


EXPOSITION = """\
# HELP requests_in_flight Requests a worker holds.
# TYPE requests_in_flight gauge
requests_in_flight{transport="grpc"} 7.0
requests_in_flight{transport="rest"} COUNT
# HELP event_loop_lag_seconds How late the loop ran a timer.
# TYPE event_loop_lag_seconds histogram
event_loop_lag_seconds_bucket{le="0.001"} 90.0
event_loop_lag_seconds_bucket{le="+Inf"} 100.0
event_loop_lag_seconds_count 100.0
event_loop_lag_seconds_sum 0.25
# HELP model_workers Workers serving a model.
# TYPE model_workers gauge
model_workers{model="delay-full",version="abc"} 1.0
"""


def test_a_scrape_reads_the_rest_in_flight_count_and_the_loop_lag() -> None:
    assert read_scrape(EXPOSITION.replace("COUNT", "3.0")) == Scrape(3.0, 0.25, 100.0)
    with pytest.raises(StressError, match=r"no requests_in_flight$"):
        read_scrape(EXPOSITION.replace('"rest"', '"other"').replace("COUNT", "3.0"))
    with pytest.raises(StressError, match="no event_loop_lag_seconds_sum"):
        read_scrape(EXPOSITION.replace("_sum", "_total").replace("COUNT", "3.0"))


@contextmanager
def metrics_server(status: int = 200) -> Iterator[tuple[str, list[float]]]:
    """A loopback /metrics whose REST in-flight count is 1, 2, 3… one more each scrape (the
    times of the scrapes in the list it yields with its URL), or answers `status`."""
    scraped: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            scraped.append(time.perf_counter())
            body = EXPOSITION.replace("COUNT", f"{len(scraped)}.0").encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", scraped
    finally:
        server.shutdown()
        thread.join(5)


def test_the_scraper_samples_inside_the_measured_window_only() -> None:
    with metrics_server() as (url, scraped):
        start = time.perf_counter()
        scraper = MetricsScraper(url, 0.05, start + 0.3, start + 0.6)
        scraper.start()
        time.sleep(0.9)
        samples = scraper.stop()
    assert [sample.in_flight for sample in samples] == [
        float(n) for n in range(1, len(scraped) + 1)
    ]
    assert 3 <= len(samples) <= 7  # every 0.05 s for 0.3 s, on a loaded machine fewer
    assert all(start + 0.3 <= at < start + 0.6 + 0.05 for at in scraped)


def test_a_failed_scrape_stops_the_run() -> None:
    with metrics_server(status=404) as (url, _):
        start = time.perf_counter()
        scraper = MetricsScraper(url, 0.02, start, start + 1)
        scraper.start()
        time.sleep(0.2)
        with pytest.raises(StressError, match="404"):
            scraper.stop()


def test_the_in_flight_figures_littles_estimate_and_the_loop_lag_between_scrapes() -> None:
    scrapes = [Scrape(1.0, 1.0, 100), Scrape(3.0, 1.2, 110), Scrape(2.0, 1.3, 120),
               Scrape(2.0, 1.6, 140)]  # fmt: skip
    timings = Timings(from_write=[0.002] * 1000, scrapes=scrapes)
    result = figures(timings, CpuClock(0, 0, 0, 0), CpuClock(1, 0, 0, 0), 1, 1000, window=1.0)
    assert result["in_flight"] == {
        "mean": 2.0, "sd": 0.71, "samples": 4, "little": 2.0,
        "loop_lag_ms": 15.0,  # 0.6 s late over 40 samples
    }  # fmt: skip
    one = figures(Timings(scrapes=scrapes[:1]), CpuClock(0, 0, 0, 0), CpuClock(1, 0, 0, 0), 1, 1, 1)
    assert one["in_flight"]["loop_lag_ms"] is None
    assert figures(Timings(), CpuClock(0, 0, 0, 0), CpuClock(1, 0, 0, 0), 1, 1, 1.0)[
        "in_flight"
    ] is None  # fmt: skip


def test_the_plan_estimate_is_deploy_readmes() -> None:
    """deploy/README.md: s = 0.06 ms at u = 0.6 gives about 0.6 ms."""
    assert plan_p99_ms(0.06, 0.6) == pytest.approx(0.6, abs=0.02)
    assert plan_p99_ms(0.06, 1.0) is None


def test_busy_time_of_the_cpus_named() -> None:
    stat = (
        "cpu  100 0 100 800 0 0 0 0 0 0\n"
        "cpu0 50 0 50 400 10 0 0 0 0 0\n"
        "cpu1 50 0 50 400 0 0 0 5 0 0\n"
    )
    assert machine_cpu_s(stat, [0])[0] == 100 / CLOCK_TICKS  # idle and iowait left out
    assert machine_cpu_s(stat, [0, 1])[0] == 205 / CLOCK_TICKS  # steal counts as busy


def _result() -> dict[str, Any]:
    def run(server: str, round_: int, p99: float, utilisation: float) -> dict[str, Any]:
        return {
            "round": round_, "server": server, "mix": "minimal", "load": 0.5,
            "answered_per_s": 1000, "utilisation": utilisation, "worker_us_per_request": 300.0,
            "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": p99, "p99.9": 9.0, "max": 10.0},
            "send_lag_ms": {"p50": 0.1, "p99": 1.0}, "from_write_ms": {"p50": 0.5, "p99": 2.0},
            "others_on_server_cpus": 0.0, "client_cpu": 0.2, "statuses": {"200": 1000},
            "lost": {}, "due": 1000,
        }  # fmt: skip

    return {
        "date": "2026-12-07T00:00:00+00:00", "revision": "abc1234",
        "machine": {"uname": "Linux", "cpu": "CPU", "cores": 2}, "load_average_after": "0 0 0",
        "server": {"workers": 1, "cpus": [0], "client_cpus": [1]},
        "settings": {"seconds": 15, "warmup": 2, "connections": 64, "rounds": 3, "seed": 1,
                     "saturation_seconds": 10},
        "saturation": {"minimal": {"requests_per_s": 2000, "p99_ms": 12.0}},
        "runs": [run("service", 1, 4.0, 0.3), run("noop", 1, 3.0, 0.2),
                 run("service", 2, 6.0, 0.31), run("noop", 2, 3.5, 0.2),
                 run("service", 3, 5.0, 0.32), run("noop", 3, 9.0, 0.2)],
    }  # fmt: skip


def test_the_signals_table_sets_each_signal_against_the_lowest_load() -> None:
    result = _result()
    assert signals(result) == []  # nothing scraped: no table
    for run in result["runs"]:
        if run["server"] == "service":
            run["in_flight"] = {"mean": 2.0, "sd": 1.0, "samples": 10, "little": 2.5,
                                "loop_lag_ms": 0.5}  # fmt: skip
    higher = [dict(run, load=0.8, answered_per_s=1600, utilisation=0.45,
                   in_flight={"mean": 6.0, "sd": 2.0, "samples": 10, "little": 5.0,
                              "loop_lag_ms": 2.0})
              for run in result["runs"] if run["server"] == "service"]  # fmt: skip
    result["runs"] += higher
    table = signals(result)
    assert "| minimal | 0.50 | 1.00 | 1.00 | 1.00 | 1.00 | 1.00 |" in table
    assert "| minimal | 0.80 | 1.60 | 1.45 | 3.00 | 2.00 | 4.00 |" in table  # u: 0.45 / 0.31
    assert "| 2.0 | 1.0 | 2.5 | 0.5 |" in render(result)  # the service's row: mean, sd, λW, lag
    assert "was not scraped in this run" in render(result)  # _result's settings: no scrape_every
    result["settings"]["scrape_every"] = 1.0
    assert "scraped every 1.0 s of the timed window" in render(result)


def test_a_run_of_the_service_alone_names_its_command_and_no_ceiling() -> None:
    result = _result()
    assert render(result).startswith("# Latency at a fixed arrival rate (`make open-loop`)")
    assert "`noop`: the framework ceiling" in render(result)
    result["command"], result["server"]["ready_s"] = "make hpa-signal", {"service": 0.3}
    report = render(result)
    assert report.startswith("# Latency at a fixed arrival rate (`make hpa-signal`)")
    assert "the service alone: no framework ceiling" in report
    assert "`noop`" not in report.split("\n\n")[0]


def test_each_server_load_and_mix_is_one_row_of_medians() -> None:
    rows = summary(_result())
    assert [(row["server"], row["p99"], row["p99_range"]) for row in rows] == [
        ("service", 5.0, [4.0, 6.0]),
        ("noop", 3.5, [3.0, 9.0]),
    ]
    assert rows[0]["utilisation"] == 0.31
    assert rows[0]["plan_p99"] == pytest.approx(plan_p99_ms(0.3, 0.31), abs=0.01)
    table = render(_result())
    assert "| minimal | 0.50 | service | 1,000 | 0.31 | 300.0 | 1.0 | **5.0** [4.0-6.0] |" in table


@pytest.mark.server
def test_a_short_run_against_the_real_service_and_the_ceiling(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not on PATH (apt-get install wrk)")
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU for the worker and one for the client: this process may use one")
    bodies = tmp_path / "bodies"
    bodies.mkdir()
    flight = {"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 3}
    (bodies / "minimal.jsonl").write_text(json.dumps({"flights": [flight]}) + "\n")
    command = [
        sys.executable, "-m", "benchmarks.open_loop", "--bodies", str(bodies), "--mixes",
        "minimal", "--loads", "0.2", "--seconds", "2", "--warmup", "0.5", "--rounds", "1",
        "--saturation-seconds", "1", "--out", str(tmp_path / "out"), "--revision", "abc1234",
        "--scrape-every", "1",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "out" / "open-loop.json").read_text())
    assert [run["server"] for run in result["runs"]] == ["service", "noop"]
    for run in result["runs"]:
        assert run["statuses"] == {"200": run["due"]}
        assert not run["lost"]
        assert 0 < run["utilisation"] < 1
    service, noop = result["runs"]
    assert service["in_flight"]["samples"] >= 1  # scraped once a second of the 1.5 s timed
    assert service["in_flight"]["mean"] >= 0
    assert service["in_flight"]["loop_lag_ms"] is None or service["in_flight"]["loop_lag_ms"] >= 0
    assert noop["in_flight"] is None  # the ceiling has no metrics
    report = (tmp_path / "out" / "open-loop.md").read_text()
    assert "code: abc1234" in report
    assert "| minimal | 0.20 | noop |" in report


@pytest.mark.parametrize(("seconds", "warmup"), [("2", "2"), ("2", "3"), ("2", "-1")])
def test_a_warmup_that_leaves_no_timed_window_is_refused(
    seconds: str, warmup: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The timed window is --seconds less --warmup: --warmup 2 --seconds 2 divided every rate by
    0 s, after a whole run; a longer or negative warm-up by a window it does not have."""
    with pytest.raises(SystemExit) as stopped:
        parse_args(["--seconds", seconds, "--warmup", warmup])
    assert stopped.value.code == 2
    assert "--warmup must be at least 0 and less than --seconds (2)" in capsys.readouterr().err

"""app.server.worker: uvicorn is configured with the guarded protocol, the settings' limits, and a
shutdown deadline inside gunicorn's; the app logger goes to gunicorn's log with request IDs."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn.config
from gunicorn.config import Config as GunicornConfig
from gunicorn.glogging import Logger

from app.observability.request_id import REQUEST_ID
from app.server.protocol import GuardedHttpToolsProtocol, Limits
from app.server.worker import SHUTDOWN_MARGIN, Server, UvicornWorker

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """A worker rewires the `app` and `uvicorn.error` loggers: put them back for other tests.
    (The record factory stays: install_log_context is meant to be process-wide.)"""
    saved = {}
    for name in ("app", "uvicorn.error"):
        logger = logging.getLogger(name)
        saved[name] = (logger.handlers[:], logger.propagate, logger.level)
    yield
    for name, (handlers, propagate, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers, logger.propagate = handlers, propagate
        logger.setLevel(level)


def make_worker(monkeypatch: pytest.MonkeyPatch, **env: str) -> UvicornWorker:
    for name in ("MAX_HEAD_BYTES", "HEAD_TIMEOUT", "BODY_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cfg = GunicornConfig()
    cfg.set("graceful_timeout", 20)
    worker = UvicornWorker(1, 0, [], None, 30, cfg, Logger(cfg))
    worker.tmp.close()
    return worker


def test_uvicorn_serves_through_the_guarded_protocol_with_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = make_worker(
        monkeypatch, MAX_HEAD_BYTES="4096", HEAD_TIMEOUT="3", BODY_TIMEOUT="7", CROWDED_WINDOW="5"
    )
    protocol = worker.config.http
    assert isinstance(protocol, type)
    assert issubclass(protocol, GuardedHttpToolsProtocol)
    assert protocol.limits == Limits(4096, 3, 7, crowded_window=5)


def test_defaults_and_shutdown_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = make_worker(monkeypatch)
    assert worker.config.http.limits == Limits()
    assert worker.config.http.log_shed is False
    assert worker.config.timeout_graceful_shutdown == 20 - SHUTDOWN_MARGIN
    assert worker.config.timeout_keep_alive == worker.cfg.keepalive


def test_the_app_logger_writes_to_gunicorns_log_with_the_request_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = make_worker(monkeypatch)
    REQUEST_ID.set(b"")  # outside any request (an in-process test call may have set one here)
    app_logger = logging.getLogger("app")
    assert app_logger.handlers == worker.log.error_log.handlers
    assert not app_logger.propagate
    handler = worker.log.error_log.handlers[0]
    assert handler.formatter is not None
    record = app_logger.makeRecord("app", logging.ERROR, __file__, 1, "boom", (), None)
    assert "[-] boom" in handler.formatter.format(record)
    bare = logging.LogRecord("other", logging.ERROR, __file__, 1, "plain", (), None)
    assert "[-] plain" in handler.formatter.format(bare)  # no request_id attribute: no error


def test_shed_requests_are_access_logged_with_access_log(monkeypatch: pytest.MonkeyPatch) -> None:
    assert make_worker(monkeypatch, ACCESS_LOG="-").config.http.log_shed is True


def test_gunicorn_conf_names_this_worker(gunicorn_conf: dict[str, Any]) -> None:
    conf = gunicorn_conf
    assert conf["worker_class"] == "app.server.worker.UvicornWorker"
    # gunicorn's own parser limits do nothing under a uvicorn worker: they must not pretend to.
    assert not {"limit_request_line", "limit_request_fields", "limit_request_field_size"} & set(
        conf
    )


def test_uvicorn_sends_no_server_header(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set on the worker's uvicorn config; tests/test_server.py asks the real server."""
    assert make_worker(monkeypatch).config.server_header is False


def test_websocket_handshakes_are_never_taken_even_with_a_websocket_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As if `websockets` were installed (it is not a dependency): "auto" would then resolve to
    a WebSocket protocol, which app.server.protocol hands every handshake to."""
    monkeypatch.setitem(uvicorn.config.WS_PROTOCOLS, "auto", "asyncio:Protocol")
    config = make_worker(monkeypatch).config
    config.app = "app.main:create_app"
    config.factory = True
    config.load()
    assert config.ws_protocol_class is None


def test_shutdown_marks_the_server_draining_before_uvicorn_closes_its_listener(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """So that a connection made after uvicorn's shutdown began drains too (app.server.protocol)."""
    import asyncio

    import uvicorn

    from app.server import protocol
    from app.server.worker import DRAIN_HOLD_MARGIN, Server
    from app.settings import Settings

    drains: list[tuple[float, float]] = []

    async def uvicorn_shutdown(self: uvicorn.Server, sockets: object = None) -> None:
        drain = protocol._DRAINING[self.server_state]
        now = asyncio.get_running_loop().time()
        drains.append((round(drain.closing_from - now, 1), round(drain.closing_by - now, 1)))

    monkeypatch.setattr(uvicorn.Server, "shutdown", uvicorn_shutdown)
    for quick in (False, True):
        config = uvicorn.Config(app=lambda: None, timeout_graceful_shutdown=18)
        server = Server(config, Settings.from_env({}))
        assert server.server_state not in protocol._DRAINING
        if quick:
            server.quit()  # gunicorn's SIGQUIT
        asyncio.run(server.shutdown())
    # a plain stop keeps connections alive for the linger, and idle ones open until a second
    # before uvicorn's deadline at most; a quick one does neither
    assert drains == [(protocol.DRAIN_LINGER, 18 - DRAIN_HOLD_MARGIN), (0.0, 0.0)]


def test_the_scorer_and_the_metrics_are_told_the_servers_requests_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """So that app.inference.microbatch scores a request alone in its worker at once, and
    requests_in_flight shows what the in-flight bound counts."""
    import asyncio

    import uvicorn
    from starlette.applications import Starlette

    from app.inference.microbatch import Scorer
    from app.observability import metrics
    from app.server.overload import BatchThread
    from app.server.worker import Server
    from app.settings import Settings

    monkeypatch.setattr(metrics, "_in_flight", {})
    app = Starlette()
    app.state.scorer = Scorer(BatchThread(256), merge=True)
    config = uvicorn.Config(app=app, lifespan="off", log_config=None)
    config.load()
    server = Server(config, Settings.from_env({}))
    server.lifespan = config.lifespan_class(config)  # as uvicorn's serve() makes it
    asyncio.run(server.startup(sockets=[]))
    assert app.state.scorer.in_flight is not None
    assert app.state.scorer.in_flight() == 0
    server.server_state.tasks.add(object())  # type: ignore[arg-type]
    assert app.state.scorer.in_flight() == 1
    assert metrics._in_flight["rest"]() == 1  # the metric requests_in_flight reads the same count


def _beating_server(
    monkeypatch: pytest.MonkeyPatch, clock: dict[str, float]
) -> tuple[Server, list[float]]:
    """A worker's uvicorn Server whose heartbeat (`timeout_notify` 15 s, as under gunicorn's
    `timeout` of 30) reads `clock["monotonic"]`, and the times it beat at."""
    from types import SimpleNamespace

    import uvicorn
    from starlette.applications import Starlette

    from app.server import worker
    from app.settings import Settings

    beats: list[float] = []

    async def beat() -> None:
        beats.append(clock["monotonic"])

    config = uvicorn.Config(
        app=Starlette(), lifespan="off", log_config=None, timeout_notify=15, callback_notify=beat
    )
    config.load()
    monotonic = SimpleNamespace(monotonic=lambda: clock["monotonic"])
    monkeypatch.setattr(worker, "time", monotonic, raising=False)
    return Server(config, Settings.from_env({})), beats


def test_the_heartbeat_keeps_its_pace_when_the_wall_clock_steps_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """gunicorn's master times a worker out on the monotonic clock: uvicorn's heartbeat, paced by
    time.time(), stopped for an hour when the wall clock stepped back an hour (an NTP step), and
    every worker was killed as hung 30 s later. Beats come every `timeout_notify` s of the
    monotonic clock whatever the wall clock does, and the first tick beats."""
    import asyncio
    import time

    clock = {"wall": time.time(), "monotonic": 1000.0}
    server, beats = _beating_server(monkeypatch, clock)
    monkeypatch.setattr(time, "time", lambda: clock["wall"])  # uvicorn's clock

    async def ticks() -> None:
        for counter in range(0, 60, 10):  # uvicorn's main loop: 0.1 s a tick, a beat due every 10
            await server.on_tick(counter)
            clock["monotonic"] += 16
            clock["wall"] -= 3600  # stepped back an hour before every tick but the first

    asyncio.run(ticks())
    assert beats == [1000.0 + 16 * tick for tick in range(6)]


def test_a_starved_worker_beats_within_the_masters_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker starved of CPU runs each 0.1-s tick of uvicorn's main loop late, here by 3.4 s
    (the p99 of its event-loop lag in section 25's run): its heartbeat, looked at every tenth
    tick as uvicorn does, came 10 x 3.5 = 35 s apart, past gunicorn's `timeout` of 30, and the
    master killed it as hung. Looked at every tick, a beat is at most one tick past
    `timeout_notify`."""
    import asyncio
    import itertools

    clock = {"monotonic": 1000.0}
    server, beats = _beating_server(monkeypatch, clock)

    async def starved_ticks() -> None:
        for counter in range(1, 200):
            await server.on_tick(counter)
            clock["monotonic"] += 3.5

    asyncio.run(starved_ticks())
    gaps = [later - earlier for earlier, later in itertools.pairwise(beats)]
    assert len(beats) >= 20
    assert max(gaps) <= 15 + 3.5 < 30


def test_a_single_stall_shorter_than_the_masters_timeout_leaves_the_heartbeat_fresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker's loop stalled once for 20 s (a paused VM, a frozen cgroup, a stalled disk)
    just before a beat was due: beating every `timeout_notify` (15) s as uvicorn does, its
    heartbeat was then 35 s old, past gunicorn's `timeout` of 30, and the master killed it as
    hung. Beating every second, it is about 21 s old."""
    import asyncio
    import itertools

    from app.server.worker import HEARTBEAT_SECONDS

    clock = {"monotonic": 1000.0}
    server, beats = _beating_server(monkeypatch, clock)

    async def ticks_then_a_stall() -> None:
        for counter in range(1, 150):  # 14.9 s of uvicorn's 0.1-s ticks
            await server.on_tick(counter)
            clock["monotonic"] += 0.1
        clock["monotonic"] += 20
        await server.on_tick(150)

    asyncio.run(ticks_then_a_stall())
    stalled = beats[-1] - beats[-2]
    assert stalled <= 20 + HEARTBEAT_SECONDS + 0.1 < 30
    gaps = [later - earlier for earlier, later in itertools.pairwise(beats[:-1])]
    assert len(gaps) >= 13
    assert max(gaps) <= HEARTBEAT_SECONDS + 0.1 + 1e-9


def test_a_reloads_old_worker_serves_until_the_handoff_then_drains_in_what_is_left(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """app.server.handoff: new workers that never listen hold the old one for half of uvicorn's
    graceful shutdown, listening and not draining; the drain then has the other half."""
    import asyncio
    import time

    import uvicorn

    from app.server import protocol
    from app.server.handoff import Handoff, advance
    from app.server.worker import Server
    from app.settings import Settings

    events: list[tuple[str, float]] = []

    class Grpc:
        async def stop_accepting(self) -> None:
            events.append(("stop accepting", time.monotonic()))

        async def stop(self, grace: float) -> None:
            events.append((f"stop within {grace}", time.monotonic()))

    async def uvicorn_shutdown(self: uvicorn.Server, sockets: object = None) -> None:
        events.append((f"uvicorn drains within {self.config.timeout_graceful_shutdown}", 0))

    monkeypatch.setattr(uvicorn.Server, "shutdown", uvicorn_shutdown)
    environ: dict[str, str] = {}
    handoff = Handoff(tmp_path, 0, 10)
    handoff.listening()
    advance(tmp_path, 2, environ)  # a reload: two new workers, which never listen
    config = uvicorn.Config(app=lambda: None, timeout_graceful_shutdown=4)
    server = Server(config, Settings.from_env({}), handoff)
    server.grpc = Grpc()
    started = time.monotonic()

    async def shutdown() -> None:
        stopping = asyncio.create_task(server.shutdown())
        await asyncio.sleep(1)
        assert not events  # still serving gRPC
        assert server.server_state not in protocol._DRAINING  # and HTTP as usual
        assert handoff.marker.exists()
        await stopping

    asyncio.run(shutdown())
    assert [name for name, _ in events] == [
        "stop accepting",
        "uvicorn drains within 2",
        "stop within 2",
    ]
    assert 2 <= events[0][1] - started < 2.5
    assert not handoff.marker.exists()


def _children(pid: int) -> set[int]:
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def _gone(pid: int, within: float) -> bool:
    import time

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_a_worker_stopped_under_load_keeps_its_last_counts(tmp_path: Path) -> None:
    """SIGTERM (a reload's or a scale-down's old worker) ends in the signal uvicorn raises
    again, before any atexit: the counts since the last once-a-second flush were lost (25,937
    answers, 21,756 counted, across one SIGTTOU under wrk)."""
    import signal

    import httpx2 as httpx

    from tests.test_server import predict_requests, scrape, spawn, stop, wait_until_ready

    server = spawn(tmp_path / "run", WORKERS="1")
    try:
        wait_until_ready(server, startups=1)
        (worker,) = _children(server.process.pid)
        body = {"flights": [{"OPERA": "Grupo LATAM", "TIPOVUELO": "N", "MES": 3}]}
        with httpx.Client(base_url=server.url, timeout=30) as http:
            sent = 0
            for _ in range(200):
                assert http.post("/predict", json=body).status_code == 200
                sent += 1
        import os

        os.kill(worker, signal.SIGTERM)  # within a second of the last answers
        assert _gone(worker, 25), server.log()
        wait_until_ready(server, startups=2)  # its replacement
        assert predict_requests(scrape(server.url)) == sent, server.log()
    finally:
        stop(server)


def test_a_reloads_old_worker_leaves_an_idle_keep_alive_connection_for_its_client(
    tmp_path: Path,
) -> None:
    """A pooled client's idle connection to a reload's old worker was closed about 1 s into its
    drain, racing the request the client sent on it then ("other side closed", a reset: 8 of
    4,800 POSTs of five clients sent in that window, in an audit). It is now
    left open (app.server.protocol.DRAIN_IDLE_HOLD): a request on it 2 s into the drain gets its
    answer, with `Connection: close`, and the old worker then leaves at once."""
    import signal
    import socket
    import time

    from tests.test_server import HOST, spawn, stop, wait_until_ready

    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    server = spawn(tmp_path / "run", WORKERS="1")
    try:
        wait_until_ready(server, startups=1)
        (old,) = _children(server.process.pid)
        with socket.create_connection((HOST, server.port), timeout=10) as pooled:
            pooled.sendall(request)
            assert pooled.recv(65536).startswith(b"HTTP/1.1 200 ")
            os.kill(server.process.pid, signal.SIGHUP)
            wait_until_ready(server, startups=2)  # the old worker drains from about now
            time.sleep(2.0)
            assert not _gone(old, 0)
            pooled.sendall(request)
            answer = pooled.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 "), answer
            assert b"connection: close" in answer.lower()
            assert pooled.recv(65536) == b""  # closed by the server after its answer
        assert _gone(old, 3), server.log()
        assert "graceful shutdown exceeded" not in server.log()
    finally:
        stop(server)


def test_sigquit_stops_a_worker_at_once_and_it_is_replaced(tmp_path: Path) -> None:
    """gunicorn's quick stop (SIGQUIT or SIGINT to the master sends workers SIGQUIT):
    uvicorn_worker's handler only set a flag nothing read, so the worker served on until the
    master's SIGKILL 20 s later ("Perhaps out of memory?")."""
    import signal

    from tests.test_server import spawn, stop, wait_until_ready

    server = spawn(tmp_path / "run", WORKERS="1")
    try:
        wait_until_ready(server, startups=1)
        (worker,) = _children(server.process.pid)
        os.kill(worker, signal.SIGQUIT)
        assert _gone(worker, 5), server.log()
        wait_until_ready(server, startups=2)  # its replacement
        assert "SIGKILL" not in server.log()
        assert "Traceback" not in server.log()
    finally:
        stop(server)


def test_workers_leave_when_their_master_is_killed(tmp_path: Path) -> None:
    """gunicorn's own workers stop when their master is gone; uvicorn_worker's served on as
    orphans holding the ports, so the next start could not bind them. A heartbeat (every
    second) notices."""
    import signal

    from tests.test_server import spawn, stop, wait_until_ready

    server = spawn(tmp_path / "run", WORKERS="2", GUNICORN_CMD_ARGS="--timeout 2")
    try:
        wait_until_ready(server)
        workers = _children(server.process.pid)
        assert len(workers) == 2
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
        assert all(_gone(worker, 20) for worker in workers), server.log()
        assert "is gone: shutting down" in server.log()
    finally:
        stop(server)


def test_a_worker_that_cannot_load_its_models_halts_the_master(tmp_path: Path) -> None:
    """uvicorn's exit on a failed start-up then hung in the interpreter's exit (onnxruntime's
    state, forked from the master that checked the models), and gunicorn never timed the worker
    out: the server stayed up, answering nothing. Now it leaves with gunicorn's boot-error code
    and the master halts ("Worker failed to boot"), for its supervisor to restart. (A snapshot
    removed is written back before the fork, app.server.reload.restore: a directory in the
    place of one of its files cannot be.)"""
    import signal

    from tests.test_server import spawn, stop, wait_until_ready

    server = spawn(tmp_path / "run", WORKERS="1")
    try:
        wait_until_ready(server, startups=1)
        (snapshot,) = server.workdir.glob("latam-delay-run-*/models/release-*")
        (snapshot / "delay-full.onnx").unlink()  # of the snapshot the next worker is to load
        (snapshot / "delay-full.onnx").mkdir()
        (worker,) = _children(server.process.pid)
        os.kill(worker, signal.SIGKILL)
        assert server.process.wait(timeout=30) != 0, server.log()
        assert "Worker failed to boot" in server.log()
        assert f"model snapshot {snapshot} not restored: IsADirectoryError" in server.log()
    finally:
        stop(server)


@pytest.mark.parametrize(
    ("app", "code", "reason"),
    [
        ("app.main:no_such_factory()", 4, "App failed to load"),
        ("app.no_such_module:create_app()", 3, "Worker failed to boot"),
    ],
)
def test_a_worker_whose_app_does_not_import_halts_the_master(
    tmp_path: Path, app: str, code: int, reason: str
) -> None:
    """Through gunicorn's sys.exit the worker hung in the interpreter's exit after "Worker
    exiting": the master never learnt, and the server stayed up, listening, answering nothing."""
    from tests.test_server import spawn, stop

    server = spawn(tmp_path / "run", app=app, WORKERS="1")
    try:
        assert server.process.wait(timeout=30) == code, server.log()
        assert reason in server.log()
        assert server.log().count("Booting worker") == 1
    finally:
        stop(server)


class _Left(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


@pytest.mark.parametrize(
    ("raised", "booted", "code"),
    [
        (SystemExit(0), False, 0),  # gunicorn's handle_exit: a SIGTERM while it boots
        (SystemExit(None), False, 0),
        (SystemExit(1), False, 1),  # handle_abort
        (SystemExit("odd"), False, 1),
        (RuntimeError("boom"), False, 3),  # Arbiter.WORKER_BOOT_ERROR
        (RuntimeError("boom"), True, -1),  # spawn_worker's code once booted
    ],
)
def test_a_worker_that_fails_before_it_serves_leaves_with_gunicorns_code(
    monkeypatch: pytest.MonkeyPatch, raised: BaseException, booted: bool, code: int
) -> None:
    import uvicorn_worker

    import app.server.worker

    def left(code: int) -> None:
        raise _Left(code)

    def fail(self: UvicornWorker) -> None:
        self.booted = booted
        raise raised

    worker = make_worker(monkeypatch)
    monkeypatch.setattr(worker, "notify", lambda: None)
    monkeypatch.setattr(uvicorn_worker.UvicornWorker, "init_process", fail)
    monkeypatch.setattr(app.server.worker, "leave", left)
    with pytest.raises(_Left) as leaving:
        worker.init_process()
    assert leaving.value.code == code

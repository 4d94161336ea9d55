"""The gunicorn worker class: uvicorn's, serving through `app.server.protocol`'s guarded protocol.

gunicorn.conf.py names it (`worker_class = "app.server.worker.UvicornWorker"`). Besides the protocol
it wires two things uvicorn_worker leaves out: uvicorn's own graceful-shutdown timeout, set
inside gunicorn's `graceful_timeout` so that a worker cancels what is left and exits cleanly
before the master's SIGKILL, and the `app` logger, sent to gunicorn's error log with the
request ID (app.observability.request_id) in every line. It also serves gRPC (app.grpc) on GRPC_BIND
from the same event loop: started once the app is ready, drained together with HTTP; and accepts
HTTP connections through app.server.acceptor. A reload's old worker hands the gRPC port over to the
new ones before it stops: app.server.handoff.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from gunicorn.arbiter import Arbiter
from gunicorn.errors import AppImportError
from uvicorn import Config
from uvicorn import Server as _Server
from uvicorn_worker import UvicornWorker as _UvicornWorker

from app.dataplane import DataPlane
from app.inference.microbatch import Scorer
from app.observability import logs
from app.observability.metrics import flush_or_log, sample_in_flight
from app.server import recycle
from app.server.acceptor import Acceptor
from app.server.handoff import RUN_DIR_ENV, Handoff
from app.server.protocol import DRAIN_LINGER, Limits, begin_drain, guarded_protocol, in_flight
from app.settings import Settings

SHUTDOWN_MARGIN = 2
"""Seconds between uvicorn's own shutdown deadline and gunicorn's SIGKILL."""
DRAIN_HOLD_MARGIN = 1
"""Seconds between the last close of an idle connection held open by the drain
(app.server.protocol.DRAIN_IDLE_HOLD) and uvicorn's own shutdown deadline."""
HEARTBEAT_SECONDS = 1.0
"""Seconds between a worker's heartbeats (Server.on_tick)."""
logger = logging.getLogger("app")


class Server(_Server):
    """uvicorn's server, which also serves gRPC once the app has started (so a worker binds
    the gRPC port only when its models are ready) and stops it while HTTP drains; a stopping
    worker (a reload's old one once the new ones listen) takes no new connection of either kind."""

    def __init__(self, config: Config, settings: Settings, handoff: Handoff | None = None) -> None:
        super().__init__(config)
        self.settings = settings
        self.handoff = handoff
        self.grpc: Any = None
        self.grpc_failed = False
        self.quick = False
        self.last_notified = math.inf  # uvicorn's own heartbeat (wall clock) never fires: on_tick
        self.beaten = -math.inf
        """time.monotonic() of the last heartbeat: the first tick beats, as uvicorn's did."""

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's, with the heartbeat (`callback_notify`, gunicorn's notify) every
        HEARTBEAT_SECONDS of the monotonic clock, on which gunicorn's master judges it (at most
        every `timeout_notify` s). uvicorn beats every `timeout_notify` (15) s: a single tick
        late by more than that (a paused VM, a frozen cgroup, a stalled disk) left the heartbeat
        past gunicorn's `timeout` of 30 s, and the master killed a worker that had stalled half
        that long; a beat a second, as gunicorn's own gthread workers beat, leaves it `timeout`
        less a second (a syscall a second, `os.utime`). uvicorn
        beats when time.time() has moved that far past its last beat: a wall clock stepped back
        (an NTP step, a VM's clock corrected) stopped every worker's heartbeat for the length
        of the step, and the master killed them all as hung 30 s later, their requests with
        them (`WORKER TIMEOUT` twice at once after a 1-hour step back). Looked at every tick
        (0.1 s), not every tenth as uvicorn does: a worker starved of CPU (a node's cores
        overcommitted) runs each tick late, and ten ticks 3 s late each are past gunicorn's
        `timeout` of 30 s, so the master killed a worker that was serving as hung, with its
        requests in flight (reports/reliability.md, section 25)."""
        notify = self.config.callback_notify
        if notify is not None:
            now = time.monotonic()
            if now - self.beaten >= min(HEARTBEAT_SECONDS, self.config.timeout_notify):
                self.beaten = now
                await notify()
        return await super().on_tick(counter)

    async def _start(self, sockets: list[socket.socket] | None) -> None:
        # gunicorn's sockets are served by app.server.acceptor's acceptors, not by uvloop's servers
        # (which accept one connection per event-loop turn): uvicorn starts with none of them
        await super().startup(None if sockets is None else [])
        if sockets:
            config, state = self.config, self.server_state

            def protocol() -> asyncio.Protocol:
                app_state = self.lifespan.state
                return config.http_protocol_class(  # type: ignore[call-arg]
                    config=config, server_state=state, app_state=app_state
                )

            loop = asyncio.get_running_loop()
            share = 2 * self.settings.workers
            acceptors = [Acceptor(loop, listener, protocol, share) for listener in sockets]
            self.servers.extend(acceptors)  # type: ignore[arg-type]  # closed by uvicorn's shutdown
        requests_in_flight = in_flight(self.server_state)
        sample_in_flight("rest", requests_in_flight)  # the metric requests_in_flight
        # a /predict request alone in this worker is scored at once, not merged
        # (app.inference.microbatch)
        scorer: Scorer | None = getattr(getattr(self.config.app, "state", None), "scorer", None)
        if scorer is not None:
            scorer.in_flight = requests_in_flight
        bind = self.settings.grpc_bind
        # the service's app has a data plane; an app without one (a benchmark's) serves no gRPC
        dataplane: DataPlane | None = getattr(
            getattr(self.config.app, "state", None), "dataplane", None
        )
        if self.should_exit or not bind or dataplane is None:
            return
        from app.grpc.server import start  # only where gRPC is served: see app/grpc/__init__.py

        try:
            self.grpc = await start(self.settings, dataplane)
        except RuntimeError as error:
            logger.error("cannot serve gRPC on %s: %s", bind, error)
            self.grpc_failed = self.should_exit = True
            return
        logger.info("gRPC serving on %s", bind)
        if self.handoff is not None:
            self.handoff.listening()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await self._start(sockets)
        except SystemExit:  # uvicorn's, when the app's startup (its models' load) failed
            leave(Arbiter.WORKER_BOOT_ERROR)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self._stop(sockets)
        # The last second's counts: a worker stopped by SIGTERM dies by the signal uvicorn
        # raises again once it has stopped, before any atexit (app.observability.metrics) runs.
        flush_or_log()

    def quit(self) -> None:
        """gunicorn's SIGQUIT (a quick stop: SIGINT or SIGQUIT to the master): stop without
        waiting for a reload's hand-over, and give what is in flight 1 s."""
        self.quick = self.should_exit = True
        self.config.timeout_graceful_shutdown = 1

    async def _stop(self, sockets: list[socket.socket] | None) -> None:
        if self.grpc is not None and self.handoff is not None and not self.quick:
            # a reload's old worker serves as usual until the new workers listen, for at most
            # half of uvicorn's graceful shutdown; the drain then has what is left
            grace = self.config.timeout_graceful_shutdown or 0
            waited = await self.handoff.handed_over(grace / 2)
            self.config.timeout_graceful_shutdown = max(1, round(grace - waited))
        # before uvicorn closes the listener; a quick stop neither lingers nor holds idle
        # connections open (app.server.protocol); a plain one holds them until a second before
        # uvicorn's deadline at most, which would log an error and cancel
        if self.quick:
            begin_drain(self.server_state)
        else:
            grace = self.config.timeout_graceful_shutdown or 0
            begin_drain(self.server_state, DRAIN_LINGER, max(0, grace - DRAIN_HOLD_MARGIN))
        if self.grpc is not None:  # new gRPC connections go to the other workers from now on
            await self.grpc.stop_accepting()
            if self.handoff is not None:
                self.handoff.leaving()
        draining = [super().shutdown(sockets)]  # uvicorn stops accepting HTTP first thing
        if self.grpc is not None:
            draining.append(self.grpc.stop(self.config.timeout_graceful_shutdown or 0))
        await asyncio.gather(*draining)


class UvicornWorker(_UvicornWorker):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings = Settings.from_env()
        self.config.http = guarded_protocol(
            Limits(
                settings.max_head_bytes,
                settings.head_timeout,
                settings.body_timeout,
                settings.max_in_flight,
                settings.hold_early_retries,
                settings.crowded_connections,
                settings.crowded_in_flight,
                settings.crowded_window,
                max_connections=settings.max_connections,
            ),
            log_shed=settings.access_log is not None,
        )
        self.config.timeout_graceful_shutdown = max(1, self.cfg.graceful_timeout - SHUTDOWN_MARGIN)
        self.config.server_header = False  # no `server: uvicorn`: nothing to fingerprint
        # No WebSocket route exists: with a WebSocket library installed (uvicorn[standard] brings
        # one), uvicorn's "auto" would hand handshakes to its own protocol, past every check of
        # app.server.protocol (head limit, Host, version, shedding).
        self.config.ws = "none"
        formatter = logs.formatter(settings.log_format)  # text or JSON lines (LOG_FORMAT)
        for handler in self.log.error_log.handlers + self.log.access_log.handlers:
            handler.setFormatter(formatter)
        # app.observability.logs.AccessLogMiddleware's line replaces uvicorn's
        if settings.access_log:
            logging.getLogger("uvicorn.access").handlers = []  # uvicorn logs when it has any
        logs.route_app_lines(
            self.log.error_log.handlers,
            self.log.error_log.level,
            self.log.access_log.handlers if settings.access_log else None,
        )

    def init_process(self) -> None:
        """gunicorn's, after a first heartbeat: gunicorn 27 times a worker out from its
        heartbeat file's mtime in monotonic seconds, which the file only holds once the worker
        has beaten; before that its creation time (wall-clock, far ahead) kept a worker hung
        while starting from ever being timed out.

        A worker that fails before it serves (an app path that does not import, a signal while
        it boots) leaves as gunicorn's spawn_worker would have it leave, with the code that
        halts the master, but without the interpreter's exit, which hangs here (see `_serve`):
        through spawn_worker's sys.exit the worker hung after "Worker exiting", the server up,
        listening, answering nothing."""
        self.notify()
        try:
            super().init_process()
        except SystemExit as exit_:
            leave(exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1)
        except AppImportError as error:
            self.log.error("%s", error)
            leave(Arbiter.APP_LOAD_ERROR)
        except Exception:
            self.log.exception("Exception in worker process")
            leave(-1 if self.booted else Arbiter.WORKER_BOOT_ERROR)

    async def _serve(self) -> None:
        """uvicorn_worker's, with the Server above, a SIGQUIT that stops it (uvicorn_worker's
        handler only sets `alive`, which nothing reads), and a check that the master lives."""
        self.config.app = self.wsgi
        self.server = server = Server(self.config, self.settings, Handoff.from_env())
        asyncio.get_running_loop().add_signal_handler(signal.SIGQUIT, server.quit)
        await server.serve(sockets=self.sockets)
        cap = self.config.limit_max_requests  # gunicorn's --max-requests
        if cap is not None and server.server_state.total_requests >= cap:
            self._mark_recycled()
        # Once stopped (its metrics flushed), a worker leaves without the interpreter's exit:
        # grpcio's threads, or onnxruntime's state forked from the master, kept that from
        # finishing (a worker hung after "Worker exiting", never replaced). One that did not
        # start leaves with the code that makes gunicorn halt.
        leave(0 if server.started and not server.grpc_failed else Arbiter.WORKER_BOOT_ERROR)

    def _mark_recycled(self) -> None:
        """Tells the master this worker left at its request cap, not lost (app.server.recycle)."""
        run_dir = os.environ.get(RUN_DIR_ENV)
        if run_dir:
            try:
                recycle.mark(Path(run_dir))
            except OSError as error:
                logger.warning("recycled worker not marked (counted as lost): %r", error)

    async def callback_notify(self) -> None:
        """The heartbeat, every HEARTBEAT_SECONDS (Server.on_tick). gunicorn's own workers stop
        when their master is gone (killed: SIGKILL, OOM); uvicorn_worker's kept serving, orphans
        holding the ports, so the next start could not bind them."""
        self.notify()
        if os.getppid() != self.ppid and not self.server.should_exit:
            logger.warning("master %s is gone: shutting down", self.ppid)
            self.server.should_exit = True


def leave(code: int) -> NoReturn:
    """Exits now, the logs written: see UvicornWorker._serve."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

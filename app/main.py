"""The app factory: `gunicorn 'app.main:create_app()'`; tests build their own with settings."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.types import ASGIApp

from app.dataplane import DataPlane
from app.inference.microbatch import Scorer
from app.inference.model import ModelSet
from app.observability import metrics_port, tracing
from app.observability.drift_metrics import DriftMonitor
from app.observability.logs import AccessLogMiddleware
from app.observability.metrics import MetricsMiddleware, count_predictions, expect_models
from app.observability.request_id import RequestIdMiddleware
from app.rest.http import EXCEPTION_HANDLERS
from app.rest.routes import ROUTES, PredictFirst
from app.server.overload import BatchThread, on_event_loop
from app.settings import Settings

logger = logging.getLogger("app")


class AttributeState(State):
    """Starlette's `app.state`, each value also a plain attribute: Starlette's finds a value by a
    failed attribute lookup and then `__getattr__`, and `/predict` reads five of them a request
    (15-20 % of its in-process time; docs/performance.md)."""

    def __setattr__(self, key: Any, value: Any) -> None:
        super().__setattr__(key, value)
        object.__setattr__(self, key, value)

    def __delattr__(self, key: Any) -> None:
        super().__delattr__(key)
        object.__delattr__(self, key)


class Service(Starlette):
    """Starlette with the request-ID and metrics middleware outside its error middleware, which
    user middleware cannot reach: so that a 500 carries `X-Request-ID`, its log line the ID, and
    is counted in the metrics like any other answer. Around them, when configured: the access
    log, OpenTelemetry, and the metrics port. Inside them, `POST /predict` skips Starlette's
    layers (app.rest.routes.PredictFirst)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state = AttributeState()

    def build_middleware_stack(self) -> ASGIApp:
        settings: Settings = getattr(self.state, "settings", None) or Settings()
        app: ASGIApp = MetricsMiddleware(PredictFirst(super().build_middleware_stack()))
        # The optional layers are in the stack only when on: off, they cost nothing.
        if settings.access_log:
            app = AccessLogMiddleware(app)
        app = RequestIdMiddleware(app)
        if settings.otel_endpoint:
            app = tracing.traced(app)
        if settings.metrics_port is not None:
            app = metrics_port.MetricsPortMiddleware(app, settings.metrics_port)
        return app


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Loaded in each worker after the fork: onnxruntime sessions are not fork-safe. The
        # directory is resolved once, so a symlink swapped meanwhile cannot mix two releases.
        stop_tracing = tracing.start() if settings.otel_endpoint else None
        models = ModelSet.load(
            settings.models_dir.resolve(),
            settings.ort_threads,
            count_predictions,
            settings.tabulate_minimal,
        )
        served = list(models.by_name.values())
        monitor = DriftMonitor(served, settings.drift_window) if settings.drift else None
        if monitor is not None and monitor.watching:
            models.observe = monitor.after(count_predictions)
        else:
            monitor = None  # no card has a profile: no drift gauges, nothing on the hot path
        expect_models(served, monitor)
        # Batches scored in the batch thread tell their observers on the event loop, like every
        # other request: the tallies and drift windows are never touched by two threads.
        models.observe = on_event_loop(models.observe, asyncio.get_running_loop())
        app.state.validator = models.validator(settings.max_flights)
        app.state.models = models
        logger.info(
            "models ready: %s",
            ", ".join(f"{name} {model.version}" for name, model in models.by_name.items()),
        )
        # Start-up's objects (modules, models, the table) out of every later collection: the
        # full collections that requests' surviving objects trigger walk only theirs (a merge's
        # waiting requests made them 25-45 ms each: app.inference.microbatch).
        gc.collect()
        gc.freeze()
        yield
        gc.unfreeze()
        if stop_tracing is not None:
            stop_tracing()  # exports the last spans

    app = Service(
        routes=[
            route
            for route in ROUTES  # /metrics on its own port only, when METRICS_BIND is set
            if not (settings.metrics_bind and getattr(route, "path", None) == metrics_port.PATH)
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    # A path with a slash too many is a 404 naming it, not Starlette's bodiless 307 to a URL
    # built from the client's Host header, which no document lists and httpx does not follow.
    app.router.redirect_slashes = False
    app.state.settings = settings
    app.state.dataplane = DataPlane(app.state)
    app.state.batches = BatchThread(settings.offload_flights, settings.offload_bytes)
    app.state.scorer = Scorer(app.state.batches, settings.microbatch)
    return app

"""The app factory: `gunicorn 'app.main:create_app()'`; tests build their own with settings."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.types import ASGIApp

from app.dataplane import DataPlane
from app.flights import FlightValidator
from app.http import EXCEPTION_HANDLERS
from app.metrics import MetricsMiddleware, count_predictions
from app.model import ModelSet
from app.request_id import RequestIdMiddleware
from app.routes import ROUTES
from app.settings import Settings

logger = logging.getLogger("app")


class Service(Starlette):
    """Starlette with the request-ID and metrics middleware outside its error middleware, which
    user middleware cannot reach: so that a 500 carries `X-Request-ID`, its log line the ID, and
    is counted in the metrics like any other answer."""

    def build_middleware_stack(self) -> ASGIApp:
        return RequestIdMiddleware(MetricsMiddleware(super().build_middleware_stack()))


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Loaded in each worker after the fork: onnxruntime sessions are not fork-safe. The
        # directory is resolved once, so a symlink swapped meanwhile cannot mix two releases.
        models = ModelSet.load(
            settings.models_dir.resolve(),
            settings.ort_threads,
            count_predictions,
            settings.tabulate_minimal,
        )
        app.state.validator = FlightValidator(models.operators, settings.max_flights)
        app.state.models = models
        logger.info(
            "models ready: %s",
            ", ".join(f"{name} {model.version}" for name, model in models.by_name.items()),
        )
        yield

    app = Service(
        routes=ROUTES,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.dataplane = DataPlane(app.state)
    return app

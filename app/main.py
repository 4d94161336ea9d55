"""The app factory: `gunicorn 'app.main:create_app()'`; tests build their own with settings."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware

from app.flights import FlightValidator
from app.http import EXCEPTION_HANDLERS
from app.metrics import MetricsMiddleware, count_predictions
from app.model import ModelSet
from app.routes import ROUTES
from app.settings import Settings

logger = logging.getLogger("app")


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Loaded in each worker after the fork: onnxruntime sessions are not fork-safe.
        models = ModelSet.load(
            settings.models_dir, settings.ort_threads, count_predictions, settings.tabulate_minimal
        )
        app.state.validator = FlightValidator(models.operators, settings.max_flights)
        app.state.models = models
        logger.info(
            "models ready: %s",
            ", ".join(f"{name} {model.version}" for name, model in models.by_name.items()),
        )
        yield

    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(MetricsMiddleware)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app

"""OpenTelemetry tracing, optional: on only when OTEL_EXPORTER_OTLP_ENDPOINT is set, with the
`otel` extra installed (`pip install '.[otel]'`). Off, nothing of it is imported and nothing is
added to the request path.

On, every HTTP request is a server span (opentelemetry-instrumentation-asgi, which also
continues the caller's `traceparent`), exported over OTLP/HTTP in batches by a thread that each
worker starts after the fork (`start`, from the app's lifespan); the request's log lines carry
the span's trace ID, so a trace leads to its logs even when the caller sent no traceparent. The
exporter reads the standard OTEL_* variables (endpoint, headers, OTEL_SERVICE_NAME, ...).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.request_id import TRACE_ID

SERVICE_NAME = "latam-delay"
NOT_TRACED = "/metrics,/health,/v2/health/live,/v2/health/ready"
"""Probes and scrapes, every few seconds from every pod: spans of no interest."""


def traced(app: ASGIApp) -> ASGIApp:
    """The app inside OpenTelemetry's ASGI middleware (app.settings has checked that the extra
    is installed)."""
    from opentelemetry import trace
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    async def asgi3(scope: Scope, receive: Receive, send: Send) -> None:
        # asgiref takes a callable whose __call__ is not a coroutine function, as the request-ID
        # middleware's, for an ASGI 2 app: this one is plainly ASGI 3.
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        span = trace.get_current_span()  # the server span, which ends with the answer
        context = span.get_span_context()
        if context.is_valid:  # log lines carry the span's trace ID, the caller's or a new one
            TRACE_ID.set(b"%032x" % context.trace_id)

        async def send_naming_the_span(message: Message) -> None:
            route = getattr(scope.get("route"), "path", None)
            if message["type"] == "http.response.start" and isinstance(route, str):
                span.set_attribute("http.route", route)  # the template Starlette matched
                span.update_name(f"{scope['method']} {route}")
            await send(message)

        await app(scope, receive, send_naming_the_span)

    # One server span a request: a span for each ASGI receive and send would triple the cost.
    return OpenTelemetryMiddleware(
        asgi3, excluded_urls=NOT_TRACED, exclude_spans=["receive", "send"]
    )


def start() -> Callable[[], None]:
    """This worker's tracer provider and exporter thread; returns what flushes and stops them."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": SERVICE_NAME}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider.shutdown

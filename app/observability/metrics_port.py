"""/metrics on a port of its own (METRICS_BIND): gunicorn listens on both addresses
(gunicorn.conf.py) and every worker serves both; a request is told apart by the port it came
in on. On that port only `GET /metrics` answers; on the public port /metrics is then a 404,
so that it can stay inside the pod (or the cluster) while the API is exposed.
"""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.types import ASGIApp, Receive, Scope, Send

from app.observability.metrics import exposition
from app.rest.http import send_json

PATH = "/metrics"


class MetricsPortMiddleware:
    """Outermost: a request that came in on the metrics port never reaches the API."""

    def __init__(self, app: ASGIApp, port: int) -> None:
        self.app = app
        self.port = port

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "http":
            server = scope.get("server")
            if server is not None and server[1] == self.port:
                return _metrics_only(scope, send)
        return self.app(scope, receive, send)


async def _metrics_only(scope: Scope, send: Send) -> None:
    if scope["path"] != PATH:
        await send_json(send, {"error": f"only {PATH} is served on this port"}, 404)
    elif scope["method"] not in ("GET", "HEAD"):
        await send_json(send, {"error": f"{scope['method']} is not allowed on {PATH}"}, 405)
    else:
        content, content_type = exposition()
        headers = [
            (b"content-type", content_type.encode("latin-1")),
            (b"content-length", b"%d" % len(content)),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})

"""uvicorn worker variants for `make compare`: gunicorn's -k overrides gunicorn.conf.py's class."""

from __future__ import annotations

from typing import Any, ClassVar

from app.server.worker import UvicornWorker


class PurePythonWorker(UvicornWorker):
    """The service's worker on asyncio's own event loop and the pure-Python h11 parser: uvicorn
    without its extras. (app.server.protocol's guards extend the httptools protocol, so they are off
    here; they cost about 0.5 us a request, reports/reliability.md.)"""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {"loop": "asyncio", "http": "h11"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.http = "h11"

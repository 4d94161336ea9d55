"""uvicorn worker variants for `make compare`: gunicorn's -k overrides gunicorn.conf.py's class."""

from __future__ import annotations

from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker


class PurePythonWorker(UvicornWorker):  # type: ignore[misc]
    """asyncio's own event loop and the pure-Python h11 parser: uvicorn without its extras."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {"loop": "asyncio", "http": "h11"}

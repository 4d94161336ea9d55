"""The gunicorn worker class: uvicorn's, serving through `app.protocol`'s guarded protocol.

gunicorn.conf.py names it (`worker_class = "app.worker.UvicornWorker"`). Besides the protocol
it wires two things uvicorn_worker leaves out: uvicorn's own graceful-shutdown timeout, set
inside gunicorn's `graceful_timeout` so that a worker cancels what is left and exits cleanly
before the master's SIGKILL, and the `app` logger, sent to gunicorn's error log with the
request ID (app.request_id) in every line.
"""

from __future__ import annotations

import logging
from typing import Any

from uvicorn_worker import UvicornWorker as _UvicornWorker

from app.protocol import Limits, guarded_protocol
from app.request_id import RequestIdFormatter, install_log_context
from app.settings import Settings

LOG_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] [%(request_id)s] %(message)s"
LOG_DATE_FORMAT = "[%Y-%m-%d %H:%M:%S %z]"
SHUTDOWN_MARGIN = 2
"""Seconds between uvicorn's own shutdown deadline and gunicorn's SIGKILL."""


class UvicornWorker(_UvicornWorker):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = Settings.from_env()
        self.config.http = guarded_protocol(
            Limits(settings.max_head_bytes, settings.head_timeout, settings.body_timeout)
        )
        self.config.timeout_graceful_shutdown = max(1, self.cfg.graceful_timeout - SHUTDOWN_MARGIN)
        self.config.server_header = False  # no `server: uvicorn`: nothing to fingerprint
        install_log_context()
        formatter = RequestIdFormatter(LOG_FORMAT, LOG_DATE_FORMAT)
        for handler in self.log.error_log.handlers:
            handler.setFormatter(formatter)
        app_logger = logging.getLogger("app")
        app_logger.handlers = self.log.error_log.handlers
        app_logger.setLevel(self.log.error_log.level)
        app_logger.propagate = False

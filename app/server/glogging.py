"""The gunicorn master's logger: its own lines (start-up, reload, worker exits) in the format of
every other line. Apart from app.observability.logs, which every deployment of the app imports,
because it imports gunicorn: the Lambda bundle (deploy/aws/build.sh) leaves the HTTP server out,
and with this class in that module its every cold start failed on `import gunicorn`."""

from __future__ import annotations

import io
import os
import sys
from typing import Any

from gunicorn.glogging import Logger

from app.observability.logs import JsonFormatter


class GunicornLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger with JSON lines in the master too, when LOG_FORMAT=json (gunicorn
    calls `setup` again on SIGHUP, so the format survives a reload)."""

    def setup(self, cfg: Any) -> None:
        # stdout (the access lines) writes a character its encoding lacks as a backslash escape,
        # as Python's stderr does: under a non-UTF-8 locale (latin-1, C without UTF-8 mode,
        # PYTHONIOENCODING=ascii) such a line was lost, a traceback on stderr in its place, for
        # any path of over LOGGED_PATH_CHARS (app.errors.loggable marks the cut with `…`)
        if isinstance(sys.stdout, io.TextIOWrapper):
            sys.stdout.reconfigure(errors="backslashreplace")
        super().setup(cfg)
        if os.environ.get("LOG_FORMAT", "").strip().lower() == "json":
            for log in (self.error_log, self.access_log):
                for handler in log.handlers:
                    handler.setFormatter(JsonFormatter())

"""gunicorn settings for the service: `gunicorn -c gunicorn.conf.py 'app.main:create_app()'`.

BIND and WORKERS come from the environment (defaults 0.0.0.0:8000, one worker per CPU).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Any

bind = [os.environ.get("BIND", "0.0.0.0:8000")]
workers = int(os.environ.get("WORKERS") or os.cpu_count() or 1)
worker_class = "uvicorn_worker.UvicornWorker"
keepalive = 75  # longer than the usual load balancer idle timeout (60 s): no reset races
graceful_timeout = 20
timeout = 30
backlog = 2048
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
accesslog = (
    os.environ.get("ACCESS_LOG") or None
)  # off by default: one log line costs more than a prediction
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
proc_name = "latam-delay"
control_socket_disable = (
    True  # gunicornc is not used; the shared default socket clashes between instances
)

# One prometheus directory per server run, made before any worker imports prometheus_client.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="latam-delay-metrics-")
    _own_metrics_dir = True
else:
    _own_metrics_dir = False


def on_starting(server: Any) -> None:
    """Checks the models once in the master: a missing or corrupt file stops start-up here
    with one line naming it, instead of every worker failing to boot in turn."""
    from app.errors import ModelLoadError
    from app.model import ModelSet
    from app.settings import Settings

    try:
        settings = Settings.from_env()
        ModelSet.load(settings.models_dir, settings.ort_threads)
    except (ModelLoadError, ValueError) as error:
        print(f"latam-delay: cannot start: {error}", file=sys.stderr, flush=True)
        on_exit(server)  # sys.exit here skips gunicorn's own on_exit call
        sys.exit(1)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)

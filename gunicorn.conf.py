"""gunicorn settings for the service: `gunicorn -c gunicorn.conf.py 'app.main:create_app()'`.

BIND and WORKERS come from the environment (defaults 0.0.0.0:8000, one worker per CPU).
SIGHUP reloads the models from MODELS_DIR, refusing (and keeping the old ones) when they do not
load: see app/reload.py. gunicorn executes this file again on every SIGHUP.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

bind = [os.environ.get("BIND", "0.0.0.0:8000")]
workers = int(os.environ.get("WORKERS") or os.cpu_count() or 1)
# uvicorn's worker with app.protocol's limits: head size, read timeouts, graceful drain. Under a
# uvicorn worker, uvicorn parses HTTP, so gunicorn's limit_request_line, limit_request_fields and
# limit_request_field_size have no effect: MAX_HEAD_BYTES (app.settings) is the limit.
worker_class = "app.worker.UvicornWorker"
keepalive = 75  # longer than the usual load balancer idle timeout (60 s): no reset races
graceful_timeout = 20
timeout = 30
backlog = 2048
accesslog = (
    os.environ.get("ACCESS_LOG") or None
)  # off by default: one log line costs more than a prediction
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
proc_name = "latam-delay"
control_socket_disable = (
    True  # gunicornc is not used; the shared default socket clashes between instances
)

# One prometheus directory and one model-snapshot directory per server run, made before any
# worker imports prometheus_client. RUN_DIR_ENV marks them as this run's own, so that the second
# execution of this file on SIGHUP does not mistake them for a directory given from outside.
_RUN_DIR_ENV = "LATAM_DELAY_RUN_DIR"
if not os.environ.get(_RUN_DIR_ENV):
    os.environ[_RUN_DIR_ENV] = tempfile.mkdtemp(prefix="latam-delay-run-")
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="latam-delay-metrics-")
        os.environ["LATAM_DELAY_OWN_METRICS_DIR"] = os.environ["PROMETHEUS_MULTIPROC_DIR"]
_RUN_DIR = Path(os.environ[_RUN_DIR_ENV])


def on_starting(server: Any) -> None:
    """Checks the models once in the master and pins the workers to that checked copy
    (app.reload): a missing or corrupt file stops start-up here with one line naming it,
    instead of every worker failing to boot in turn."""
    from app.errors import ModelLoadError
    from app.reload import pin, take_snapshot
    from app.settings import Settings

    try:
        settings = Settings.from_env()
        release = take_snapshot(settings.models_dir, _RUN_DIR / "models", settings.ort_threads)
    except (ModelLoadError, ValueError) as error:
        print(f"latam-delay: cannot start: {error}", file=sys.stderr, flush=True)
        on_exit(server)  # sys.exit here skips gunicorn's own on_exit call
        sys.exit(1)
    pin(release)
    server.log.info("models checked: %s", release.describe())


def on_reload(server: Any) -> None:
    """SIGHUP: the new workers get MODELS_DIR's models if they load, else the old ones."""
    from app.reload import reload_models
    from app.settings import Settings

    reload_models(
        _RUN_DIR / "models", Settings.from_env().ort_threads, server.log.info, server.log.error
    )


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    shutil.rmtree(_RUN_DIR, ignore_errors=True)
    own_metrics = os.environ.get("LATAM_DELAY_OWN_METRICS_DIR")
    if own_metrics:
        shutil.rmtree(own_metrics, ignore_errors=True)

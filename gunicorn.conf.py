"""gunicorn settings for the service: `gunicorn -c gunicorn.conf.py 'app.main:create_app()'`.

BIND, WORKERS and the rest come from the environment through app.settings (WORKERS defaults
to the CPUs this process may use: app.cpus); a bad value stops start-up with one line naming
it. SIGHUP reloads the models from MODELS_DIR, refusing (and keeping the old ones) when they do
not load: see app/server/reload.py. gunicorn executes this file again on every SIGHUP.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any, NoReturn

from app import cpus
from app.descriptors import raise_limit, require_worker_descriptors
from app.server.handoff import RUN_DIR_ENV
from app.server.reload import forget_inherited_run
from app.server.run_dirs import (
    OWN_METRICS_ENV,
    clean_metrics_dir,
    clean_stale_runs,
    held_by_another,
    hold,
    leave_metrics_dir,
    mark_master,
    release,
    run_dir,
    shared_metrics_dir,
    upgraded_from,
)
from app.settings import Settings, max_workers


def _cannot_start(error: Exception, log_format: str = "text") -> NoReturn:
    """Stops start-up with one line on stderr: with LOG_FORMAT=json a JSON object like every
    other line of the master's (a bad setting, LOG_FORMAT itself included, is said before the
    format is known: in text)."""
    line = f"latam-delay: cannot start: {error}"
    if log_format == "json":
        import logging

        # imported here, never above: it imports prometheus_client, whose workers' values must
        # see the PROMETHEUS_MULTIPROC_DIR set below (prometheus_client reads it on import)
        from app.observability.logs import JsonFormatter

        record = logging.LogRecord("gunicorn.error", logging.ERROR, __file__, 0, line, None, None)
        line = JsonFormatter().format(record)
    print(line, file=sys.stderr, flush=True)
    sys.exit(1)


# A master re-executed by SIGUSR2 makes its own run from the operator's MODELS_DIR, and shares the
# old master's metrics directory (app.server.run_dirs).
_PREDECESSOR = upgraded_from()
_UPGRADED = forget_inherited_run() or _PREDECESSOR is not None
raise_limit()  # before the settings: GRPC_MAX_CONNECTIONS is bounded by it (app.descriptors)
try:
    _SETTINGS = Settings.from_env()
except ValueError as _error:
    _cannot_start(_error)
bind = [_SETTINGS.bind]
if _SETTINGS.metrics_bind:  # /metrics only, on its own port (app.observability.metrics_port)
    bind.append(_SETTINGS.metrics_bind)
workers = _SETTINGS.workers
# uvicorn's worker with app.server.protocol's limits: head size, read timeouts, graceful drain.
# Under a uvicorn worker, uvicorn parses HTTP, so gunicorn's limit_request_line,
# limit_request_fields and limit_request_field_size have no effect: MAX_HEAD_BYTES (app.settings) is
# the limit.
worker_class = "app.server.worker.UvicornWorker"
keepalive = 75  # longer than the usual load balancer idle timeout (60 s): no reset races
graceful_timeout = 20
timeout = 30
backlog = 2048
accesslog = _SETTINGS.access_log  # off by default: one log line costs more than a prediction
errorlog = "-"
# JSON lines in the master too, with LOG_FORMAT=json
logger_class = "app.server.glogging.GunicornLogger"
loglevel = _SETTINGS.log_level
proc_name = "latam-delay"
# gunicorn's heartbeat files (its default: TMPDIR), made by the master before each fork, in memory
# where /dev/shm is writable: under a TMPDIR turned read-only, no worker could be started.
worker_tmp_dir = "/dev/shm" if os.access("/dev/shm", os.W_OK | os.X_OK) else None
control_socket_disable = (
    True  # gunicornc is not used; the shared default socket clashes between instances
)

# One prometheus directory and one model-snapshot directory per server run, made before any
# worker imports prometheus_client, named after the master's pid so that the next start removes
# them if this master is killed before its on_exit. RUN_DIR_ENV marks them as this run's own, so
# that the second execution of this file on SIGHUP does not mistake them for a directory given
# from outside. A master started by SIGUSR2 writes its metrics in the old master's directory:
# both generations' workers answer the metrics port, and every scrape must read the same sums.
# The master holds every directory its workers read or write (run_dirs.hold: a /tmp cleaner
# skips them), the one given from outside or shared with an old master included.
if not os.environ.get(RUN_DIR_ENV):  # at start, not on SIGHUP's execution of this file
    # Under it every worker crashed at boot, forked again at once; on SIGHUP app.server.forks
    # says it once, serving on.
    try:
        require_worker_descriptors()
    except OSError as _error:
        _cannot_start(_error, _SETTINGS.log_format)
    # One given from outside is this run's too: a killed run's files would count its workers and
    # carry its counters on. Not in a master started by SIGUSR2: the old one's workers write there.
    # Nor where another server runs (it holds the directory): its live files would be wiped, and
    # then both servers' workers summed on both /metrics. Checked first: a refusal makes nothing.
    _given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if _given and not _UPGRADED:
        if held_by_another(Path(_given)):
            _cannot_start(
                RuntimeError(
                    f"PROMETHEUS_MULTIPROC_DIR={_given!r}: another running server writes its "
                    "metrics there; give each server a directory of its own"
                ),
                _SETTINGS.log_format,
            )
        try:
            clean_metrics_dir(Path(_given))
        except OSError as _error:
            _cannot_start(
                OSError(f"PROMETHEUS_MULTIPROC_DIR={_given!r}: expected a directory: {_error}"),
                _SETTINGS.log_format,
            )
    try:
        clean_stale_runs()
        os.environ[RUN_DIR_ENV] = str(run_dir("run"))
        if not _given:
            _shared = shared_metrics_dir(_PREDECESSOR) if _PREDECESSOR is not None else None
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_shared or run_dir("metrics"))
            os.environ[OWN_METRICS_ENV] = os.environ["PROMETHEUS_MULTIPROC_DIR"]
            mark_master(Path(os.environ[OWN_METRICS_ENV]))
    except OSError as _error:  # a read-only root without a writable /tmp, say
        _cannot_start(
            OSError(f"no writable temporary directory (set TMPDIR): {_error}"),
            _SETTINGS.log_format,
        )
    hold(Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
_RUN_DIR = Path(os.environ[RUN_DIR_ENV])


def on_starting(server: Any) -> None:
    """Checks the models once in the master and pins the workers to that checked copy
    (app.server.reload): a missing, unreadable or corrupt file stops start-up here with one line
    naming it, instead of every worker failing to boot in turn. A fork the system refuses from
    then on costs that fork only, not every worker (app.server.forks); a stop's wait for the
    workers is timed on the monotonic clock (app.server.clock)."""
    from app.errors import ModelLoadError
    from app.grpc.listeners import check_unclaimed
    from app.observability.metrics import count_lost_worker, count_reload
    from app.server.clock import steady_stop
    from app.server.forks import guard_forks
    from app.server.handoff import started
    from app.server.recycle import collect
    from app.server.reload import pin, take_snapshot

    guard_forks(
        server,
        successors=lambda workers: started(_RUN_DIR / "handoff", workers),
        reloaded=lambda workers_started: _count_reload(server, workers_started),
        lost=lambda cause: _count_lost_worker(server, cause),
        recycled=lambda: collect(_RUN_DIR),
    )
    steady_stop(server)

    # gunicorn's user and group settings switch the workers only: they could not read the model
    # snapshot the master keeps to itself (mode 0700), each failed to boot with a traceback and
    # gunicorn halted ("Worker failed to boot").
    if (server.cfg.uid, server.cfg.gid) != (os.geteuid(), os.getegid()):
        _refuse_start(
            server,
            ValueError(
                f"user={server.cfg.uid}, group={server.cfg.gid} (gunicorn's --user and --group, in "
                "GUNICORN_CMD_ARGS or the command): expected none, the workers could not read the "
                "master's run directories; start gunicorn as that user (systemd's User=, USER)"
            ),
        )

    # A --bind (GUNICORN_CMD_ARGS, as platforms' guides set it, or the command line) replaces the
    # `bind` above: METRICS_BIND's listener went with it, and /metrics answered nowhere (the
    # public port answers it 404 while METRICS_BIND is set).
    if _SETTINGS.metrics_bind and _SETTINGS.metrics_bind not in server.cfg.bind:
        _refuse_start(
            server,
            ValueError(
                f"METRICS_BIND={_SETTINGS.metrics_bind!r}: not among the addresses gunicorn "
                f"listens on, {', '.join(server.cfg.bind)}: a --bind (in GUNICORN_CMD_ARGS or "
                "the command) replaces BIND and METRICS_BIND; expected BIND instead"
            ),
        )

    # A --workers (GUNICORN_CMD_ARGS or the command) replaces `workers` above, past the bound
    # WORKERS has: a mistyped count forked hundreds of workers on a 2-core host (app.settings).
    most = max_workers(cpus.available())
    if server.cfg.workers > most:
        _refuse_start(
            server,
            ValueError(
                f"workers={server.cfg.workers} (gunicorn's --workers, in GUNICORN_CMD_ARGS or the "
                f"command): expected at most {most}, as WORKERS; expected WORKERS instead"
            ),
        )

    # A --preload (GUNICORN_CMD_ARGS or the command) makes the app in the master before this
    # hook pins the checked snapshot: every worker then loaded the operator's MODELS_DIR itself,
    # and with a broken release there the next worker started halted gunicorn.
    if server.cfg.preload_app:
        _refuse_start(
            server,
            ValueError(
                "preload_app=True (gunicorn's --preload, in GUNICORN_CMD_ARGS or the command): "
                "expected it off, the workers would load MODELS_DIR itself rather than the "
                "release the master checked"
            ),
        )

    # A --worker-class of gunicorn's own (sync, gthread, gevent, eventlet, tornado) serves WSGI:
    # the server started and answered every request of this ASGI app, readiness included, with
    # a 500 and a TypeError traceback. uvicorn's workers, and the benchmarks' variants of the
    # service's, stay allowed.
    if server.cfg.worker_class.__module__.startswith("gunicorn.workers."):
        _refuse_start(
            server,
            ValueError(
                f"worker_class={server.cfg.worker_class_str} (gunicorn's --worker-class, in "
                "GUNICORN_CMD_ARGS or the command): a WSGI worker, this app is ASGI; expected "
                f"none ({worker_class}) or another uvicorn worker"
            ),
        )

    if _SETTINGS.grpc_bind and not _UPGRADED:  # the old master's workers share it, as they should
        try:
            check_unclaimed(_SETTINGS.grpc_bind)
        except OSError as error:
            _refuse_start(server, error)

    try:
        release = take_snapshot(_SETTINGS.models_dir, _RUN_DIR / "models", _SETTINGS.ort_threads)
    except ModelLoadError as error:
        _refuse_start(server, error)
    pin(release)
    server.pinned_release = release  # the arbiter outlives this file's re-execution on SIGHUP
    count_reload(None)
    count_lost_worker(None)
    server.log.info("models checked: %s", release.describe())


def on_reload(server: Any) -> None:
    """SIGHUP: the new workers get MODELS_DIR's models if they load, else the old ones; the old
    workers hand the gRPC port over to them (app.server.handoff). The outcome is counted once
    the new workers are forked (`_count_reload`)."""
    from app.server.handoff import advance
    from app.server.reload import reload_models

    advance(_RUN_DIR / "handoff", server.cfg.workers)
    release = reload_models(
        _RUN_DIR / "models",
        _SETTINGS.ort_threads,
        server.log.info,
        server.log.error,
        workers=list(server.WORKERS.values()),
    )
    if release is not None:
        server.pinned_release = release
    server.reload_applied = release is not None


def _refuse_start(server: Any, error: Exception) -> NoReturn:
    """Stops start-up in the master with one line, its run directories removed first (the exit
    skips gunicorn's own on_exit call)."""
    on_exit(server)
    _cannot_start(error, _SETTINGS.log_format)


def _count_reload(server: Any, workers_started: bool) -> None:
    """A SIGHUP's outcome (model_reloads_total, model_last_reload_successful): a refusal is
    otherwise one log line. Models that loaded but that no new worker could be forked to serve
    (app.server.forks) are refused too: the old workers serve the old ones."""
    from app.observability.metrics import count_reload

    try:
        count_reload(getattr(server, "reload_applied", False) and workers_started)
    except Exception as error:  # raised here, it would stop gunicorn's arbiter
        server.log.warning("reload outcome not counted in /metrics: %r", error)


def _count_lost_worker(server: Any, cause: str) -> None:
    """A worker lost without the operator's asking (workers_lost_total, by cause): the
    LatamDelayWorkersLost alert's, for a crash loop the pod's readiness does not show."""
    from app.observability.metrics import count_lost_worker

    try:
        count_lost_worker(cause)
    except Exception as error:  # raised here, it would stop gunicorn's arbiter
        server.log.warning("lost worker not counted in /metrics: %r", error)


def pre_fork(server: Any, worker: Any) -> None:
    """Tags the worker with the snapshot it will load, so that no reload prunes it meanwhile,
    and writes back what of that snapshot is gone (app.server.reload.restore): a worker that
    cannot load its models would halt the server. A failure to is logged, never raised, which
    would stop gunicorn's arbiter (the worker then fails as it would have). The master's metric
    files are written back too, their directory with them, where the worker makes its own."""
    from app.observability.metric_files import restore_removed
    from app.server.reload import restore

    restore_removed()
    worker.models_dir = os.environ["MODELS_DIR"]
    release = getattr(server, "pinned_release", None)
    if release is None:
        return
    try:
        restored = restore(release)
    except OSError as error:
        server.log.warning("model snapshot %s not restored: %r", release.snapshot, error)
        return
    if restored:
        server.log.warning(
            "model snapshot %s had lost %s (removed from under the server: a /tmp cleaner?); "
            "written back as checked",
            release.snapshot,
            ", ".join(restored),
        )


def post_fork(server: Any, worker: Any) -> None:
    """In the worker, before it loads the snapshot it was forked to load: its directories must be
    this user's own (app.server.run_dirs.private_directory). Made again at their listed names by
    another local user once a /tmp cleaner had taken them, they held what that user put there,
    which pre_fork's write-back refuses to touch; the worker exits instead, as one whose models do
    not load (gunicorn halts: "Worker failed to boot")."""
    from app.server.run_dirs import private_directory

    try:
        private_directory(Path(os.environ["MODELS_DIR"]))
    except PermissionError as error:
        server.log.error("model snapshot not loaded: %s: %s", error.filename, error.strerror)
        sys.exit(server.WORKER_BOOT_ERROR)


def child_exit(server: Any, worker: Any) -> None:
    """A worker has been reaped: its gauges leave the sums, its counts go into the archives
    (app.observability.metrics_archive); a failure there is logged, not raised, which would
    stop gunicorn's arbiter."""
    from prometheus_client import multiprocess

    from app.observability.metric_files import restore_removed
    from app.observability.metrics_archive import compact
    from app.server.handoff import forget
    from app.server.reload import in_use, prune

    try:
        multiprocess.mark_process_dead(worker.pid)
    except OSError as error:  # a read-only TMPDIR; scrapes skip a dead process's live gauges
        server.log.warning("dead worker %s's gauge files not removed: %r", worker.pid, error)
    restore_removed()  # the directory too, if it went: the archives are written there
    try:
        compact(Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
    except Exception as error:  # the files stay, counted as they are; the next exit retries
        server.log.warning("dead workers' metric files not archived (next exit retries): %r", error)
    forget(_RUN_DIR / "handoff", worker.pid)
    prune(_RUN_DIR / "models", in_use(os.environ, server.WORKERS.values()))


def on_exit(server: Any) -> None:
    from app.observability.metric_files import forget_files

    forget_files()  # what is removed below stays removed
    release(_RUN_DIR)
    shutil.rmtree(_RUN_DIR, ignore_errors=True)
    own_metrics = os.environ.get(OWN_METRICS_ENV)
    if own_metrics:  # kept while an upgrade's other master's workers still write there
        leave_metrics_dir(Path(own_metrics))

"""Every knob of the service, read from the environment in one place.

A bad value is a ValueError whose message names the variable, the value and what it accepts:
gunicorn.conf.py prints it as one line and stops.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from importlib.util import find_spec
from pathlib import Path

from app import cpus, descriptors
from app.server.overload import OFFLOAD_BYTES

DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
OTEL_MODULES = ("opentelemetry.sdk", "opentelemetry.instrumentation.asgi")
_HOST_PORT = r"(?:\[[0-9a-fA-F:.]+\]|[^\s:\[\]]*):(\d{1,5})"
_BIND = re.compile(rf"unix:.+|{_HOST_PORT}")
_TCP_BIND = re.compile(_HOST_PORT)
"""HOST:PORT only, no unix:PATH: GRPC_BIND's and METRICS_BIND's form."""
_WILDCARD_HOSTS = ("", "0.0.0.0", "::")
"""Hosts that listen on every address: a port on one of them is taken on every host too."""
INT_MAX = 2**31 - 1
"""The largest value of an integer setting without a tighter bound of its own: the values reach
C libraries as C ints (gRPC's channel options, msgspec's length limit, onnxruntime), which
overflow past it (MAX_BODY_BYTES=2147483648 crashed every worker at boot in grpc.aio.server)."""
WORKERS_PER_CPU = 4
WORKERS_FLOOR = 8
ORT_THREADS_FLOOR = 4


@dataclass(frozen=True)
class Settings:
    models_dir: Path = DEFAULT_MODELS_DIR
    max_body_bytes: int = 1_048_576
    max_flights: int = 10_000
    ort_threads: int = 1
    """intra- and inter-op threads per onnxruntime session: one per worker, the workers are the
    parallelism; a thread pool in each of N workers only fights over the same cores. At most the
    CPUs this process may use, or ORT_THREADS_FLOOR on a smaller host (`max_ort_threads`):
    threads past the CPUs only take turns on them; a huge count failed inside onnxruntime, as
    if the model release were unusable."""
    tabulate_minimal: bool = True
    """Serve the minimal model from a table of its whole 552-flight domain (see
    OnnxModel.tabulate)."""
    max_head_bytes: int = 16_384
    """Request line + headers; larger heads get `431` (app.server.protocol: uvicorn has no
    limit)."""
    head_timeout: int = 10
    """Seconds for a request's head to arrive once its connection or request began (`408`)."""
    body_timeout: int = 30
    """Seconds for a request's body to arrive after its head (`408`), and a gRPC call's message
    after its headers (`CANCELLED`: app.grpc.calls)."""
    max_in_flight: int = 64
    """Unanswered requests per worker past which a new one gets `503` + Retry-After at once
    (app.server.overload). 64: up to 64 clients that wait for each answer are never shed, however
    they spread over the workers, and beyond them a request waits behind at most 64 others;
    with clients that honour Retry-After, the 200s' p99 at 1,024 connections is several times
    lower than with 256, at no cost in throughput. Lower bounds, measured with the hold, cut
    that p99 only within the noise, and shed the clients that land unevenly: 32 at 64
    connections, 48 during a SIGHUP storm's reconnects (reports/reliability.md §10); hence a
    lower bound only for a crowded worker (below)."""
    hold_early_retries: bool = True
    """A request a connection sends before the Retry-After of its last 503 has elapsed is held
    and answered 503 (keeping the connection) when it has, instead of at once (app.server.overload):
    clients that ignore Retry-After cannot spend the workers' time on a loop of 503s."""
    crowded_connections: int = 128
    crowded_in_flight: int = 16
    crowded_window: int = 2
    """A worker with more than `crowded_connections` busy connections sheds past
    `crowded_in_flight` unanswered requests instead of `max_in_flight` (app.server.overload): with
    that many clients most are shed anyway, and the fewer it serves at once, the sooner each
    is answered. Busy: a request in progress, or a 503 less than `crowded_window` s ago (its
    client is expected back after the Retry-After; ended by the once-a-second sweep, so 1 s
    later at most); idle keep-alive connections do not count (app.server.protocol)."""
    max_connections: int = field(
        default_factory=partial(descriptors.default_connections, descriptors.REST_CONNECTIONS)
    )
    """REST connections a worker holds at once: one more is made room for by closing the oldest
    connection never answered (nothing sent, or a first head still coming), else the longest-idle
    keep-alive one, or, if every one has a request in progress, is closed itself
    (app.server.protocol). Every connection is a descriptor: unbounded, 1,100 idle connections
    took all of a worker's, its metrics and gRPC ports with them (app.descriptors). Default
    10,000 (past it, clients that reconnect at once churn), or a quarter of the descriptors if
    fewer; at most half of them."""
    offload_flights: int = 256
    """Batches of this many flights or more are scored in the worker's batch thread, so that
    they do not hold its event loop (app.server.overload)."""
    offload_bytes: int = OFFLOAD_BYTES
    """OIP requests (REST bodies, gRPC messages) of this many bytes or more are decoded in the
    batch thread (app.server.overload.OFFLOAD_BYTES says why 16 KiB). A setting so that
    in-process benchmarks, which cannot wait for a thread, can turn it off as OFFLOAD_FLIGHTS."""
    microbatch: bool = True
    """Score the onnxruntime `/predict` requests a worker has in hand at once in one call per
    model (app.inference.microbatch; measured in reports/benchmarks.md)."""
    bind: str = "0.0.0.0:8000"
    workers: int = field(default_factory=cpus.available)
    """gunicorn workers: the CPUs this process may use (app.cpus), not the host's. At most
    WORKERS_PER_CPU per CPU, or WORKERS_FLOOR on a smaller host (`max_workers`): scoring is
    CPU-bound, so workers past the CPUs add only memory (each loads the models) and context
    switches; the slack and the floor let a config written for a larger node still start on a
    small one. Unbounded, a mistyped count forked ~900 processes in seconds on a 2-core host."""
    log_level: str = "info"
    access_log: str | None = None
    """`-` logs every request to stdout; off by default (a log line costs more than a
    prediction)."""
    grpc_bind: str = "0.0.0.0:8001"
    """Where every worker also serves the OIP over gRPC (app.grpc); empty: no gRPC."""
    grpc_max_streams: int = 100
    """Concurrent gRPC calls (HTTP/2 streams) per client connection."""
    grpc_max_connections: int = field(
        default_factory=partial(descriptors.default_connections, descriptors.GRPC_CONNECTIONS)
    )
    """gRPC connections a worker holds at once; one past it is closed as it is accepted (a
    client sees `UNAVAILABLE` and reconnects, perhaps to another worker). Every connection is a
    descriptor: unbounded, idle gRPC connections took all of a worker's, and its REST port with
    them (app.descriptors). Default 1,000, or a quarter of the descriptors if fewer; at most
    half of them."""
    grpc_idle_seconds: int = 75
    """A gRPC connection with no call for this long is closed (GOAWAY; a client reconnects on
    its next call): connections that finished their handshake and then sent nothing stayed open
    for ever, each a file descriptor of the worker's, until none was left for REST either.
    75 s: longer than the usual load balancer idle timeout (60 s), as gunicorn's keepalive."""
    grpc_max_age_seconds: int = 300
    """Every gRPC connection is closed after this long (grpcio adds up to 10 % jitter), its
    calls in flight given 30 s more (app.grpc.server): what a connection can hold (answers a
    client never reads) is held for that long at most, and long-lived clients spread again over
    the workers after a reload or a scale-up."""
    # observability (app.observability.logs, app.observability.tracing,
    # app.observability.drift_metrics, metrics_bind)
    log_format: str = "text"
    """`text` or `json`: one JSON object per log line."""
    metrics_bind: str = ""
    """`host:port` serving /metrics alone, which the public port then does not serve."""
    otel_endpoint: str = ""
    """OTEL_EXPORTER_OTLP_ENDPOINT: OpenTelemetry tracing on when set (the `otel` extra)."""
    drift: bool = True
    drift_window: int = 10_000
    """Flights per worker over which input drift is measured."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        available = cpus.available()
        open_files = descriptors.limit()
        settings = cls(
            models_dir=Path(env.get("MODELS_DIR") or str(DEFAULT_MODELS_DIR)),
            max_body_bytes=_positive_int(env, "MAX_BODY_BYTES", cls.max_body_bytes),
            max_flights=_positive_int(env, "MAX_FLIGHTS", cls.max_flights),
            ort_threads=_positive_int(
                env,
                "ORT_THREADS",
                cls.ort_threads,
                max_ort_threads(available),
                f"the CPUs this process may use, {available} here; at least {ORT_THREADS_FLOOR}",
            ),
            tabulate_minimal=_flag(env, "TABULATE_MINIMAL", cls.tabulate_minimal),
            max_head_bytes=_positive_int(env, "MAX_HEAD_BYTES", cls.max_head_bytes),
            head_timeout=_positive_int(env, "HEAD_TIMEOUT", cls.head_timeout),
            body_timeout=_positive_int(env, "BODY_TIMEOUT", cls.body_timeout),
            max_in_flight=_positive_int(env, "MAX_IN_FLIGHT", cls.max_in_flight),
            hold_early_retries=_flag(env, "HOLD_EARLY_RETRIES", cls.hold_early_retries),
            crowded_connections=_positive_int(env, "CROWDED_CONNECTIONS", cls.crowded_connections),
            crowded_in_flight=_positive_int(env, "CROWDED_IN_FLIGHT", cls.crowded_in_flight),
            crowded_window=_positive_int(env, "CROWDED_WINDOW", cls.crowded_window),
            max_connections=_connections(
                env, "MAX_CONNECTIONS", descriptors.REST_CONNECTIONS, open_files
            ),
            offload_flights=_positive_int(env, "OFFLOAD_FLIGHTS", cls.offload_flights),
            offload_bytes=_positive_int(env, "OFFLOAD_BYTES", cls.offload_bytes),
            microbatch=_flag(env, "MICROBATCH", cls.microbatch),
            bind=_bind(env),
            workers=_positive_int(
                env,
                _workers_variable(env),
                available,
                max_workers(available),
                f"{WORKERS_PER_CPU} per CPU this process may use, {available} here; "
                f"at least {WORKERS_FLOOR}",
            ),
            log_level=_choice(env, "LOG_LEVEL", cls.log_level, LOG_LEVELS),
            access_log=env.get("ACCESS_LOG") or None,
            grpc_bind=_grpc_bind(env),
            grpc_max_streams=_positive_int(env, "GRPC_MAX_STREAMS", cls.grpc_max_streams),
            grpc_max_connections=_connections(
                env, "GRPC_MAX_CONNECTIONS", descriptors.GRPC_CONNECTIONS, open_files
            ),
            grpc_idle_seconds=_grpc_seconds(env, "GRPC_IDLE_SECONDS", cls.grpc_idle_seconds),
            grpc_max_age_seconds=_grpc_seconds(
                env, "GRPC_MAX_AGE_SECONDS", cls.grpc_max_age_seconds
            ),
            log_format=_choice(env, "LOG_FORMAT", cls.log_format, LOG_FORMATS),
            metrics_bind=_host_port(env, "METRICS_BIND"),
            otel_endpoint=_otel(env),
            drift=_flag(env, "DRIFT", cls.drift),
            drift_window=_positive_int(env, "DRIFT_WINDOW", cls.drift_window),
        )
        _refuse_shared_ports(settings)
        return settings

    @property
    def metrics_port(self) -> int | None:
        return int(self.metrics_bind.rpartition(":")[2]) if self.metrics_bind else None


def max_workers(available: int) -> int:
    """The most WORKERS accepted with `available` CPUs (see Settings.workers)."""
    return max(WORKERS_FLOOR, WORKERS_PER_CPU * available)


def max_ort_threads(available: int) -> int:
    """The most ORT_THREADS accepted with `available` CPUs (see Settings.ort_threads)."""
    return max(ORT_THREADS_FLOOR, available)


MAX_GRPC_SECONDS = INT_MAX // 1000
"""grpcio takes its connection times in milliseconds, as C ints."""


def _grpc_seconds(env: Mapping[str, str], name: str, default: int) -> int:
    return _positive_int(env, name, default, MAX_GRPC_SECONDS, "milliseconds in a C int")


def _positive_int(
    env: Mapping[str, str], name: str, default: int, maximum: int = INT_MAX, why: str = ""
) -> int:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    digits = raw.lstrip("0") if raw.isascii() and raw.isdigit() else ""
    # the length first: int() refuses over 4,300 digits with a message that names no variable
    if not digits or len(digits) > len(str(maximum)) or int(digits) > maximum:
        reason = f" ({why})" if why else ""
        raise ValueError(f"{name}={raw!r}: expected an integer from 1 to {maximum}{reason}")
    return int(digits)


def _connections(env: Mapping[str, str], name: str, most: int, open_files: int) -> int:
    """A port's bound on a worker's connections (app.descriptors): by default `most`, or a
    quarter of the files if fewer."""
    return _positive_int(
        env,
        name,
        descriptors.default_connections(most, open_files),
        descriptors.max_connections(open_files),
        f"half the files this process may open (ulimit -n), {open_files} here",
    )


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={raw!r}: expected a boolean (1/0, true/false, yes/no, on/off)")


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw not in allowed:
        raise ValueError(f"{name}={raw!r}: expected one of {', '.join(allowed)}")
    return raw


def _bind(env: Mapping[str, str]) -> str:
    """BIND; unset, `0.0.0.0:$PORT` where PORT is set, as gunicorn itself would: platforms that
    route to the port they name in PORT (Heroku, Cloud Run, Render) reached nothing on 8000."""
    raw = env.get("BIND", "").strip()
    if raw:
        return _address("BIND", raw)
    port = env.get("PORT", "").strip()
    if not port:
        return Settings.bind
    if not (port.isascii() and port.isdigit() and len(port) <= 5 and 0 < int(port) < 65536):
        raise ValueError(f"PORT={port!r}: expected a port from 1 to 65535 (BIND, if set, wins)")
    return f"0.0.0.0:{int(port)}"


def _workers_variable(env: Mapping[str, str]) -> str:
    """WORKERS; unset, WEB_CONCURRENCY, which gunicorn itself reads: a platform sets it for the
    memory it gives (Heroku), where the CPUs this process sees can be the host's."""
    return "WORKERS" if env.get("WORKERS", "").strip() else "WEB_CONCURRENCY"


def _grpc_bind(env: Mapping[str, str]) -> str:
    """Unset: the default; empty: no gRPC. HOST:PORT only: every worker binds that very port
    with SO_REUSEPORT (app.grpc), so a port 0 would give each worker another random one, and
    unix:PATH (BIND's other form) is no TCP port to share (the master crashed on it)."""
    raw = env.get("GRPC_BIND")
    if raw is None:
        return Settings.grpc_bind
    raw = raw.strip()
    if not raw:
        return ""
    match = _TCP_BIND.fullmatch(raw)
    if match is None or not 0 < int(match.group(1)) < 65536:
        raise ValueError(
            f"GRPC_BIND={raw!r}: expected HOST:PORT (port 1-65535, no unix:PATH), or empty: no gRPC"
        )
    return raw


def _address(name: str, raw: str) -> str:
    if not _BIND.fullmatch(raw) or (
        not raw.startswith("unix:") and int(raw.rsplit(":", 1)[1]) > 65535
    ):
        raise ValueError(f"{name}={raw!r}: expected HOST:PORT (port 0-65535) or unix:PATH")
    return raw


def _refuse_shared_ports(settings: Settings) -> None:
    """Two of BIND, GRPC_BIND and METRICS_BIND on one port of one host: gunicorn retried
    'Connection in use' five times, or its workers failed to boot."""
    named = [
        ("BIND", settings.bind),
        ("GRPC_BIND", settings.grpc_bind),
        ("METRICS_BIND", settings.metrics_bind),
    ]
    for later, (name, address) in enumerate(named):
        for other, taken in named[:later]:
            if _same_port(address, taken):
                raise ValueError(
                    f"{name}={address!r}: expected a port {other}={taken!r} does not use"
                )


def _same_port(one: str, other: str) -> bool:
    """Whether two TCP addresses listen on one port of one host (a wildcard host is every
    host); unix:PATH and an unset address share none."""
    if not one or not other or one.startswith("unix:") or other.startswith("unix:"):
        return False
    (host, _, port), (other_host, _, other_port) = one.rpartition(":"), other.rpartition(":")
    if int(port) != int(other_port) or int(port) == 0:
        return False
    hosts = {host.strip("[]").lower(), other_host.strip("[]").lower()}
    return len(hosts) == 1 or bool(hosts & set(_WILDCARD_HOSTS))


def _host_port(env: Mapping[str, str], name: str) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return ""
    # BIND's and GRPC_BIND's HOST:PORT: a host with a colon (unix:PATH:PORT) or a space was
    # taken, gunicorn listened on a socket file or retried the name, and /metrics answered nowhere
    match = _TCP_BIND.fullmatch(raw)
    host = raw.rpartition(":")[0]
    if match is None or not host or not 0 < int(match.group(1)) < 65536:
        raise ValueError(f"{name}={raw!r}: expected HOST:PORT (port 1-65535)")
    return raw


def _otel(env: Mapping[str, str]) -> str:
    raw = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if raw and not all(_installed(name) for name in OTEL_MODULES):
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_ENDPOINT={raw!r}: tracing needs the otel extra, "
            "pip install '.[otel]'"
        )
    return raw


def _installed(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False

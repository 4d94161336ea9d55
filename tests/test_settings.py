from __future__ import annotations

import ctypes
import re
from dataclasses import fields
from pathlib import Path

import pytest

from app import cpus, descriptors, settings
from app.server.protocol import Limits
from app.settings import (
    DEFAULT_MODELS_DIR,
    INT_MAX,
    LOG_FORMATS,
    LOG_LEVELS,
    MAX_GRPC_SECONDS,
    ORT_THREADS_FLOOR,
    WORKERS_FLOOR,
    WORKERS_PER_CPU,
    Settings,
    _same_port,
    max_ort_threads,
    max_workers,
)

INTEGER_SETTINGS = [field.name.upper() for field in fields(Settings) if field.type == "int"]
"""Every integer setting, by its variable: a new one is bounded here too."""
CPU_BOUNDED = {"WORKERS", "ORT_THREADS"}
MS_BOUNDED = {"GRPC_IDLE_SECONDS", "GRPC_MAX_AGE_SECONDS"}
"""Seconds grpcio takes in milliseconds, as C ints."""
FILE_BOUNDED = {"MAX_CONNECTIONS", "GRPC_MAX_CONNECTIONS"}


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.models_dir == DEFAULT_MODELS_DIR
    assert settings.ort_threads == 1


ROOT = Path(__file__).resolve().parent.parent
SETTINGS_DOCUMENTS = ("docs/serving.md", "docs/grpc.md", "docs/observability.md")
"""The documents that hold the settings tables (serving, gRPC, observability)."""
SETTINGS_TABLE = "| variable | default | meaning |\n"
"""The head of each settings table."""
README_DEFAULT = re.compile(r"^\| `([A-Z_]+)` \| ([^|]+?) \|", re.MULTILINE)
"""A row of the settings tables: the variable and its documented default."""


def settings_documents() -> str:
    """The text of SETTINGS_DOCUMENTS, each of which holds a settings table, joined."""
    texts = [(ROOT / name).read_text(encoding="utf-8") for name in SETTINGS_DOCUMENTS]
    assert [
        name
        for name, text in zip(SETTINGS_DOCUMENTS, texts, strict=True)
        if SETTINGS_TABLE not in text
    ] == []
    return "\n\n".join(texts)


README_TEXT_DEFAULTS = {
    "WORKERS",
    "MODELS_DIR",
    "PROMETHEUS_MULTIPROC_DIR",
    "MAX_CONNECTIONS",
    "GRPC_MAX_CONNECTIONS",
}
"""Defaults the tables say in words (app.cpus, the checkout's models/, a directory per run,
app.descriptors)."""


def test_the_defaults_are_the_readmes() -> None:
    """Every setting the settings tables give a default of has that default (or none, `off`)."""
    readme = settings_documents()
    documented = {
        name: default.strip("`")
        for name, default in README_DEFAULT.findall(readme)
        if name.lower() in {field.name for field in fields(Settings)}
        and name not in README_TEXT_DEFAULTS
    }
    assert len(documented) >= 20  # both tables: serving, observability
    for name, default in documented.items():
        value = getattr(Settings(), name.lower())
        if default == "off":
            assert not value, name
        elif isinstance(value, bool):
            assert value is (default == "1"), name
        elif isinstance(value, int):
            assert value == int(default), name
        else:
            assert value == default, name


READ_ELSEWHERE = {
    "ORT_DISABLE_TELEMETRY",
    "PROMETHEUS_MULTIPROC_DIR",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
}
"""Variables of the tables that are no Settings field of their own name (read by app/__init__.py,
gunicorn.conf.py, and Settings.otel_endpoint)."""


def documented_variables(readme: str) -> set[str]:
    """The variables the settings tables in `readme` have a row for."""
    rows = [table.split("\n\n", 1)[0] for table in readme.split(SETTINGS_TABLE)[1:]]
    return {name for table in rows for name, _ in README_DEFAULT.findall(table)}


def test_the_readmes_tables_have_a_row_for_every_setting_and_only_for_real_variables() -> None:
    """A setting added without its row, or a row naming a variable nothing reads (misspelt, or
    left after its setting went), fails here: the defaults' check above skips such a row."""
    readme = settings_documents()
    sources = "\n".join(
        (ROOT / path).read_text(encoding="utf-8")
        for path in ("app/__init__.py", "app/settings.py", "gunicorn.conf.py")
    )
    assert readme.count(SETTINGS_TABLE) == 3
    fields_ = {field.name.upper() for field in fields(Settings)} - {"OTEL_ENDPOINT"}
    assert all(f'"{name}"' in sources for name in READ_ELSEWHERE)
    assert documented_variables(readme) == fields_ | READ_ELSEWHERE
    misspelt = readme.replace("| `MAX_IN_FLIGHT` |", "| `MAX_INFLIGHT` |")
    assert documented_variables(misspelt) != fields_ | READ_ELSEWHERE


def test_the_in_flight_bound_and_the_hold_have_one_documented_default() -> None:
    """app.server.protocol's Limits and the settings agree, and the tables state those values."""
    default = Settings().max_in_flight
    assert Limits().max_in_flight == default
    assert Limits().hold_early_retries is Settings().hold_early_retries is True
    readme = settings_documents()
    assert f"| `MAX_IN_FLIGHT` | {default} |" in readme
    assert "| `HOLD_EARLY_RETRIES` | 1 |" in readme
    assert Settings.from_env({"HOLD_EARLY_RETRIES": "off"}).hold_early_retries is False


def test_the_crowded_bound_has_one_documented_default() -> None:
    settings, limits = Settings(), Limits()
    assert (limits.crowded_connections, limits.crowded_in_flight, limits.crowded_window) == (
        settings.crowded_connections,
        settings.crowded_in_flight,
        settings.crowded_window,
    )
    readme = settings_documents()
    assert f"| `CROWDED_CONNECTIONS` | {settings.crowded_connections} |" in readme
    assert f"| `CROWDED_IN_FLIGHT` | {settings.crowded_in_flight} |" in readme
    assert f"| `CROWDED_WINDOW` | {settings.crowded_window} |" in readme
    crowded = Settings.from_env(
        {"CROWDED_CONNECTIONS": "300", "CROWDED_IN_FLIGHT": "8", "CROWDED_WINDOW": "5"}
    )
    assert (crowded.crowded_connections, crowded.crowded_in_flight) == (300, 8)
    assert crowded.crowded_window == 5


def test_environment_overrides() -> None:
    settings = Settings.from_env(
        {
            "MODELS_DIR": "/srv/models",
            "MAX_BODY_BYTES": "2048",
            "MAX_FLIGHTS": "10",
            "ORT_THREADS": "2",
        }
    )
    assert settings == Settings(Path("/srv/models"), 2048, 10, 2)


@pytest.mark.parametrize(
    ("name", "value", "accepts"),
    [
        ("MAX_FLIGHTS", "ten", "an integer from 1 to"),
        ("MAX_FLIGHTS", "0", "an integer from 1 to"),
        ("WORKERS", "abc", "an integer from 1 to"),
        ("WORKERS", "-2", "an integer from 1 to"),
        ("WORKERS", "²", "an integer from 1 to"),
        ("MAX_BODY_BYTES", "1e6", "an integer from 1 to"),
        ("ORT_THREADS", "1.5", "an integer from 1 to"),
        ("MAX_HEAD_BYTES", "x", "an integer from 1 to"),
        ("HEAD_TIMEOUT", "x", "an integer from 1 to"),
        ("BODY_TIMEOUT", "x", "an integer from 1 to"),
        ("TABULATE_MINIMAL", "maybe", "a boolean"),
        ("MICROBATCH", "maybe", "a boolean"),
        ("HOLD_EARLY_RETRIES", "maybe", "a boolean"),
        ("CROWDED_CONNECTIONS", "many", "an integer from 1 to"),
        ("CROWDED_IN_FLIGHT", "0", "an integer from 1 to"),
        ("CROWDED_WINDOW", "0.5", "an integer from 1 to"),
        ("CROWDED_WINDOW", "0", "an integer from 1 to"),
        ("LOG_LEVEL", "loud", "one of debug, info"),
        ("BIND", "localhost", "HOST:PORT"),
        ("BIND", "0.0.0.0:99999", "HOST:PORT"),
        ("GRPC_BIND", "8001", "HOST:PORT"),
        # found by an operator probe: the master crashed in app.grpc.listeners (int("/tmp/x.sock"))
        ("GRPC_BIND", "unix:/tmp/x.sock", r"HOST:PORT \(port 1-65535, no unix:PATH\)"),
        # found by an operator probe: each worker bound another random port, the log said :0
        ("GRPC_BIND", "127.0.0.1:0", r"HOST:PORT \(port 1-65535"),
        ("GRPC_BIND", "127.0.0.1:65536", r"HOST:PORT \(port 1-65535"),
        ("GRPC_MAX_STREAMS", "0", "an integer from 1 to"),
        ("PORT", "http", "a port from 1 to 65535"),
        ("PORT", "0", "a port from 1 to 65535"),
        ("PORT", "65536", "a port from 1 to 65535"),
        ("WEB_CONCURRENCY", "many", "an integer from 1 to"),
    ],
)
def test_a_bad_value_names_the_variable_and_what_it_accepts(
    name: str, value: str, accepts: str
) -> None:
    with pytest.raises(ValueError, match=f"^{name}='{value}': expected {accepts}") as error:
        Settings.from_env({name: value})
    assert "\n" not in str(error.value)


def test_every_integer_setting_is_listed() -> None:
    assert set(INTEGER_SETTINGS) >= {"MAX_BODY_BYTES", "GRPC_MAX_STREAMS", "DRIFT_WINDOW"}
    assert set(INTEGER_SETTINGS) >= CPU_BOUNDED


@pytest.mark.parametrize(
    "name", sorted(set(INTEGER_SETTINGS) - CPU_BOUNDED - MS_BOUNDED - FILE_BOUNDED)
)
def test_an_integer_setting_is_at_most_a_c_int(name: str) -> None:
    """Found by an operator probe: MAX_BODY_BYTES or GRPC_MAX_STREAMS of 2**31 crashed every
    worker at boot in grpc.aio.server (C int options), a boot loop the master never stopped."""
    assert getattr(Settings.from_env({name: str(INT_MAX)}), name.lower()) == INT_MAX
    for value in (str(INT_MAX + 1), "99999999999999999999"):
        with pytest.raises(ValueError, match=f"^{name}=") as error:
            Settings.from_env({name: value})
        assert str(error.value) == f"{name}={value!r}: expected an integer from 1 to {INT_MAX}"


def test_the_bounds_are_the_documented_numbers() -> None:
    """The limits are the README's and the C libraries': the tests below read them from
    app.settings, so a changed constant would move the bound and its test together."""
    assert ctypes.c_int(INT_MAX).value == INT_MAX  # the largest C int...
    assert ctypes.c_int(INT_MAX + 1).value != INT_MAX + 1  # ...the next one overflows
    assert ctypes.c_int(MAX_GRPC_SECONDS * 1000).value == MAX_GRPC_SECONDS * 1000
    assert ctypes.c_int((MAX_GRPC_SECONDS + 1) * 1000).value != (MAX_GRPC_SECONDS + 1) * 1000
    # docs/serving.md: WORKERS "at most 4 per CPU, or 8 on a smaller host"
    assert (WORKERS_PER_CPU, WORKERS_FLOOR, ORT_THREADS_FLOOR) == (4, 8, 4)


@pytest.mark.parametrize(
    ("available", "workers", "threads"),
    [(1, WORKERS_FLOOR, ORT_THREADS_FLOOR), (2, 8, 4), (16, 16 * WORKERS_PER_CPU, 16)],
)
def test_workers_and_onnxruntime_threads_are_bounded_by_the_cpus(
    monkeypatch: pytest.MonkeyPatch, available: int, workers: int, threads: int
) -> None:
    """Found by an operator probe: WORKERS=99999999999999999999 forked ~900 processes in
    seconds on a 2-core host; a huge ORT_THREADS was blamed on the model release."""
    monkeypatch.setattr(cpus, "available", lambda: available)
    assert (max_workers(available), max_ort_threads(available)) == (workers, threads)
    assert Settings.from_env({"WORKERS": str(workers)}).workers == workers
    assert Settings.from_env({"ORT_THREADS": str(threads)}).ort_threads == threads
    for name, bound in (("WORKERS", workers), ("ORT_THREADS", threads)):
        for value in (str(bound + 1), "99999999999999"):
            with pytest.raises(ValueError, match=f"^{name}='{value}': ") as error:
                Settings.from_env({name: value})
            message = str(error.value)
            assert f"expected an integer from 1 to {bound} (" in message
            assert f"{available} here" in message
            assert "\n" not in message
    assert str(error.value).endswith(
        f"(the CPUs this process may use, {available} here; at least {ORT_THREADS_FLOOR})"
    )
    with pytest.raises(ValueError, match=r"^WORKERS=") as error:
        Settings.from_env({"WORKERS": str(workers + 1)})
    assert str(error.value).endswith(
        f"({WORKERS_PER_CPU} per CPU this process may use, {available} here; "
        f"at least {WORKERS_FLOOR})"
    )


def test_a_value_of_thousands_of_digits_is_refused_as_any_other() -> None:
    """int() alone refuses over 4,300 digits with a ValueError that names no variable."""
    value = "9" * 5_000
    with pytest.raises(ValueError, match=r"^MAX_FLIGHTS='9+': expected an integer from 1 to "):
        Settings.from_env({"MAX_FLIGHTS": value})


def test_leading_zeros_are_the_same_integer() -> None:
    assert Settings.from_env({"MAX_FLIGHTS": "0010"}).max_flights == 10
    assert Settings.from_env({"GRPC_MAX_STREAMS": "0" * 30 + "7"}).grpc_max_streams == 7


def test_the_defaults_are_within_the_bounds() -> None:
    defaults = Settings()
    for name in INTEGER_SETTINGS:
        assert 1 <= getattr(defaults, name.lower()) <= INT_MAX
    assert defaults.workers <= max_workers(cpus.available())
    assert defaults.ort_threads <= max_ort_threads(1)


def test_workers_default_to_the_cpus_this_process_may_use() -> None:
    assert Settings.from_env({}).workers == cpus.available()
    assert Settings.from_env({"WORKERS": "3"}).workers == 3


@pytest.mark.parametrize("bind", ["0.0.0.0:8000", "127.0.0.1:0", "[::1]:8080", "unix:/run/s"])
def test_bind_forms(bind: str) -> None:
    assert Settings.from_env({"BIND": bind}).bind == bind


def test_a_platforms_port_and_worker_count_count_where_bind_and_workers_are_unset() -> None:
    """PORT and WEB_CONCURRENCY, which gunicorn itself reads and Heroku, Cloud Run or Render
    set: the server listened on 8000 while the platform routed to PORT, and started a worker
    per CPU seen where the platform had sized WEB_CONCURRENCY for its memory."""
    platform = Settings.from_env({"PORT": "8080", "WEB_CONCURRENCY": "3"})
    assert (platform.bind, platform.workers) == ("0.0.0.0:8080", 3)
    own = Settings.from_env(
        {"PORT": "8080", "BIND": "127.0.0.1:9000", "WEB_CONCURRENCY": "3", "WORKERS": "2"}
    )
    assert (own.bind, own.workers) == ("127.0.0.1:9000", 2)


def test_grpc_is_on_port_8001_unless_turned_off() -> None:
    assert Settings.from_env({}).grpc_bind == "0.0.0.0:8001"
    assert Settings.from_env({"GRPC_BIND": "127.0.0.1:9001"}).grpc_bind == "127.0.0.1:9001"
    assert Settings.from_env({"GRPC_BIND": ""}).grpc_bind == ""


@pytest.mark.parametrize(
    ("env", "refused"),
    [
        (
            {"GRPC_BIND": "0.0.0.0:8000"},
            "GRPC_BIND='0.0.0.0:8000': expected a port BIND='0.0.0.0:8000'",
        ),
        (
            {"BIND": "127.0.0.1:9000", "GRPC_BIND": "127.0.0.1:9000"},
            "GRPC_BIND='127.0.0.1:9000': expected a port BIND='127.0.0.1:9000' does not use",
        ),
        ({"GRPC_BIND": "[::]:8000"}, "GRPC_BIND='[::]:8000': expected a port BIND="),
        (
            {"METRICS_BIND": "127.0.0.1:8000"},
            "METRICS_BIND='127.0.0.1:8000': expected a port BIND=",
        ),
        (
            {"METRICS_BIND": "127.0.0.1:8001"},
            "METRICS_BIND='127.0.0.1:8001': expected a port GRPC_BIND='0.0.0.0:8001' does not use",
        ),
    ],
)
def test_two_listeners_on_one_port_are_refused_naming_both(
    env: dict[str, str], refused: str
) -> None:
    """Found by an operator probe: gunicorn retried 'Connection in use' five times, or its
    workers failed to boot, instead of a line naming the setting."""
    with pytest.raises(ValueError, match=f"^{re.escape(refused)}") as error:
        Settings.from_env(env)
    assert "\n" not in str(error.value)


def test_listeners_on_one_port_of_different_hosts_or_unix_sockets_are_fine() -> None:
    env = {"BIND": "127.0.0.1:9000", "GRPC_BIND": "127.0.0.2:9000", "METRICS_BIND": "10.0.0.1:9000"}
    assert Settings.from_env(env).metrics_bind == "10.0.0.1:9000"
    assert Settings.from_env(
        {"BIND": "unix:/run/s", "METRICS_BIND": "0.0.0.0:8001", "GRPC_BIND": ""}
    )


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Settings().max_flights = 5  # type: ignore[misc]


@pytest.mark.parametrize("name", sorted(FILE_BOUNDED))
def test_connections_are_bounded_by_the_files_a_worker_may_open(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Every connection is a file: unbounded, 1,100 idle gRPC connections, or as many idle REST
    ones, took all of a worker's (a soft limit of 1,024) and its other ports with them
    (app.descriptors)."""
    monkeypatch.setattr(descriptors, "limit", lambda: 1_024)
    assert getattr(Settings.from_env({}), name.lower()) == 256
    assert getattr(Settings.from_env({name: "512"}), name.lower()) == 512
    with pytest.raises(ValueError, match=rf"^{name}=") as error:
        Settings.from_env({name: "513"})
    assert str(error.value) == (
        f"{name}='513': expected an integer from 1 to 512 "
        "(half the files this process may open (ulimit -n), 1024 here)"
    )
    monkeypatch.setattr(descriptors, "limit", lambda: 1_048_576)
    assert getattr(Settings.from_env({}), name.lower()) == (
        descriptors.GRPC_CONNECTIONS if name.startswith("GRPC") else descriptors.REST_CONNECTIONS
    )


@pytest.mark.parametrize("name", sorted(MS_BOUNDED))
def test_a_grpc_connection_time_fits_grpcios_milliseconds(name: str) -> None:
    assert getattr(Settings.from_env({name: str(MAX_GRPC_SECONDS)}), name.lower()) == (
        MAX_GRPC_SECONDS
    )
    with pytest.raises(ValueError, match=f"^{name}=") as error:
        Settings.from_env({name: str(MAX_GRPC_SECONDS + 1)})
    assert str(error.value) == (
        f"{name}='{MAX_GRPC_SECONDS + 1}': expected an integer from 1 to {MAX_GRPC_SECONDS} "
        "(milliseconds in a C int)"
    )


FLAGS = ["TABULATE_MINIMAL", "HOLD_EARLY_RETRIES", "MICROBATCH", "DRIFT"]


@pytest.mark.parametrize("name", FLAGS)
def test_every_spelling_of_a_flag_the_message_offers_is_accepted(name: str) -> None:
    """The refusal lists `1/0, true/false, yes/no, on/off`: each of them works, in any case."""
    for raw in ("1", "true", "yes", "on", " ON "):
        assert getattr(Settings.from_env({name: "0"}), name.lower()) is False
        assert getattr(Settings.from_env({name: raw}), name.lower()) is True, raw
    for raw in ("0", "false", "no", "off", "False"):
        assert getattr(Settings.from_env({name: raw}), name.lower()) is False, raw


def test_every_log_level_and_format_the_message_offers_is_accepted() -> None:
    assert len(LOG_LEVELS) == 5
    assert set(LOG_FORMATS) == {"text", "json"}
    for level in LOG_LEVELS:
        assert Settings.from_env({"LOG_LEVEL": level.upper()}).log_level == level
    for log_format in LOG_FORMATS:
        assert Settings.from_env({"LOG_FORMAT": f" {log_format} "}).log_format == log_format
    with pytest.raises(ValueError, match=r"^LOG_FORMAT='xml': expected one of text, json$"):
        Settings.from_env({"LOG_FORMAT": "xml"})


def test_access_log_is_off_unless_set() -> None:
    assert Settings.from_env({"ACCESS_LOG": "-"}).access_log == "-"
    assert Settings.from_env({"ACCESS_LOG": ""}).access_log is None  # gunicorn: no access log


@pytest.mark.parametrize(
    ("name", "port", "accepted"),
    [
        ("BIND", "65535", True),
        ("BIND", "65536", False),
        ("GRPC_BIND", "1", True),
        ("GRPC_BIND", "65535", True),
        ("METRICS_BIND", "1", True),
        ("METRICS_BIND", "65535", True),
        ("METRICS_BIND", "0", False),
        ("METRICS_BIND", "65536", False),
    ],
)
def test_the_ports_accepted_end_where_the_messages_say(
    name: str, port: str, accepted: bool
) -> None:
    env = {"BIND": "127.0.0.1:8000", "GRPC_BIND": "", name: f"127.0.0.2:{port}"}
    if accepted:
        assert getattr(Settings.from_env(env), name.lower()) == f"127.0.0.2:{port}"
        return
    with pytest.raises(ValueError, match=f"^{name}=") as error:
        Settings.from_env(env)
    assert str(error.value).startswith(f"{name}='127.0.0.2:{port}': expected HOST:PORT (port ")


@pytest.mark.parametrize(
    "raw",
    [
        "9100",
        ":9100",
        "127.0.0.1:",
        "127.0.0.1:x",
        # a unix socket with a colon in its path: gunicorn listened on the socket, and /metrics
        # answered on no address (neither it nor the public port, which leaves it to METRICS_BIND)
        "unix:/run/metrics.sock:9100",
        "metrics host:9100",  # gunicorn retried the name five times, then stopped
    ],
)
def test_a_bad_metrics_bind_names_the_variable_and_what_it_accepts(raw: str) -> None:
    with pytest.raises(ValueError, match=r"^METRICS_BIND=") as error:
        Settings.from_env({"METRICS_BIND": raw})
    assert str(error.value) == f"METRICS_BIND={raw!r}: expected HOST:PORT (port 1-65535)"


def test_metrics_port() -> None:
    assert Settings.from_env({"METRICS_BIND": "[::1]:9100"}).metrics_port == 9100
    assert Settings().metrics_port is None


@pytest.mark.parametrize(
    "env",
    [
        {"BIND": ":9000", "GRPC_BIND": "127.0.0.1:9000"},  # an empty host is every address
        {"GRPC_BIND": "[::]:9000", "METRICS_BIND": "127.0.0.1:9000"},
    ],
)
def test_a_wildcard_host_shares_its_port_with_every_host(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"expected a port .* does not use"):
        Settings.from_env(env)


def test_same_port_rules() -> None:
    """What _refuse_shared_ports relies on, both ways round (today BIND, judged first, is the
    only address that may be unix:PATH or port 0, so only the unit sees the other order)."""
    assert _same_port("127.0.0.1:9000", "[::]:9000")
    assert not _same_port("unix:/run/s", "0.0.0.0:9000")
    assert not _same_port("0.0.0.0:9000", "unix:/run/s")
    assert not _same_port("127.0.0.1:0", "127.0.0.1:0")  # each gets a free port of its own
    assert not _same_port("127.0.0.1:9000", "")


def test_tracing_without_its_extra_is_refused_only_when_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The parent package itself missing (find_spec raises) counts as not installed too."""
    monkeypatch.setattr(settings, "OTEL_MODULES", ("not_a_package.sdk",))
    assert Settings.from_env({}).otel_endpoint == ""
    with pytest.raises(ValueError, match=r"^OTEL_EXPORTER_OTLP_ENDPOINT=") as error:
        Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert str(error.value) == (
        "OTEL_EXPORTER_OTLP_ENDPOINT='http://127.0.0.1:4318': tracing needs the otel extra, "
        "pip install '.[otel]'"
    )

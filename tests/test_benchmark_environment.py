"""The benchmarks' servers (compare's, chaos's and so overload's) start from an environment cleared
of every setting the service reads (benchmarks.stress.defaults_environment): no server, the
environment each would be started with is captured instead."""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from benchmarks import chaos, compare, stress
from benchmarks.compare_report import Variant


class Reading(Mapping[str, str]):
    """An empty environment that notes every name read from it."""

    def __init__(self) -> None:
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def settings_read() -> set[str]:
    """The variables app.settings reads (with WORKERS unset: WEB_CONCURRENCY too)."""
    reading = Reading()
    Settings.from_env(reading)
    return reading.read


def test_every_setting_the_service_reads_is_cleared(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A shell with WEB_CONCURRENCY (a platform's worker count), MAX_IN_FLIGHT,
    OTEL_EXPORTER_OTLP_ENDPOINT or GUNICORN_CMD_ARGS set must not change what a variant
    measures: the report says each differs from the README's defaults by its row alone."""
    names = settings_read() | {"GUNICORN_CMD_ARGS", "PROMETHEUS_MULTIPROC_DIR"}
    assert {"WEB_CONCURRENCY", "MAX_IN_FLIGHT", "OTEL_EXPORTER_OTLP_ENDPOINT"} <= names
    for name in names:
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("LATAM_DELAY_ANYTHING", "1")
    monkeypatch.setenv("HOME", "/home/someone")
    started: list[Mapping[str, str]] = []

    @contextmanager
    def served(*given: Any) -> Iterator[None]:
        started.append(given[5])
        yield None

    monkeypatch.setattr(stress, "served", served)
    args = argparse.Namespace(gunicorn=Path("gunicorn"), ready_timeout=1.0)
    variant = Variant("v", "", compare.SERVICE, env={"MICROBATCH": "0"})
    with compare.served(variant, args, tmp_path):
        pass
    (env,) = started
    assert sorted(name for name in names - {"BIND"} if name in env) == ["MICROBATCH"]
    assert "LATAM_DELAY_ANYTHING" not in env
    assert env["HOME"] == "/home/someone"


def test_chaos_and_overload_servers_differ_from_the_defaults_by_their_own_settings_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """chaos.served_by (make chaos, make overload) cleared only BIND, WORKERS, MODELS_DIR and
    two more: a shell's MAX_IN_FLIGHT made `make overload`'s "default" bound another."""
    names = settings_read() | set(stress.SERVICE_SETTINGS)
    for name in names:
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("HOME", "/home/someone")
    started: list[Mapping[str, str]] = []

    @contextmanager
    def served(*given: Any, **options: Any) -> Iterator[None]:
        started.append(options["env"])
        yield None

    monkeypatch.setattr(stress, "served", served)
    with chaos.served_by(Path("gunicorn"), tmp_path, tmp_path, env={"MAX_IN_FLIGHT": "8"}):
        pass
    (env,) = started
    assert sorted(name for name in names if name in env) == [
        "BIND", "MAX_IN_FLIGHT", "MODELS_DIR", "WORKERS"
    ]  # fmt: skip
    assert env["MAX_IN_FLIGHT"] == "8"
    assert env["HOME"] == "/home/someone"


def test_stress_servers_differ_from_the_defaults_by_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """stress.run (make stress, make stress-smoke) served with the process's environment: a
    shell's MAX_IN_FLIGHT or WEB_CONCURRENCY changed the server its report names as the README's
    serve command."""
    names = settings_read() | set(stress.SERVICE_SETTINGS)
    for name in names:
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("HOME", "/home/someone")
    started: list[Mapping[str, str]] = []

    class Started(Exception):
        """The server's environment is captured: nothing more to run."""

    @contextmanager
    def served(*given: Any, **options: Any) -> Iterator[None]:
        started.append(options.get("env") or dict(os.environ))  # stress.served's default
        raise Started
        yield None  # a generator, as the real one

    monkeypatch.setattr(stress, "served", served)
    monkeypatch.setattr(shutil, "which", lambda name: name)
    bodies = tmp_path / "bodies.jsonl"
    bodies.write_text("{}\n")
    args = stress.parse_args(["--bodies", str(bodies), "--revision", "r"])
    with pytest.raises(Started):
        stress.run(args, "cmd")
    (env,) = started
    assert sorted(name for name in names if name in env) == []
    assert env["HOME"] == "/home/someone"


def test_the_settings_cleared_are_every_one_the_service_reads() -> None:
    assert settings_read() <= set(stress.SERVICE_SETTINGS)

"""Every knob of the service, read from the environment in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


@dataclass(frozen=True)
class Settings:
    models_dir: Path = DEFAULT_MODELS_DIR
    max_body_bytes: int = 1_048_576
    max_flights: int = 10_000
    ort_threads: int = 1
    """intra- and inter-op threads per onnxruntime session: one per worker, the workers are the
    parallelism; a thread pool in each of N workers only fights over the same cores."""
    tabulate_minimal: bool = True
    """Serve the minimal model from a table of its whole 552-flight domain (see OnnxModel.tabulate)."""
    max_head_bytes: int = 16_384
    """Request line + headers; larger heads get `431` (app.protocol: uvicorn has no limit)."""
    head_timeout: int = 10
    """Seconds for a request's head to arrive once its connection or request began (`408`)."""
    body_timeout: int = 30
    """Seconds for a request's body to arrive after its head (`408`)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        return cls(
            models_dir=Path(env.get("MODELS_DIR", str(DEFAULT_MODELS_DIR))),
            max_body_bytes=_positive_int(env, "MAX_BODY_BYTES", cls.max_body_bytes),
            max_flights=_positive_int(env, "MAX_FLIGHTS", cls.max_flights),
            ort_threads=_positive_int(env, "ORT_THREADS", cls.ort_threads),
            tabulate_minimal=_flag(env, "TABULATE_MINIMAL", cls.tabulate_minimal),
            max_head_bytes=_positive_int(env, "MAX_HEAD_BYTES", cls.max_head_bytes),
            head_timeout=_positive_int(env, "HEAD_TIMEOUT", cls.head_timeout),
            body_timeout=_positive_int(env, "BODY_TIMEOUT", cls.body_timeout),
        )


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be positive")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean (1/0, true/false)")

from __future__ import annotations

import asyncio
import contextlib
import csv
import gzip
import json
import os
import random
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.inference.flights import Columns, Flight
from app.main import create_app
from app.observability.metrics import ANSWERED_BY_SERVER
from app.observability.request_id import REQUEST_ID, TRACE_ID
from app.settings import Settings
from train.data import CSV_SHA256, DATA_ENV, csv_sha256, data_location

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "models"
PAYLOADS = Path(__file__).resolve().parent / "payloads"
SEVERAL_REQUEST_IDS = [
    (["first", "second"], "first"),
    (["first", "a b"], "first"),
    (["a b", "second"], None),
    (["first,second"], "first"),
    (["first, a b"], "first"),
    (["a b,second"], None),
]
"""X-Request-ID sent several times (the header, or gRPC's metadata) → the ID answered (None: a
generated one): one rule everywhere. Before, the app kept the last sane one, the HTTP layer's
own answers the last one, gRPC the first. Joined into one field by a proxy (`first,second`:
API Gateway does), the first element is the first sent (until the twenty-first session the
whole field was judged, and a new ID given)."""
PADDED_REQUEST_IDS = ["abc-1 ", " abc-1", "  abc-1  "]
"""X-Request-ID with spaces around `abc-1`, which is the ID kept (gRPC's client refuses tabs)."""
T = TypeVar("T")

COLUMNS = [
    "Fecha-I",
    "Vlo-I",
    "Ori-I",
    "Des-I",
    "Emp-I",
    "Fecha-O",
    "Vlo-O",
    "Ori-O",
    "Des-O",
    "Emp-O",
    "DIA",
    "MES",
    "AÑO",
    "DIANOM",
    "TIPOVUELO",
    "OPERA",
    "SIGLAORI",
    "SIGLADES",
]
SYNTHETIC_AIRLINES = {
    "Grupo LATAM": ("LAN", 0.10),
    "Sky Airline": ("SKU", 0.25),
    "Copa Air": ("CMP", 0.05),
    "Avianca": ("AVA", 0.35),
    "Iberia": ("IBE", 0.15),
}
SYNTHETIC_DESTINATIONS = {
    "SCFA": "N",
    "SCIE": "N",
    "SPJC": "I",
    "SAEZ": "I",
    "KMIA": "I",
    "SCDA": "N",
}
DAYS = ["Lunes", "Martes", "Miercoles", "Jueves", "Viernes", "Sabado", "Domingo"]


def synthetic_rows(count: int, seed: int = 7) -> list[dict[str, str]]:
    """Flights shaped like the SCL file, with delays that depend on airline and hour."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        operator = rng.choice(list(SYNTHETIC_AIRLINES))
        airline, delay_rate = SYNTHETIC_AIRLINES[operator]
        destination = rng.choice(list(SYNTHETIC_DESTINATIONS))
        scheduled = datetime(2017, 1, 1) + timedelta(
            days=rng.randrange(365), minutes=5 * rng.randrange(288)
        )
        evening = 0.15 if scheduled.hour >= 18 else 0.0
        delayed = rng.random() < delay_rate + evening
        operated = scheduled + timedelta(
            minutes=rng.randint(16, 90) if delayed else rng.randint(-10, 15)
        )
        number = str(rng.randrange(100, 130))
        rows.append(
            {
                "Fecha-I": scheduled.strftime("%Y-%m-%d %H:%M:%S"),
                "Vlo-I": number,
                "Ori-I": "SCEL",
                "Des-I": destination,
                "Emp-I": airline,
                "Fecha-O": operated.strftime("%Y-%m-%d %H:%M:%S"),
                "Vlo-O": number,
                "Ori-O": "SCEL",
                "Des-O": destination,
                "Emp-O": airline,
                "DIA": str(operated.day),
                "MES": str(operated.month),
                "AÑO": str(operated.year),
                "DIANOM": DAYS[operated.weekday()],
                "TIPOVUELO": SYNTHETIC_DESTINATIONS[destination],
                "OPERA": operator,
                "SIGLAORI": "Santiago",
                "SIGLADES": destination,
            }
        )
    return rows


def write_csv(path: Path, rows: list[dict[str, str]], columns: list[str] = COLUMNS) -> Path:
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def answer_499_through(middleware: Callable[[ASGIApp], ASGIApp], marked: bool) -> None:
    """One `POST /predict` whose app answers 499 (a client gone), through `middleware`; `marked`:
    the HTTP layer had answered that request itself (ANSWERED_BY_SERVER in its scope)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 499, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def ignore(message: Message) -> None:
        pass

    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/predict"}
    if marked:
        scope[ANSWERED_BY_SERVER] = 408

    async def request() -> None:  # on a running loop: MetricsMiddleware starts its flushing
        await middleware(app)(scope, receive, ignore)

    asyncio.run(request())


@pytest.fixture
def private_mounts() -> None:
    """Skips a test that mounts in a user and mount namespace of its own (`unshare -rm`: a small
    tmpfs, a read-only bind) where this machine cannot make one."""
    if not shutil.which("unshare"):
        pytest.skip("needs unshare (util-linux)")
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("this kernel or sandbox refuses an unprivileged mount namespace (unshare -rm)")


@pytest.fixture(autouse=True)
def no_request_context_left() -> Iterator[None]:
    """A middleware called in-process outside a task (benchmarks.asgi's caller) sets the request
    and trace IDs in the test's own context; without this reset a later test that expects none
    (tests/test_protocol.py's access lines) failed when it ran after tests/test_request_id.py."""
    yield
    REQUEST_ID.set(b"")
    TRACE_ID.set(b"")


@pytest.fixture
def gunicorn_conf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """gunicorn.conf.py's names, the file executed as on SIGHUP: with this master's own run
    directory already named in the environment, it makes no directory."""
    import runpy

    run = tmp_path / f"latam-delay-run-{os.getpid()}-test"
    monkeypatch.setenv("LATAM_DELAY_RUN_DIR", str(run))
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


@pytest.fixture(scope="session")
def synthetic_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "flights.csv.gz", synthetic_rows(3000))


@pytest.fixture(scope="session")
def synthetic_export(tmp_path_factory: pytest.TempPathFactory, synthetic_csv: Path) -> Path:
    """Models and report exported from the synthetic file (quick search): a tmp dir with
    `models/` and `reports/`."""
    from export.__main__ import main

    out = tmp_path_factory.mktemp("export")
    status = main(
        [
            "--data",
            str(synthetic_csv),
            "--models-dir",
            str(out / "models"),
            "--reports-dir",
            str(out / "reports"),
            "--search",
            "first",
        ]
    )
    assert status == 0
    return out


def challenge_models(models_dir: Path = MODELS_DIR) -> bool:
    """Whether every card in `models_dir` was exported from the challenge's 2017 file (CSV_SHA256):
    facts of the committed models (the documents' curl answers, the minimal model's holdout gap)
    hold only for them, not for the models the retrain workflow exports from newer data into
    models/."""
    cards = [models_dir / f"{name}.json" for name in ("delay-minimal", "delay-full")]
    return all(json.loads(card.read_bytes())["data"]["csv_sha256"] == CSV_SHA256 for card in cards)


def challenge_data(path: Path) -> bool:
    """Whether the data file at `path` is the challenge's 2017 file, whose facts (68,206 rows,
    its months) some real-data tests pin; $SCL_DATA may name newer data (the retrain workflow)."""
    return csv_sha256(path) == CSV_SHA256


@pytest.fixture(scope="session")
def real_data() -> Path:
    path = data_location()
    if not path.is_file():
        pytest.skip(f"real data not found at {path} (the SCL 2017 file; ${DATA_ENV} sets the path)")
    return path


@pytest.fixture
def wrk_bodies(real_data: Path, tmp_path: Path) -> Path:
    """A directory of wrk bodies drawn from the real data, for short real load runs."""
    import shutil

    from benchmarks import bodies

    if shutil.which("wrk") is None:
        pytest.skip("wrk is not on PATH (apt-get install wrk)")
    out = tmp_path / "wrk"
    bodies.generate(real_data, out, count=1000, batch=10, batches=1, seed=0)
    return out


@pytest.fixture(scope="session")
def client() -> Iterator[TestClient]:
    """The app in-process, serving the committed models."""
    with TestClient(create_app(Settings(models_dir=MODELS_DIR, max_flights=1000))) as test_client:
        yield test_client


def payload_request(case: dict[str, Any]) -> tuple[str, bytes, dict[str, str]]:
    """The URL, body and headers a payload case file describes (tests/payloads/*.json)."""
    if "body" in case:
        content = json.dumps(case["body"]).encode()
    elif "raw_hex" in case:
        content = bytes.fromhex(case["raw_hex"])
    else:
        content = case["raw"].encode()
    content_type = case.get("content_type", "application/json")
    headers = {} if content_type is None else {"content-type": content_type}
    url = "/predict" + ("?" + case["query"] if "query" in case else "")
    return url, content, headers


def payload_cases(name: str) -> list[Any]:
    cases: list[Any] = json.loads((PAYLOADS / name).read_text(encoding="utf-8"))
    return [pytest.param(case, id=case["id"]) for case in cases]


def add_profiles(models_dir: Path, flights_for: Callable[[bool], list[Flight]]) -> None:
    """Gives every card in `models_dir` that has none a drift profile (app.observability.drift) of
    the flights `flights_for(schedule)` returns, scored by the card's own model: what export
    writes."""
    from app.inference.model import MODEL_NAMES, OnnxModel
    from app.observability import drift

    for name in MODEL_NAMES:
        path = models_dir / f"{name}.json"
        card = json.loads(path.read_text(encoding="utf-8"))
        if "profile" in card:
            continue
        model = OnnxModel.load(models_dir, name)
        flights = flights_for(model.card.encoder.schedule)
        probabilities = model.predict_proba(columns_of(flights))
        profile = drift.profile(flights, probabilities, model.threshold)
        card["profile"] = profile.to_json()
        path.write_text(json.dumps(card, indent=2), encoding="utf-8")


def columns_of(flights: list[Flight]) -> Columns:
    """Flights of one contract as the columns the model and the drift window take."""
    minimal = Columns(
        [f.operator for f in flights], [f.flight_type for f in flights], [f.month for f in flights]
    )
    schedules = [f.schedule for f in flights if f.schedule is not None]
    if not schedules:
        return minimal
    return Columns(
        minimal.operator,
        minimal.flight_type,
        minimal.month,
        np.array([s.departure for s in schedules], dtype="datetime64[m]"),
        [s.destination for s in schedules],
        [s.airline for s in schedules],
        [s.number for s in schedules],
    )


def refuse_access(monkeypatch: pytest.MonkeyPatch, refused: Path, method: str) -> None:
    """`refused`'s Path `method` (stat, read_bytes, ...) raises PermissionError, as for a file
    its permissions (or its directory's) refuse: chmod 000 does not stop root, who runs the
    tests."""
    real = getattr(Path, method)

    def refusing(path: Path, *args: Any, **kwargs: Any) -> Any:
        if path == refused:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(Path, method, refusing)


def fifo_in_place(path: Path) -> Path:
    """Replaces the file `path` by a named pipe, as `mkfifo` on a release does."""
    path.unlink()
    os.mkfifo(path)
    return path


def without_blocking(call: Callable[[], T], fifos: list[Path]) -> T:
    """What `call` returns or raises, run in a thread given 20 s: a call that blocks on one of
    `fifos` (in open or read) fails the test instead of hanging it, and is then released by a
    writer."""
    outcome: list[T] = []
    raised: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as error:  # handed to the test thread
            raised.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive():
        for fifo in fifos:  # a writer that opens and closes lets the blocked reader return
            with contextlib.suppress(OSError):  # no reader left to release
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail(f"blocked on a FIFO for 20 s: {fifos}")
    if raised:
        raise raised[0]
    return outcome[0]

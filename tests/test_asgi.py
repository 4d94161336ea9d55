"""benchmarks.asgi, the in-process driver of `make bench`: it relies on asyncio's event-loop
hooks (`asyncio._set_running_loop`, and `stop()` before `run_forever()` running one pass), so a
Python whose asyncio changed them fails here rather than skewing the benchmarks."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from app.main import create_app
from app.settings import Settings
from benchmarks.asgi import event_loop, request_caller, started
from benchmarks.conftest import SIZES, in_process_settings, infer_body, make_flights, predict_body
from benchmarks.noop_app import create_app as create_noop_app
from tests.conftest import MODELS_DIR

JSON = {"content-type": "application/json"}


def test_a_request_that_never_waits_is_run_to_its_answer() -> None:
    call = request_caller(create_noop_app(), "POST", "/predict", b"{}", headers=JSON)
    for _ in range(2):  # the same caller again: a fresh answer each time
        messages = call()
        assert [m["type"] for m in messages] == ["http.response.start", "http.response.body"]
        assert messages[0]["status"] == 200


@pytest.mark.parametrize("microbatch", [True, False])
def test_a_full_schedule_flight_gets_its_merge_in_one_loop_pass(microbatch: bool) -> None:
    """Merged (app.inference.microbatch), the request waits for a callback of the loop: one pass
    runs it. The loop is the running loop while the app runs (its metrics ask for it)."""
    app = create_app(Settings(models_dir=MODELS_DIR, microbatch=microbatch))
    with started(app):
        app.state.scorer.in_flight = None  # no server's count: every request may merge
        body = orjson.dumps({"flights": make_flights(3, True)})
        call = request_caller(app, "POST", "/predict", body, headers=JSON)
        for _ in range(2):
            messages = call()
            assert messages[0]["status"] == 200
            assert len(orjson.loads(messages[1]["body"])["predict"]) == 3
    with pytest.raises(RuntimeError):  # left as found: no loop running
        asyncio.get_running_loop()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/predict", predict_body("full", max(SIZES))),
        ("/predict", predict_body("minimal", max(SIZES))),
        ("/v2/models/delay-minimal/infer", infer_body(max(SIZES))),
    ],
    ids=["predict-full", "predict-minimal", "infer-json"],
)
def test_the_benchmarks_largest_requests_run_in_process_again_and_again(
    path: str, body: bytes
) -> None:
    """`make bench` times each request many times: none may wait for the batch thread. An OIP
    body of OFFLOAD_BYTES or more was decoded there (af01a01), and `make bench` failed at
    `test_infer_json[1000]` (49 of 50 calls refused) until its app set OFFLOAD_BYTES too."""
    with started(create_app(in_process_settings())) as app:
        call = request_caller(app, "POST", path, body, headers=JSON)
        for _ in range(20):
            assert call()[0]["status"] == 200


def test_started_scores_a_predict_request_as_alone_in_its_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One request at a time, as a worker's server would say of a lone request: no loop pass."""
    app = create_app(Settings(models_dir=MODELS_DIR))
    with started(app):
        body = orjson.dumps({"flights": make_flights(1, True)})
        call = request_caller(app, "POST", "/predict", body, headers=JSON)
        with monkeypatch.context() as patch:
            patch.setattr(event_loop(), "run_forever", None)  # a pass would fail
            messages = call()
        assert messages[0]["status"] == 200
        assert app.state.scorer.in_flight() == 1


def test_any_other_wait_is_refused() -> None:
    async def sleeper(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0.01)  # a timer: one loop pass does not end it

    with pytest.raises(RuntimeError, match="suspended: not measurable in-process"):
        request_caller(sleeper, "GET", "/")()

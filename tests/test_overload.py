"""app.server.overload: a request marked over the in-flight bound is answered 503 + Retry-After at
once and counted; a large body is scored off the event loop, so a small request is not held behind
it."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx2 as httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.server.overload import (
    EARLY_GRACE,
    OFFLOAD_BYTES,
    RETRY_AFTER,
    SHED_ROUTE,
    BatchThread,
    hold_until,
    sender,
    shed_response,
)
from app.settings import Settings
from tests.conftest import MODELS_DIR
from tests.test_server import FULL_FLIGHTS

SMALL = {"flights": [{"OPERA": "Grupo LATAM", "TIPOVUELO": "N", "MES": 3}]}
FULL = FULL_FLIGHTS[0]


def test_the_shed_answer_is_a_complete_http_response() -> None:
    answer = shed_response(b"abc", close=False)
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 503 Service Unavailable"
    headers = dict(line.split(b": ", 1) for line in lines[1:])
    assert headers[b"retry-after"] == b"%d" % RETRY_AFTER
    assert headers[b"x-request-id"] == b"abc"
    assert int(headers[b"content-length"]) == len(body)
    assert orjson.loads(body)["error"].startswith("overloaded")
    assert b"connection: close" in shed_response(b"abc", close=True)


def test_a_request_before_the_retry_after_has_elapsed_is_held_until_it_has() -> None:
    assert hold_until(None, 100.0) is None  # never shed: answered as any request
    assert hold_until(100.0, 100.0) == 100.0 + RETRY_AFTER  # re-sent at once
    early = 100.0 + RETRY_AFTER - EARLY_GRACE - 0.001
    assert hold_until(100.0, early) == 100.0 + RETRY_AFTER
    assert hold_until(100.0, early + 0.002) is None  # within the grace: honoured
    assert hold_until(0.0, RETRY_AFTER - EARLY_GRACE) is None  # the grace's edge: honoured
    assert hold_until(100.0, 100.0 + RETRY_AFTER + 5) is None


def test_the_grace_is_a_clock_error_not_a_discount() -> None:
    """The literal numbers (the test above reads them from the module): a client that waits 0.9 s
    of the 1-s Retry-After honours it; one back after 0.85 s, or at once, is held to the second."""
    assert hold_until(0.0, 0.9) is None
    assert hold_until(0.0, 0.85) == 1.0
    assert hold_until(0.0, 0.0) == 1.0


def test_the_sender_is_the_client_a_proxy_names_first() -> None:
    assert sender([(b"host", b"x"), (b"content-length", b"2")]) is None  # no proxy said
    assert sender([(b"x-forwarded-for", b"203.0.113.1, 10.0.0.1")]) == b"203.0.113.1, 10.0.0.1"
    assert sender([(b"x-real-ip", b"203.0.113.1"), (b"x-forwarded-for", b"b")]) == b"203.0.113.1"
    assert sender([(b"forwarded", b"for=203.0.113.1")]) == b"for=203.0.113.1"
    assert sender([(b"x-forwarded-host", b"a"), (b"via", b"1.1 p")]) is None  # not a client


def test_shed_answers_are_counted_under_their_own_route() -> None:
    from app.observability.metrics import exposition, observe_latency

    observe_latency(SHED_ROUTE, "POST", 503, 0.0)  # what app.server.protocol does for each
    samples = {
        (s.name, s.labels.get("route"), s.labels.get("status")): s.value
        for family in text_string_to_metric_families(exposition()[0].decode())
        for s in family.samples
    }
    assert samples[("http_requests_total", SHED_ROUTE, "503")] >= 1
    assert SHED_ROUTE == "<shed>"  # the label docs/serving.md tells dashboards to query


def test_batches_from_the_size_on_run_in_the_batch_thread() -> None:
    batches = BatchThread(min_flights=100)
    here = threading.get_ident()

    async def both() -> tuple[int, int]:
        return (
            await batches.run(99, threading.get_ident),
            await batches.run(100, threading.get_ident),
        )

    inline, offloaded = asyncio.run(both())
    assert inline == here
    assert offloaded != here


def test_the_batch_thread_is_one_thread() -> None:
    """Batches queue behind one another instead of multiplying GIL contention: a second
    batch, sent while the first still runs, runs after it on the same thread, not beside it."""
    batches = BatchThread(min_flights=1)
    first_started, release = threading.Event(), threading.Event()

    def first() -> int:
        first_started.set()
        release.wait(timeout=10)
        return threading.get_ident()

    async def both() -> list[int]:
        one = asyncio.ensure_future(batches.run(1, first))
        await asyncio.get_running_loop().run_in_executor(None, first_started.wait, 10)
        two = asyncio.ensure_future(batches.run(1, threading.get_ident))
        await asyncio.sleep(0)  # the second is handed to the executor while the first runs
        release.set()
        return [await one, await two]

    one, two = asyncio.run(both())
    assert one == two


@pytest.mark.parametrize(("offload_flights", "small_first"), [(256, True), (10**6, False)])
def test_a_small_request_is_not_held_behind_a_large_batch(
    offload_flights: int, small_first: bool
) -> None:
    """The largest batch the limits admit, then a one-flight request: with the batch thread the
    small one is answered first; with everything on the event loop (offload off) it waits."""
    app = create_app(Settings(models_dir=MODELS_DIR, offload_flights=offload_flights))
    large = orjson.dumps({"flights": [FULL] * 7_000})
    assert len(large) < Settings().max_body_bytes
    finished: list[str] = []

    async def scenario() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:

                async def post(name: str, content: bytes) -> None:
                    headers = {"content-type": "application/json"}
                    response = await client.post("/predict", content=content, headers=headers)
                    assert response.status_code == 200
                    finished.append(name)

                big = asyncio.create_task(post("large", large))
                await asyncio.sleep(0.01)  # the large one is being scored
                await post("small", orjson.dumps(SMALL))
                await big

    asyncio.run(scenario())
    assert finished == (["small", "large"] if small_first else ["large", "small"])


def test_observers_of_batch_thread_predictions_run_on_the_event_loop() -> None:
    from app.server.overload import on_event_loop

    seen: list[tuple[Any, int]] = []

    def observe(model: Any, columns: Any, prediction: Any) -> None:
        seen.append(((model, columns, prediction), threading.get_ident()))

    async def scenario() -> int:
        observed = on_event_loop(observe, asyncio.get_running_loop())
        observed(1, 2, 3)  # type: ignore[arg-type]  # on the loop: at once
        await asyncio.get_running_loop().run_in_executor(None, observed, 4, 5, 6)  # type: ignore[arg-type]  # off the loop: later
        await asyncio.sleep(0)
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    assert seen == [((1, 2, 3), loop_thread), ((4, 5, 6), loop_thread)]


@pytest.mark.parametrize(("min_bytes", "small_first"), [(OFFLOAD_BYTES, True), (10**9, False)])
def test_a_small_request_is_not_held_behind_a_large_oip_body(
    min_bytes: int, small_first: bool
) -> None:
    """Found by a hostile-client probe: a 1-MiB OIP body of one-integer rows (75,000 flights
    of three inputs, `[[0],[0],...]`) was decoded on the event loop, about 100 ms before its
    413, while single flights waited (p99 109 ms beside two connections sending such bodies
    back to back, WORKERS=1). Decoded in the batch thread, a one-flight request sent meanwhile is
    answered first; with the threshold out of reach, as before, it waits. The 413 is the same."""
    app = create_app(Settings(models_dir=MODELS_DIR))
    app.state.batches.min_bytes = min_bytes
    rows = 74_800

    def tensor(name: str, datatype: str, value: str) -> bytes:
        data = ",".join([f"[{value}]"] * rows)
        head = f'{{"name":"{name}","datatype":"{datatype}","shape":[{rows},1],"data":['
        return (head + data + "]}").encode()

    large = b'{"inputs":[%s,%s,%s]}' % (
        tensor("OPERA", "BYTES", '""'),
        tensor("TIPOVUELO", "BYTES", '""'),
        tensor("MES", "INT64", "0"),
    )
    assert len(large) < Settings().max_body_bytes
    small = orjson.dumps(
        {
            "inputs": [
                {"name": "OPERA", "datatype": "BYTES", "shape": [1], "data": ["Grupo LATAM"]},
                {"name": "TIPOVUELO", "datatype": "BYTES", "shape": [1], "data": ["N"]},
                {"name": "MES", "datatype": "INT64", "shape": [1], "data": [3]},
            ]
        }
    )
    finished: list[str] = []

    async def scenario() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:

                async def post(name: str, content: bytes, status: int) -> dict[str, Any]:
                    headers = {"content-type": "application/json"}
                    url = "/v2/models/delay-minimal/infer"
                    response = await client.post(url, content=content, headers=headers)
                    assert response.status_code == status
                    finished.append(name)
                    answer: dict[str, Any] = response.json()
                    return answer

                big = asyncio.create_task(post("large", large, 413))
                await asyncio.sleep(0.01)  # the large one is being decoded
                await post("small", small, 200)
                assert (await big)["error"] == (
                    f"{rows} flights in one request; the limit is {Settings().max_flights}"
                )

    asyncio.run(scenario())
    assert finished == (["small", "large"] if small_first else ["large", "small"])

"""What the reliability edge costs per request, in-process: `python -m benchmarks.edge_overhead`.

* `app.observability.request_id.RequestIdMiddleware` around a constant ASGI app, against the bare
  app, with and without an incoming X-Request-ID (benchmarks.asgi's caller: no server, no event
  loop);
* `app.server.protocol.GuardedHttpToolsProtocol` against uvicorn's `HttpToolsProtocol`: one
  keep-alive connection fed the same POST /predict request over and over on a uvloop loop, with a
  fake transport and a constant app, so the difference is the subclass alone.

Prints ns per request, best of --rounds; the figures go into reports/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.observability.request_id import RequestIdMiddleware
from app.server.protocol import GuardedHttpToolsProtocol
from benchmarks.asgi import request_caller
from benchmarks.stress import load_average

BODY = b'{"flights":[{"OPERA":"Grupo LATAM","TIPOVUELO":"N","MES":7}]}'
REQUEST = (
    b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n" % len(BODY)
) + BODY
_ANSWER_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", b"15")],
}
_ANSWER_BODY = {"type": "http.response.body", "body": b'{"predict":[0]}'}


async def constant_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(_ANSWER_START)
    await send(_ANSWER_BODY)


def best(functions: dict[str, Callable[[], object]], count: int, rounds: int) -> dict[str, float]:
    """ns per call of each function, best of `rounds` runs of `count` calls, the functions
    interleaved round by round so that machine noise hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            start = time.perf_counter_ns()
            for _ in range(count):
                function()
            times[name].append((time.perf_counter_ns() - start) / count)
    return {name: min(values) for name, values in times.items()}


def middleware(count: int, rounds: int) -> dict[str, float]:
    wrapped_app = RequestIdMiddleware(constant_app)
    return best(
        {
            "bare app": request_caller(constant_app, "POST", "/predict", BODY),
            "with RequestIdMiddleware, generated ID": request_caller(
                wrapped_app, "POST", "/predict", BODY
            ),
            "with RequestIdMiddleware, incoming ID": request_caller(
                wrapped_app, "POST", "/predict", BODY, headers={"X-Request-ID": "lb-7f3a9c2e-0001"}
            ),
        },
        count,
        rounds,
    )


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def write(self, data: Any) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _protocol_ns(protocol_class: type[HttpToolsProtocol], count: int) -> float:
    config = Config(app=constant_app, http="httptools", lifespan="off", log_config=None)
    config.load()
    protocol = protocol_class(config, ServerState(), {}, asyncio.get_running_loop())
    transport = FakeTransport()
    protocol.connection_made(transport)
    start = time.perf_counter_ns()
    for _ in range(count):
        protocol.data_received(REQUEST)
        await asyncio.sleep(0)  # the request's task runs and answers
        await asyncio.sleep(0)
    elapsed = (time.perf_counter_ns() - start) / count
    if transport.closing or transport.written < count * 50:
        raise RuntimeError("the requests were not answered")
    protocol.connection_lost(None)
    return elapsed


def protocol(count: int, rounds: int) -> dict[str, float]:
    results: dict[str, list[float]] = {
        "uvicorn HttpToolsProtocol": [],
        "GuardedHttpToolsProtocol": [],
    }
    for _ in range(rounds):  # interleaved, so that machine noise hits both alike
        for name, cls in (
            ("uvicorn HttpToolsProtocol", HttpToolsProtocol),
            ("GuardedHttpToolsProtocol", GuardedHttpToolsProtocol),
        ):
            results[name].append(uvloop.run(_protocol_ns(cls, count)))
    return {name: min(values) for name, values in results.items()}


class _NoParse:
    """A parser that parses nothing: what is left of data_received is the code around it."""

    def feed_data(self, data: bytes) -> None:
        pass


def protocol_wrapper(count: int, rounds: int) -> dict[str, float]:
    """What GuardedHttpToolsProtocol.data_received adds around parsing, alone: the httptools
    parser replaced by a no-op in both, after a request has been served (the usual state)."""

    async def ready_protocols() -> list[HttpToolsProtocol]:
        config = Config(app=constant_app, http="httptools", lifespan="off", log_config=None)
        config.load()
        loop = asyncio.get_running_loop()
        protocols = []
        for cls in (HttpToolsProtocol, GuardedHttpToolsProtocol):
            protocol = cls(config, ServerState(), {}, loop)
            protocol.connection_made(FakeTransport())
            protocol.data_received(REQUEST)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            protocol.parser = _NoParse()  # type: ignore[assignment]
            protocols.append(protocol)
        return protocols

    stock, guarded = uvloop.run(ready_protocols())
    return best(
        {
            "uvicorn's data_received, parsing nothing": lambda: stock.data_received(REQUEST),
            "GuardedHttpToolsProtocol.data_received": lambda: guarded.data_received(REQUEST),
        },
        count * 10,
        rounds,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.edge_overhead", description=__doc__)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    for title, figures in (
        ("ASGI middleware", middleware(args.count, args.rounds)),
        (
            "HTTP protocol (per request on a keep-alive connection)",
            protocol(args.count, args.rounds),
        ),
        ("HTTP protocol, the code around parsing", protocol_wrapper(args.count, args.rounds)),
    ):
        print(title)
        base = next(iter(figures.values()))
        for name, ns in figures.items():
            print(f"  {name:50s} {ns:8.0f} ns   {ns - base:+6.0f} ns")
    print("load average:", load_average())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

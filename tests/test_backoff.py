"""The clients `make overload` measures with: wrk/backoff.lua and the probe of benchmarks.chaos
with `backoff` wait a 503's Retry-After before their next request; wrk/predict.lua and the
probe without it re-send at once. Against a stub that sheds every request (Retry-After: 1); and
the wrk scripts send the headers wrk's `-H` names (`Connection: close`, for clients that make a
connection per request)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.chaos import accounting_load, retry_after

ROOT = Path(__file__).resolve().parent.parent
SHED = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"content-length: 2\r\nretry-after: 1\r\n\r\n{}"
)
CONNECTIONS = 2


class SheddingStub:
    """Answers every request on 127.0.0.1 with SHED, keep-alive, and counts them."""

    def __init__(self) -> None:
        self.requests = 0
        self.heads: list[bytes] = []
        self.loop = asyncio.new_event_loop()
        self.server = self.loop.run_until_complete(asyncio.start_server(self.serve, "127.0.0.1", 0))
        self.port: int = self.server.sockets[0].getsockname()[1]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":", 1)[1]))
                self.requests += 1
                writer.write(SHED)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


@pytest.fixture
def stub() -> Iterator[SheddingStub]:
    server = SheddingStub()
    server.thread.start()
    yield server
    server.stop()


def test_retry_after_reads_the_delta_seconds_of_a_head() -> None:
    assert retry_after(SHED.split(b"\r\n\r\n")[0] + b"\r\n\r\n") == 1
    assert retry_after(b"HTTP/1.1 503 x\r\nRetry-After:  7\r\n\r\n") == 7
    assert retry_after(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n") == 0
    assert retry_after(b"HTTP/1.1 503 x\r\nretry-after: Wed, 21 Oct 2026 07:28:00 GMT\r\n\r\n") == 0


def _wrk(stub: SheddingStub, tmp_path: Path, script: str, seconds: int, *options: str) -> None:
    """Runs wrk with `script` of wrk/ against the stub for `seconds`."""
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not on PATH (apt-get install wrk)")
    bodies = tmp_path / "bodies.jsonl"
    bodies.write_text('{"flights":[]}\n')
    command = [
        "wrk", "--threads=1", f"--connections={CONNECTIONS}", f"--duration={seconds}s", *options,
        f"--script={ROOT / 'wrk' / script}", f"http://127.0.0.1:{stub.port}",
    ]  # fmt: skip
    run = subprocess.run(
        command, cwd=ROOT, env={"WRK_BODIES": str(bodies), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize(("script", "seconds"), [("backoff.lua", 2), ("predict.lua", 1)])
def test_wrk_backs_off_only_with_the_backoff_script(
    stub: SheddingStub, tmp_path: Path, script: str, seconds: int
) -> None:
    _wrk(stub, tmp_path, script, seconds)
    if script == "backoff.lua":
        # a request at 0 s, one after each 1-s wait: at most 3 per connection in 2 s
        assert 0 < stub.requests <= 3 * CONNECTIONS, stub.requests
    else:
        assert stub.requests > 10 * CONNECTIONS, stub.requests


@pytest.mark.parametrize("script", ["predict.lua", "batch.lua", "backoff.lua"])
def test_the_wrk_scripts_send_the_headers_of_wrk_options(
    stub: SheddingStub, tmp_path: Path, script: str
) -> None:
    """wrk.format adds no -H header to the headers a script gives it: a `-H "Connection: close"`
    run measured keep-alive connections, saying nothing."""
    _wrk(stub, tmp_path, script, 1, "--header=Connection: close", "--header=X-Probe: 1")
    assert stub.heads
    for head in stub.heads:
        assert b"\r\nConnection: close\r\n" in head, head
        assert b"\r\nX-Probe: 1\r\n" in head, head
        assert b"\r\nContent-Type: application/json\r\n" in head, head


def test_a_header_of_wrk_options_replaces_the_scripts_own_whatever_its_case(
    stub: SheddingStub, tmp_path: Path
) -> None:
    """A lowercase `-H "content-type: ..."` was sent beside the script's Content-Type: two
    Content-Type headers, which a server may refuse or read either of."""
    _wrk(stub, tmp_path, "predict.lua", 1, "--header=content-type: application/json; charset=utf-8")
    assert stub.heads
    for head in stub.heads:
        assert head.lower().count(b"\r\ncontent-type:") == 1, head
        assert b"\r\ncontent-type: application/json; charset=utf-8\r\n" in head, head


@pytest.mark.parametrize(("backoff", "seconds"), [(True, 2.0), (False, 1.0)])
def test_the_probe_backs_off_only_when_asked(
    stub: SheddingStub, backoff: bool, seconds: float
) -> None:
    tally = accounting_load(stub.port, seconds, CONNECTIONS, b"{}", backoff)
    shed = tally.answered.get("503", 0)
    assert shed == stub.requests
    if backoff:
        assert 0 < shed <= 3 * CONNECTIONS, shed
    else:
        assert shed > 10 * CONNECTIONS, shed

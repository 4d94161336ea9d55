"""app.grpc.servicer, in a process of its own: its generated messages and tritonclient's cannot
share one (app/grpc/__init__.py)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import MODELS_DIR

# ModelInfer's body (the method `rpc` wraps) called as `rpc` calls it, the message's size told in
# MESSAGE_BYTES, with codec.decode_request noting the thread it runs in.
SCRIPT = """
import asyncio, json, sys, threading
from pathlib import Path
from starlette.datastructures import State
from app.dataplane import DataPlane
from app.errors import BadRequest
from app.grpc import codec, grpc_predict_v2_pb2 as pb
from app.grpc.calls import MESSAGE_BYTES
from app.grpc.servicer import InferenceServicer
from app.inference.flights import FlightValidator
from app.inference.microbatch import Scorer
from app.inference.model import ModelSet
from app.server.overload import OFFLOAD_BYTES, BatchThread

models = ModelSet.load(Path(sys.argv[1]))
state = State()
state.models, state.batches = models, BatchThread(256)
state.validator = FlightValidator(models.operators, 10_000)
state.scorer = Scorer(state.batches, merge=True)
servicer = InferenceServicer(DataPlane(state), 64, 30.0)
threads = []
decode = codec.decode_request
def noted(*args):
    threads.append(threading.get_ident())
    return decode(*args)
codec.decode_request = noted
request = pb.ModelInferRequest(model_name="delay-minimal")
for name, datatype, value in (("OPERA", "BYTES", b"Grupo LATAM"), ("TIPOVUELO", "BYTES", b"N")):
    request.inputs.add(name=name, datatype=datatype, shape=[1]).contents.bytes_contents.append(value)
request.inputs.add(name="MES", datatype="INT64", shape=[1]).contents.int64_contents.append(3)
wrong = pb.ModelInferRequest()
wrong.CopyFrom(request)
wrong.inputs[2].shape[:] = [2]

async def main():
    labels, errors = [], []
    for size in (request.ByteSize(), OFFLOAD_BYTES):
        MESSAGE_BYTES.set(size)
        answer = await InferenceServicer.ModelInfer.__wrapped__(servicer, request, None)
        labels.append(list(answer.raw_output_contents[0]))
        try:
            await InferenceServicer.ModelInfer.__wrapped__(servicer, wrong, None)
        except BadRequest as error:
            errors.append(str(error))
    loop = threading.get_ident()
    print(json.dumps({"labels": labels, "errors": errors, "in_loop": [t == loop for t in threads]}))

asyncio.run(main())
"""


def test_a_large_message_is_decoded_in_the_batch_thread_with_the_same_answers() -> None:
    """Found by a hostile-client probe: ModelInfer decoded every message's tensors on the event
    loop, 20-30 ms for a 1-MiB one of empty strings (raw varied-length strings: a Python step
    per element) while the worker's other calls and requests waited."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(MODELS_DIR)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(done.stdout)
    assert result["in_loop"] == [True, True, False, False]  # two calls of each size
    assert result["labels"][0] == result["labels"][1]
    assert result["errors"] == ["input 'MES' has 1 elements; its shape [2] says 2"] * 2


# Calls made as grpcio makes them, through `rpc`, each left in flight (its done callback, which
# grpcio runs once the answer is sent, never runs): the status code each call ended with.
SHED_SCRIPT = """
import asyncio, json
import grpc
from app.grpc import grpc_predict_v2_pb2 as pb
from app.grpc.servicer import InferenceServicer

class Plane:
    def ready(self):
        return True

    def server_metadata(self):
        return {"name": "latam-delay", "version": "1", "extensions": []}

class Context:
    def __init__(self):
        self.code = grpc.StatusCode.OK

    def invocation_metadata(self):
        return ()

    def set_trailing_metadata(self, metadata):
        pass

    def add_done_callback(self, callback):
        pass

    async def read(self):
        return b""

    async def abort(self, code, details, trailer):
        self.code = code
        raise grpc.aio.AbortError()

async def main():
    servicer = InferenceServicer(Plane(), 1, 30.0)
    codes = []
    for method in ("ServerMetadata", "ServerMetadata", "ServerLive", "ServerReady"):
        context = Context()
        try:
            await getattr(servicer, method)(None, context)
        except grpc.aio.AbortError:
            pass
        codes.append(context.code.name)
    print(json.dumps(codes))

asyncio.run(main())
"""


def test_max_in_flight_calls_are_answered_and_the_probes_past_them_too() -> None:
    """A fresh servicer holds no call: its first MAX_IN_FLIGHT calls are served and the next is
    UNAVAILABLE; ServerLive and ServerReady, probes as grpc.health.v1's, are never shed."""
    done = subprocess.run(
        [sys.executable, "-c", SHED_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(done.stdout) == ["OK", "UNAVAILABLE", "OK", "OK"]

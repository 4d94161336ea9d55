"""Micro-batching: the onnxruntime calls of a worker's concurrent requests, merged.

A worker's requests are tasks on one event loop; the requests whose bodies arrived in the same
poll run one after another in one pass of the loop. A request that onnxruntime scores (its
flights all full-schedule, or all minimal with TABULATE_MINIMAL=0; on `/predict`, the OIP route
or gRPC) and that is smaller than a batch for the batch thread queues its flights here and
waits. The first one to queue for a model schedules the merge with `call_soon`, which runs after
every task of that pass has queued: one onnxruntime call for all of them, and each request gets
its own slice of the answer. When the merge comes up while the server counts more requests in
flight in its worker than are queued (`Scorer.in_flight`, set by app.server.worker from
app.server.protocol's count: requests read in the loop's last poll, whose tasks run in the next
pass), it waits that one pass more, once, and takes them too: in a server under load a merge
is then about twice as large, and an onnxruntime call there costs several times what it does in
a hot loop, most of it per call rather than per flight (docs/performance.md). No window to wait
out: a request alone is scored alone, one or two loop passes later; and a `/predict` request
that the server says is alone in its worker is scored at once, without that pass: in-process,
the pass, its future and the merge's bookkeeping were a fifth of a full-schedule request's time.

A merged flight's probability is its probability alone, to the last bit: the served graphs'
onnxruntime kernels give a row the same float32 whatever rows share its call (tests/test_lean.py,
tests/test_microbatch.py; over the wire, tests/test_transports.py). Until the twenty-sixth session
a blend's Log did not (export.lean.LOG_COLUMNS): 163 of 2,000 full-schedule flights scored alone
were 1 ulp from their value in a batch, so a flight's answer depended on the requests merged with
it. That needs one onnxruntime thread a session (ORT_THREADS=1, the default): with more, the tree
ensembles sum their trees in an order that depends on the rows.

Merging saves, per request, most of the fixed cost of an onnxruntime call and of the feature
encoder's numpy work (docs/performance.md). Its cost was the tail: the waiting requests' objects
outlive the collections of the young generation, so full collections came every few hundred
milliseconds and each walked every object of the worker (25-45 ms): the p99 doubled. app.main
therefore freezes the objects of start-up (`gc.freeze`): a full collection then walks only the
requests' objects.

Table answers (minimal flights, by default), batches mixing both contracts and large batches
are scored as without it.

Each merged call is observed in the `microbatch_call_requests` histogram (app.observability.metrics)
with the number of requests it scored: its sum against the requests served is the share merged; a
request scored at once, alone in its worker, is in no call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from app.inference.flights import Batch, Columns
from app.inference.model import ModelSet, OnnxModel, Prediction
from app.observability.metrics import observe_merge
from app.server.overload import BatchThread

_Waiting = tuple[Columns, "asyncio.Future[Prediction]"]


class Scorer:
    """How a worker scores its requests' flights: large batches in its batch thread
    (app.server.overload), the onnxruntime ones of concurrent requests merged (when `merge`), the
    rest at once."""

    def __init__(self, batches: BatchThread, merge: bool) -> None:
        self.batches = batches
        self.merge = merge
        self._waiting: dict[OnnxModel, list[_Waiting]] = {}
        self.in_flight: Callable[[], int] | None = None
        """public: the HTTP requests in flight in this worker, this one included (app.server.worker
        sets it from app.server.protocol's count); None (no server says): every request may
        merge."""

    async def predict(self, models: ModelSet, batch: Batch) -> Prediction:
        """A `/predict` body's flights."""
        if self.batches.offloads(batch.size):
            return await self.batches.run(batch.size, models.predict, batch)
        model = models.onnxruntime_model(batch) if self.merge else None
        in_flight = self.in_flight
        if model is None or (in_flight is not None and in_flight() <= 1):
            # the table's answers, a mixed batch, no merging, or nothing to merge with (no
            # other request of this worker has started): scored at once
            return models.predict(batch)
        return await self.score(models, model, batch.single())

    async def score(self, models: ModelSet, model: OnnxModel, columns: Columns) -> Prediction:
        """Flights of one model, fewer than a batch for the batch thread (the caller sends
        those there), merged when onnxruntime scores them: also the OIP route's and gRPC's
        (app.dataplane)."""
        if not self.merge or model.tabulated:
            return models.predict_with(model, columns)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Prediction] = loop.create_future()
        waiting = self._waiting.get(model)
        if waiting is None:  # one queue per model (a reload's new models get their own)
            waiting = self._waiting[model] = []
            loop.call_soon(self._score, models, model, True)
        waiting.append((columns, future))
        return await future

    def _score(self, models: ModelSet, model: OnnxModel, may_wait: bool = False) -> None:
        in_flight = self.in_flight
        if may_wait and in_flight is not None and in_flight() > len(self._waiting[model]):
            # requests the server has read that have not queued yet: one pass more, once
            asyncio.get_running_loop().call_soon(self._score, models, model)
            return
        waiting = self._waiting.pop(model)
        parts = [columns for columns, _ in waiting]
        results: Sequence[Prediction | Exception]
        try:
            results = models.predict_each(model, parts)
        except Exception as error:  # any request's flights may be the cause: each scored alone
            results = [error] if len(parts) == 1 else [_alone(models, model, p) for p in parts]
        else:
            observe_merge(model, len(parts))
        for (_, future), result in zip(waiting, results, strict=True):
            if future.cancelled():  # its request was cancelled meanwhile (shutdown)
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)


def _alone(models: ModelSet, model: OnnxModel, columns: Columns) -> Prediction | Exception:
    try:
        return models.predict_with(model, columns)
    except Exception as error:  # handed to its own request, which raises it as it would alone
        return error

"""The Open Inference Protocol's data plane: what the REST routes and the gRPC servicer both
serve (as MLServer's DataPlane). Transports only translate: their request into a model name,
version and `InferenceRequest`, and this module's answers or `ServiceError`s into theirs.

It reads the models from the app state at each call, so the same object serves before the
worker's lifespan has loaded them (NotReady: 503, UNAVAILABLE) and after.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version
from typing import Any, ParamSpec

from starlette.datastructures import State

from app.errors import NotFound, NotReady, quoted
from app.inference.flights import Columns, FlightValidator
from app.inference.microbatch import Scorer
from app.inference.model import ModelSet, OnnxModel, Prediction
from app.server.overload import BatchThread
from app.tensors import InferenceRequest, output_metadata

SERVER_NAME = "latam-delay"
EXTENSIONS = ("binary_tensor_data",)
PLATFORM = "onnxruntime_onnx"

P = ParamSpec("P")


class DataPlane:
    def __init__(self, state: State) -> None:
        self._state = state

    def models(self) -> ModelSet:
        models: ModelSet | None = getattr(self._state, "models", None)
        if models is None or not models.ready:
            raise NotReady("models are not loaded yet")
        return models

    def ready(self) -> bool:
        models: ModelSet | None = getattr(self._state, "models", None)
        return models is not None and models.ready

    def server_metadata(self) -> dict[str, Any]:
        return {
            "name": SERVER_NAME,
            "version": version(SERVER_NAME),
            "extensions": list(EXTENSIONS),
        }

    def model(self, name: str, wanted: str | None = None) -> OnnxModel:
        """The model named `name`; `wanted`, when given, must be its version."""
        models = self.models()
        model = models.by_name.get(name)
        if model is None:
            raise NotFound(f"no model named {quoted(name)}", models=sorted(models.by_name))
        if wanted is not None and wanted != model.version:
            raise NotFound(
                f"model {name!r} has no version {quoted(wanted)}", versions=[model.version]
            )
        return model

    def model_metadata(self, model: OnnxModel) -> dict[str, Any]:
        return {
            "name": model.name,
            "versions": [model.version],
            "platform": PLATFORM,
            "inputs": [
                {"name": name, "datatype": datatype, "shape": [-1]}
                for name, datatype in model.input_types.items()
            ],
            "outputs": output_metadata(),
            "card": model.card.raw,
        }

    async def decode(
        self,
        size: int,
        decode: Callable[P, InferenceRequest],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> InferenceRequest:
        """A transport's `decode` of its request of `size` bytes: in the batch thread from
        OFFLOAD_BYTES (app.server.overload), since a large body of tiny tensor elements is Python
        work of tens of milliseconds that would hold every other request of the worker."""
        batches: BatchThread = self._state.batches
        return await batches.decode(size, decode, *args, **kwargs)

    async def infer(self, model: OnnxModel, request: InferenceRequest) -> Prediction:
        """Large batches are scored in the worker's batch thread (app.server.overload), off the
        event loop, so that the worker keeps answering (and, for gRPC, taking in) other calls; the
        others with the concurrent requests of the same model (app.inference.microbatch). Over
        MAX_FLIGHTS is a 413 at once: the row checks that would say so built a dict per flight
        first, 80 ms of the batch thread for a 1-MiB request of 125,000."""
        batches: BatchThread = self._state.batches
        size = len(next(iter(request.columns.values())))
        validator: FlightValidator = self._state.validator
        validator.check_count(size)
        if batches.offloads(size):
            return await batches.run(size, self._infer, model, request)
        scorer: Scorer = self._state.scorer
        return await scorer.score(self.models(), model, self._columns(request))

    def _infer(self, model: OnnxModel, request: InferenceRequest) -> Prediction:
        return self.models().predict_with(model, self._columns(request))

    def _columns(self, request: InferenceRequest) -> Columns:
        validator: FlightValidator = self._state.validator
        columns = validator.columns(request.columns)
        if columns is None:  # a check failed: flight by flight, to name the first wrong one
            columns = validator.batch(request.rows()).single()
        return columns

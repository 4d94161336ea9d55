"""MLServer: a custom runtime serving one model on its Open Inference Protocol route.

`mlserver start <dir>` loads it from the model-settings.json that `launch` writes
(`"implementation": "benchmarks.peers.mlserver_runtime.DelayRuntime"`); the inputs arrive
decoded by MLServer's own codecs, as a user's custom runtime would take them.
"""

from __future__ import annotations

from typing import Any

from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse, RequestInput

from benchmarks.peers.scoring import TensorScorer


class DelayRuntime(MLModel):  # type: ignore[misc]
    async def load(self) -> bool:
        self._scorer = TensorScorer(self.settings.name)
        self._version = self._scorer.model.version
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        columns = {tensor.name: _decode(tensor) for tensor in payload.inputs}
        labels, probabilities = self._scorer.infer(columns)
        return InferenceResponse(
            model_name=self.name,
            model_version=self._version,
            outputs=[
                NumpyCodec.encode_output("label", labels),
                NumpyCodec.encode_output("proba", probabilities),
            ],
        )


def _decode(tensor: RequestInput) -> list[Any]:
    if tensor.datatype == "BYTES":
        return list(StringCodec.decode_input(tensor))
    return list(NumpyCodec.decode_input(tensor).reshape(-1).tolist())

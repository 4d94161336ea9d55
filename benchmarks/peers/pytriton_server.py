"""PyTriton: Triton's HTTP front end with the models as Python inference callables.

`python -m benchmarks.peers.pytriton_server --http-port N ...`: each model is bound with two
instances (Triton's workers) and no batching dimension, so an infer request's tensors have
shape [flights], as on the service's OIP route; Triton hands the callables numpy arrays.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from benchmarks.peers.scoring import TensorScorer

Requests = list[dict[str, np.ndarray]]


def infer_function(scorer: TensorScorer) -> Callable[[Requests], Requests]:
    def infer(requests: Requests) -> Requests:
        responses = []
        for request in requests:
            columns: dict[str, list[Any]] = {
                name: [v.decode() if isinstance(v, bytes) else v for v in values.tolist()]
                for name, values in request.items()
            }
            labels, probabilities = scorer.infer(columns)
            responses.append({"label": labels, "proba": probabilities})
        return responses

    return infer


def bind(triton: Triton, name: str, instances: int) -> None:
    scorers = [TensorScorer(name) for _ in range(instances)]
    inputs = [
        Tensor(name=field, dtype=np.int64 if datatype == "INT64" else bytes, shape=(-1,))
        for field, datatype in scorers[0].model.input_types.items()
    ]
    triton.bind(
        model_name=name,
        infer_func=[infer_function(scorer) for scorer in scorers],
        inputs=inputs,
        outputs=[
            Tensor(name="label", dtype=np.int64, shape=(-1,)),
            Tensor(name="proba", dtype=np.float32, shape=(-1,)),
        ],
        config=ModelConfig(batching=False),
        strict=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers.pytriton_server")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--instances", type=int, default=2, help="instances of each model")
    parser.add_argument("--workspace", required=True, help="Triton's model store and sockets")
    args = parser.parse_args()
    config = TritonConfig(
        http_address="127.0.0.1", http_port=args.http_port,
        grpc_address="127.0.0.1", grpc_port=args.grpc_port,
        metrics_address="127.0.0.1", metrics_port=args.metrics_port,
    )  # fmt: skip
    with Triton(config=config, workspace=args.workspace) as triton:
        for name in ("delay-minimal", "delay-full"):
            bind(triton, name, args.instances)
        triton.serve()


if __name__ == "__main__":
    main()

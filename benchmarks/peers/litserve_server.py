"""LitServe: a `/predict` API taking the service's own body, two inference workers.

`python -m benchmarks.peers.litserve_server --port N`: LitServe's defaults (as many HTTP
server processes as inference workers, its default queues), no client file written.
"""

from __future__ import annotations

import argparse
from typing import Any

import litserve as ls

from benchmarks.peers.scoring import PredictScorer


class DelayAPI(ls.LitAPI):  # type: ignore[misc]
    def setup(self, device: str) -> None:
        self.scorer = PredictScorer()

    def predict(self, x: Any) -> dict[str, list[int]]:
        return self.scorer.predict(x)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers.litserve_server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2, help="inference worker processes")
    args = parser.parse_args()
    server = ls.LitServer(DelayAPI(api_path="/predict"), accelerator="cpu",
                          workers_per_device=args.workers)  # fmt: skip
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()

"""BentoML: a `/predict` service taking the service's own body, two workers.

`bentoml serve benchmarks.peers.bentoml_service:Delay`: BentoML maps the body's `flights` key
to the API's argument and validates it with pydantic, as a user's service would; a sync API,
which BentoML runs in its thread pool.
"""

from __future__ import annotations

from typing import Any

import bentoml

from benchmarks.peers.scoring import PredictScorer


# Access log off, as the service's is by default (ACCESS_LOG).
@bentoml.service(workers=2, traffic={"timeout": 30}, logging={"access": {"enabled": False}})
class Delay:
    def __init__(self) -> None:
        self.scorer = PredictScorer()

    @bentoml.api  # type: ignore[untyped-decorator]
    def predict(self, flights: list[dict[str, Any]]) -> dict[str, list[int]]:
        return self.scorer.predict({"flights": flights})

-- wrk -s benchmarks/peers/wrk/oip-minimal.lua: Open Inference Protocol infer bodies of delay-minimal
-- ($WRK_BODIES, default build/wrk/oip-minimal.jsonl, written by benchmarks.peers.bodies).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "../../../wrk/common.lua").install(
  "oip-minimal", "build/wrk/oip-minimal.jsonl", "/v2/models/delay-minimal/infer", "outputs"
)

-- wrk -s benchmarks/peers/wrk/oip-full.lua: Open Inference Protocol infer bodies of delay-full
-- ($WRK_BODIES, default build/wrk/oip-full.jsonl, written by benchmarks.peers.bodies).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "../../../wrk/common.lua").install(
  "oip-full", "build/wrk/oip-full.jsonl", "/v2/models/delay-full/infer", "outputs"
)

-- wrk -s wrk/predict.lua: single-flight POST /predict bodies from $WRK_BODIES
-- (default build/wrk/minimal.jsonl; use build/wrk/full.jsonl for the full contract).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua").install("predict", "build/wrk/minimal.jsonl")

-- wrk -s wrk/batch.lua: POST /predict with 1000-flight bodies from $WRK_BODIES
-- (default build/wrk/batch.jsonl); each request scores a whole batch.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua").install("batch", "build/wrk/batch.jsonl")

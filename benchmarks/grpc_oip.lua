-- wrk -s benchmarks/grpc_oip.lua: REST OIP infer bodies ($WRK_BODIES) POSTed to $WRK_TARGET
-- (e.g. /v2/models/delay-minimal/infer); the REST rows of benchmarks/grpc_load.py.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "../wrk/common.lua").install(
  "oip", os.getenv("WRK_BODIES"), os.getenv("WRK_TARGET"), "outputs"
)

-- Shared by predict.lua and batch.lua: rotate through pre-built POST /predict requests and
-- print one JSON summary line that benchmarks/stress_report.py parses.
--
-- Bodies come from a JSONL file (one body per line, see benchmarks/bodies.py) named by the
-- WRK_BODIES environment variable. Every request is built once in init(), so request() is a
-- table lookup and wrk spends its CPU on the traffic, not on formatting.
-- WRK_CHECK=0 drops the response() hook (wrk then skips header/body parsing) at the price of
-- not seeing 3xx answers or wrong bodies, which wrk's own errors.status (> 399) misses.

local M = {}

-- Percentiles printed for the latency chart: 1..99, then the tail.
local DISTRIBUTION = {}
for p = 1, 99 do DISTRIBUTION[#DISTRIBUTION + 1] = p end
for _, p in ipairs({ 99.5, 99.9, 99.99, 100 }) do DISTRIBUTION[#DISTRIBUTION + 1] = p end

local function load_bodies(path)
  local file, err = io.open(path, "r")
  if not file then
    error("cannot read WRK_BODIES=" .. path .. ": " .. tostring(err))
  end
  local bodies = {}
  for line in file:lines() do
    if line:find("%S") then bodies[#bodies + 1] = line end
  end
  file:close()
  if #bodies == 0 then error("no bodies in " .. path) end
  return bodies
end

local function integer(x)
  return string.format("%.0f", x)
end

local function string_literal(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function object(fields)
  local parts = {}
  for _, field in ipairs(fields) do
    parts[#parts + 1] = string_literal(field[1]) .. ":" .. field[2]
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- Installs wrk's global hooks. `name` tags the summary; `default_path` is used without WRK_BODIES.
-- `target` (default /predict) is the path POSTed to; a 200 must contain `marker` (default
-- "predict"), e.g. "outputs" for an Open Inference Protocol infer route.
function M.install(name, default_path, target, marker)
  target = target or "/predict"
  local expected = '"' .. (marker or "predict") .. '"'
  local path = os.getenv("WRK_BODIES") or default_path
  local check = os.getenv("WRK_CHECK") ~= "0"

  -- setup() and done() run in wrk's main Lua state; the rest in each thread's own state.
  local threads = {}

  function setup(thread)
    thread:set("thread_index", #threads)
    threads[#threads + 1] = thread
  end

  local requests, position

  -- wrk.format adds none of wrk.headers (the -H options) to a table it is given: without them a
  -- `-H "Connection: close"` run sent keep-alive requests, silently. A -H header replaces the
  -- script's own of the same name in any case (header names are case-insensitive), not sent
  -- beside it.
  local function headers()
    local fields = { ["Content-Type"] = "application/json" }
    for name, value in pairs(wrk.headers) do
      for existing in pairs(fields) do
        if existing:lower() == name:lower() then fields[existing] = nil end
      end
      fields[name] = value
    end
    return fields
  end

  function init(args)
    requests = {}
    for i, body in ipairs(load_bodies(path)) do
      requests[i] = wrk.format("POST", target, headers(), body)
    end
    statuses = {}
    bad_bodies = 0
    if not check then response = nil end
  end

  -- Threads start at golden-ratio-spaced offsets, so no two send the same body at once.
  function request()
    if not position then
      position = math.floor(#requests * (((thread_index or 0) * 0.6180339887498949) % 1))
    end
    position = position % #requests + 1
    return requests[position]
  end

  function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
    if status == 200 and not body:find(expected, 1, true) then
      bad_bodies = bad_bodies + 1
    end
  end

  function done(summary, latency, _)
    local statuses_total, non_2xx, bad = {}, 0, 0
    for _, thread in ipairs(threads) do
      for status, count in pairs(thread:get("statuses") or {}) do
        statuses_total[status] = (statuses_total[status] or 0) + count
        if status < 200 or status > 299 then non_2xx = non_2xx + count end
      end
      bad = bad + (thread:get("bad_bodies") or 0)
    end
    local status_fields = {}
    for status, count in pairs(statuses_total) do
      status_fields[#status_fields + 1] = { tostring(status), integer(count) }
    end
    table.sort(status_fields, function(a, b) return a[1] < b[1] end)

    local points = {}
    for _, p in ipairs(DISTRIBUTION) do
      -- wrk's percentile(100) overflows its histogram and answers 0: the 100th is the max.
      local value = p < 100 and latency:percentile(p) or latency.max
      points[#points + 1] = "[" .. tostring(p) .. "," .. integer(value) .. "]"
    end
    local e = summary.errors
    local seconds = summary.duration / 1e6
    io.write(object({
      { "tool", '"wrk"' },
      { "script", string_literal(name) },
      { "bodies_file", string_literal(path) },
      { "threads", integer(#threads) },
      { "checked", check and "true" or "false" },
      { "duration_us", integer(summary.duration) },
      { "requests", integer(summary.requests) },
      { "bytes", integer(summary.bytes) },
      { "requests_per_s", string.format("%.2f", summary.requests / seconds) },
      { "errors", object({
        { "connect", integer(e.connect) },
        { "read", integer(e.read) },
        { "write", integer(e.write) },
        { "status", integer(e.status) },
        { "timeout", integer(e.timeout) },
      }) },
      { "statuses", object(status_fields) },
      { "non_2xx", check and integer(non_2xx) or "null" },
      { "bad_bodies", check and integer(bad) or "null" },
      { "latency_us", object({
        { "min", integer(latency.min) },
        { "mean", string.format("%.1f", latency.mean) },
        { "stdev", string.format("%.1f", latency.stdev) },
        { "p50", integer(latency:percentile(50)) },
        { "p90", integer(latency:percentile(90)) },
        { "p99", integer(latency:percentile(99)) },
        { "p99_9", integer(latency:percentile(99.9)) },
        { "max", integer(latency.max) },
      }) },
      { "distribution", "[" .. table.concat(points, ",") .. "]" },
    }), "\n")
  end
end

return M

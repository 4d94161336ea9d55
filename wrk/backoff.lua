-- wrk -s wrk/backoff.lua: predict.lua's single-flight POST /predict traffic from clients that
-- honour Retry-After, as the service's users are expected to: a connection answered 503 waits
-- the Retry-After seconds before its next request (benchmarks/overload.py, `make overload`).
--
-- wrk calls response() when an answer is complete and delay() before the connection's next
-- request, but gives Lua no handle on the connection. Each answer queues its wait (0 unless a
-- 503 named one) and each delay() takes the oldest: a connection's delay() follows its
-- response() in the order wrk's epoll reports the connections writable again, which is the
-- order they were answered, so the waits go to the connections that were shed. delay() also
-- runs before each connection's first request, when nothing is queued (0).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua").install("predict-backoff", "build/wrk/minimal.jsonl")

local count = response
local waits, first, last = {}, 1, 0

local function retry_after_ms(headers)
  for name, value in pairs(headers) do
    if name:lower() == "retry-after" then
      return (tonumber(value) or 0) * 1000
    end
  end
  return 0
end

function response(status, headers, body)
  count(status, headers, body)
  last = last + 1
  waits[last] = status == 503 and retry_after_ms(headers) or 0
end

function delay()
  if first > last then return 0 end
  local wait = waits[first]
  waits[first] = nil
  first = first + 1
  return wait
end

-- wrk script for loadtest/run: GET by default, or BENCH_METHOD=POST with a body of
-- BENCH_BODY_BYTES bytes (1 KiB). done() prints one JSON line the runner parses: requests,
-- duration (us), socket errors, non-2xx/3xx answers and latency percentiles (us).
-- BENCH_EXPECT=STATUS (the async case: 202) also counts every answer with another status as
-- a status error; only then is a response() hook defined, since it costs wrk a header table
-- per answer.
local method = os.getenv("BENCH_METHOD") or "GET"
local size = tonumber(os.getenv("BENCH_BODY_BYTES") or "1024")
local expect = tonumber(os.getenv("BENCH_EXPECT") or "")

wrk.method = method
if method ~= "GET" then
  wrk.body = string.rep("x", size)
  wrk.headers["Content-Type"] = "application/octet-stream"
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

if expect then
  wrong = 0
  function response(status, headers, body)
    if status ~= expect then
      wrong = wrong + 1
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local status_errors = e.status
  if expect then
    -- Every non-2xx/3xx is also another status: count each answer once.
    status_errors = 0
    for _, t in ipairs(threads) do
      status_errors = status_errors + (t:get("wrong") or 0)
    end
  end
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"socket_errors":%d,"status_errors":%d,' ..
    '"p50_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, status_errors,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end

-- wrk script for loadtest/run: GET by default, or BENCH_METHOD=POST with a body of
-- BENCH_BODY_BYTES bytes (1 KiB). done() prints one JSON line the runner parses: requests,
-- duration (us), socket errors, non-2xx/3xx answers and latency percentiles (us).
local method = os.getenv("BENCH_METHOD") or "GET"
local size = tonumber(os.getenv("BENCH_BODY_BYTES") or "1024")

wrk.method = method
if method ~= "GET" then
  wrk.body = string.rep("x", size)
  wrk.headers["Content-Type"] = "application/octet-stream"
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"socket_errors":%d,"status_errors":%d,' ..
    '"p50_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
